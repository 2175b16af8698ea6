"""Documents of the tensile-strain MD flow (:mod:`gptff_flows.flows.tensile`).

* :class:`TensileStepDocument` — one strain: cell (Å), stress along the strain axis (GPa, tensile
  positive), temperature (K), a-CNA structure fractions, averaged broadened XRD (Cu Kα₁, 2θ in
  degrees), the final structure with velocities, timing and provenance.
* :class:`TensileSummaryDocument` — every strain as a :class:`TensileRow`, plot paths, the strain
  at which fcc first exceeds 10 %, and the settings to reproduce the run.
"""

from __future__ import annotations

from pydantic import BaseModel, Field
from pymatgen.core import Structure

from gptff_flows.analysis.md_verdict import TemperatureCheck
from gptff_flows.schemas.base import GPTFFDocument

FCC_ONSET = 0.10
"""fcc fraction whose first crossing defines ``fcc_onset_strain``."""


class TensileStepDocument(GPTFFDocument):
    """NVT MD at one tensile strain and the analysis of its snapshots."""

    strain: float = Field(description="engineering strain along the axis, relative to the "
                                      "reference (unstrained) cell")  # fmt: skip
    axis: int = Field(description="strained lattice vector: 0 a, 1 b, 2 c")
    cell_lengths: list[float] = Field(description="Å, lengths of a, b, c during this step")
    temperature: float = Field(description="K, thermostat target")
    mean_temperature: float = Field(description="K, mean kinetic temperature of production")
    temperature_check: TemperatureCheck | None = Field(
        None,
        description="mean T against the target and its tolerance (K), see "
        "gptff_flows.analysis.md_verdict.check_temperature",
    )
    flags: list[str] = Field(
        default_factory=list,
        description="verdicts: 'temperature_not_reached' (the stress and fractions belong to "
        "another temperature); empty: none",
    )
    stress: float = Field(description="GPa, mean stress along the axis over production, kinetic "
                                      "term included, tensile positive")  # fmt: skip
    stress_std: float = Field(description="GPa, standard deviation of that stress")
    fractions: dict[str, float] = Field(
        description="a-CNA fractions fcc/hcp/bcc/other, mean over the snapshots"
    )
    fractions_last: dict[str, float] = Field(description="a-CNA fractions of the last snapshot")
    n_snapshots: int = Field(description="snapshots analysed (a-CNA and XRD)")
    xrd_two_theta: list[float] = Field(description="degrees, 2θ grid of the XRD curve")
    xrd_intensity: list[float] = Field(
        description="Gaussian-broadened Cu Kα₁ intensity averaged over the snapshots, max 100"
    )
    xrd_peak: float | None = Field(
        None, description="degrees, strongest peak of the curve in 37–39.5° (None: no peak)"
    )
    structure: Structure = Field(
        description="final snapshot; site property 'velocities' in ASE's internal unit "
        "Å/(Å·√(u/eV)) ≈ Å per 10.18 fs (× ase.units.fs gives Å/fs), as atomate2 reads it"
    )
    time_step: float = Field(description="fs")
    equilibration_steps: int = Field(description="steps run before production in this job")
    production_steps: int = Field(description="production steps (stress, T, snapshots)")
    snapshot_interval: int = Field(description="production steps between snapshots")
    elapsed_s: float = Field(description="s, wall time of the MD")
    ms_per_step: float = Field(description="ms per MD step")


class TensileRow(BaseModel):
    """One strain in the summary."""

    strain: float = Field(description="engineering strain along the axis")
    stress: float = Field(description="GPa, mean stress along the axis, tensile positive")
    stress_std: float = Field(description="GPa")
    mean_temperature: float = Field(description="K")
    fcc: float = Field(description="a-CNA fcc fraction, mean over snapshots")
    hcp: float = Field(description="a-CNA hcp fraction, mean over snapshots")
    bcc: float = Field(description="a-CNA bcc fraction, mean over snapshots")
    other: float = Field(description="a-CNA other fraction, mean over snapshots")
    xrd_peak: float | None = Field(None, description="degrees, strongest peak in 37–39.5°")
    cell_lengths: list[float] = Field(description="Å, a, b, c")
    flags: list[str] = Field(default_factory=list, description="the step's verdicts")


class TensileSummaryDocument(GPTFFDocument):
    """Summary of a tensile-strain MD flow."""

    temperature: float = Field(description="K, thermostat target")
    rows: list[TensileRow] = Field(description="per strain, ascending")
    fcc_onset_strain: float | None = Field(
        None, description="first strain whose mean fcc fraction exceeds 10 % (None: never)"
    )
    plots: dict[str, str] = Field(
        default_factory=dict, description="'fractions', 'stress_strain', 'xrd': PNG paths"
    )
    flags: list[str] = Field(
        default_factory=list,
        description="verdicts of any strain (e.g. 'temperature_not_reached'); empty: none",
    )
    settings: dict = Field(
        description="Maker settings (K, fs, Å, degrees) and the reference cell (Å) to reproduce "
        "the run"
    )
