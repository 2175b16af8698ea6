"""Jobs of the tensile-strain MD flow (composed by :mod:`gptff_flows.flows.tensile`).

* :func:`tensile_step_job` — strain the reference cell, run NVT MD (ASE Nosé–Hoover chain) with
  GPTFF, analyse snapshots (a-CNA fractions, broadened XRD), return a
  :class:`~gptff_flows.schemas.tensile.TensileStepDocument`.
* :func:`tensile_summary_job` — rows per strain, the fcc onset, PNG plots, the summary.

Units: lengths Å, time step fs, temperature K, stress GPa (tensile positive, converted from
ASE's eV/Å³ with ``ase.units.GPa``), 2θ degrees.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
from ase import Atoms, units
from ase.md.velocitydistribution import Stationary, thermalize_momenta
from jobflow import CURRENT_JOB, job
from pymatgen.core import Structure
from pymatgen.io.ase import AseAtomsAdaptor

from gptff_flows.analysis.md_verdict import check_temperature
from gptff_flows.analysis.plotting import plot_tensile
from gptff_flows.analysis.stacking import LABELS, classify, fractions
from gptff_flows.analysis.xrd import broadened_average, strongest_peak
from gptff_flows.jobs.md import DYNAMICS
from gptff_flows.options import GPTFFOptions
from gptff_flows.schemas.base import GPTFFProvenance, formula_fields
from gptff_flows.schemas.tensile import (
    FCC_ONSET,
    TensileRow,
    TensileStepDocument,
    TensileSummaryDocument,
)

logger = logging.getLogger(__name__)


def strained_cell(reference: np.ndarray, strain: float, axis: int, poisson: float) -> np.ndarray:
    """Cell (rows, Å) with lattice vector ``axis`` of ``reference`` scaled by (1 + strain) and
    the two others by (1 + strain)^(−poisson); for an orthogonal cell this is uniaxial tension
    with lateral contraction."""
    factors = np.full(3, (1 + strain) ** (-poisson))
    factors[axis] = 1 + strain
    return np.asarray(reference, dtype=float) * factors[:, None]


def _structure_with_velocities(atoms: Atoms) -> Structure:
    """``atoms`` as a Structure carrying site property ``velocities`` (ASE's internal unit)."""
    plain = Atoms(atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=True)
    structure = AseAtomsAdaptor.get_structure(plain)
    structure.add_site_property("velocities", atoms.get_velocities().tolist())
    return structure


@job
def tensile_step_job(structure: Structure, strain: float, settings: dict) -> TensileStepDocument:
    """NVT MD of ``structure`` at engineering ``strain`` of the reference cell, then analysis.

    The cell is :func:`strained_cell` of ``settings["reference_cell"]`` (so strains never
    compound); positions are scaled affinely into it. Velocities come from the site property
    ``velocities`` (ASE's internal unit); a structure without them gets Maxwell–Boltzmann
    velocities (``seed``) and first runs ``initial_equilibration_steps``. Then
    ``equilibration_steps`` and ``steps_per_strain`` production steps; the stress along the
    axis and the temperature are averaged over production, and snapshots every
    ``snapshot_interval`` production steps are analysed.

    ``settings`` (from :class:`~gptff_flows.flows.tensile.TensileMDMaker`): ``reference_cell``
    (3×3, Å), ``axis``, ``poisson``, ``temperature`` K, ``time_step`` fs, ``tdamp`` fs,
    ``steps_per_strain``, ``equilibration_steps``, ``initial_equilibration_steps``,
    ``snapshot_interval``, ``seed``, ``model``, ``dtype``, ``smooth``, ``device``, ``skin`` Å,
    ``two_theta_range`` degrees, and ``calculator_kwargs`` when the Maker was given some.
    """
    atoms, warm = _strained_start(structure, strain, settings)
    atoms.calc = calculator = _calculator(settings)
    record = _run_md(atoms, settings, warm)
    document = _step_document(structure, strain, settings, atoms, record, warm, calculator)
    _log_step(document)
    return document


def _strained_start(structure: Structure, strain: float, settings: dict) -> tuple[Atoms, int]:
    """``structure`` scaled affinely into the cell strained by ``strain``, with its velocities
    (or Maxwell–Boltzmann ones at ``settings["temperature"]`` K drawn with ``settings["seed"]``),
    and the number of steps to run before production (more after fresh velocities)."""
    atoms = AseAtomsAdaptor.get_atoms(structure)
    cell = strained_cell(settings["reference_cell"], strain, settings["axis"], settings["poisson"])
    atoms.set_cell(cell, scale_atoms=True)
    velocities = structure.site_properties.get("velocities")
    warm = settings["equilibration_steps"]
    if velocities is None:
        rng = np.random.default_rng(settings["seed"])
        thermalize_momenta(atoms, temperature_K=settings["temperature"], rng=rng)
        Stationary(atoms)
        warm += settings["initial_equilibration_steps"]
    else:
        atoms.set_velocities(np.asarray(velocities, dtype=float))
    return atoms, warm


def _calculator(settings: dict):
    """The GPTFF calculator of the Maker's options, neighbour-list skin ``settings["skin"]`` Å."""
    options = GPTFFOptions(
        model=settings["model"],
        dtype=settings["dtype"],
        smooth=settings["smooth"],
        device=settings["device"],
        dispersion=settings.get("dispersion", False),
        calculator_kwargs={**settings.get("calculator_kwargs", {}), "skin": settings["skin"]},
    )
    return options.make_calculator()


class _MDRecord(NamedTuple):
    """What the MD of one strain recorded, per production step: the stress along the axis
    (GPa, tensile positive, kinetic term included), the kinetic temperature (K), a snapshot
    every ``snapshot_interval`` steps; and the wall time of the whole MD (s)."""

    stresses: list[float]
    temperatures: list[float]
    snapshots: list[Atoms]
    elapsed_s: float


def _run_md(atoms: Atoms, settings: dict, warm: int) -> _MDRecord:
    """NVT MD (``time_step`` and ``tdamp`` in fs, ``temperature`` K): ``warm`` steps, then
    ``steps_per_strain`` production steps that are recorded."""
    dynamics = DYNAMICS["nvt"](
        atoms,
        timestep=settings["time_step"] * units.fs,
        temperature_K=settings["temperature"],
        tdamp=settings["tdamp"] * units.fs,
    )
    axis_vector = atoms.cell[settings["axis"]]
    direction = axis_vector / np.linalg.norm(axis_vector)
    interval = settings["snapshot_interval"]
    record = _MDRecord([], [], [], 0.0)

    def observe():
        done = dynamics.nsteps - warm
        if done <= 0:  # ASE calls observers once before the first step of run()
            return
        stress = atoms.get_stress(voigt=False, include_ideal_gas=True)
        record.stresses.append(direction @ stress @ direction / units.GPa)
        record.temperatures.append(atoms.get_temperature())
        if done % interval == 0:
            record.snapshots.append(atoms.copy())

    start = time.perf_counter()
    dynamics.run(warm)
    dynamics.attach(observe, interval=1)
    dynamics.run(settings["steps_per_strain"])
    return record._replace(elapsed_s=time.perf_counter() - start)


def _snapshot_analysis(snapshots: list[Atoms], two_theta_range: list[float]) -> dict:
    """Fields of :class:`TensileStepDocument` from the snapshots: a-CNA fractions (mean and
    last), the broadened Cu Kα₁ XRD curve averaged over them (2θ degrees in
    ``two_theta_range``, intensity max 100) and its strongest peak near 38°."""
    per_snapshot = [fractions(classify(snapshot)) for snapshot in snapshots]
    mean_fractions = {key: float(np.mean([f[key] for f in per_snapshot])) for key in LABELS}
    grid, intensity = broadened_average(snapshots, tuple(two_theta_range))
    return dict(
        fractions=mean_fractions,
        fractions_last=per_snapshot[-1],
        n_snapshots=len(snapshots),
        xrd_two_theta=grid.round(4).tolist(),
        xrd_intensity=intensity.round(4).tolist(),
        xrd_peak=strongest_peak(grid, intensity),
    )


def _step_document(
    structure: Structure,
    strain: float,
    settings: dict,
    atoms: Atoms,
    record: _MDRecord,
    warm: int,
    calculator,
) -> TensileStepDocument:
    """The document of one strain from its MD ``record`` (``warm`` steps before production):
    means over production, the temperature verdict, the snapshots' analysis, the final state
    of ``atoms`` and the provenance of ``calculator``."""
    temperature, production = settings["temperature"], settings["steps_per_strain"]
    check = check_temperature(
        temperature,
        record.temperatures,
        len(atoms),
        production * settings["time_step"],
        correlation_fs=settings["tdamp"],
    )
    return TensileStepDocument(
        **formula_fields(structure),
        strain=float(strain),
        axis=settings["axis"],
        cell_lengths=[float(x) for x in atoms.cell.lengths()],
        temperature=float(temperature),
        mean_temperature=check.mean,
        temperature_check=check,
        flags=[] if check.reached else ["temperature_not_reached"],
        stress=float(np.mean(record.stresses)),
        stress_std=float(np.std(record.stresses)),
        **_snapshot_analysis(record.snapshots, settings["two_theta_range"]),
        structure=_structure_with_velocities(atoms),
        time_step=settings["time_step"],
        equilibration_steps=warm,
        production_steps=production,
        snapshot_interval=settings["snapshot_interval"],
        elapsed_s=record.elapsed_s,
        ms_per_step=1e3 * record.elapsed_s / (warm + production),
        gptff=GPTFFProvenance.from_calculator(calculator, "md", settings["model"]),
    )


def _log_step(document: TensileStepDocument) -> None:
    """One log line per strain (the demo script's progress bar counts these)."""
    fractions_percent = {key: 100 * value for key, value in document.fractions.items()}
    logger.info(
        "strain %.3f: σ = %.2f ± %.2f GPa, T = %.0f K, fcc %.1f %%, hcp %.1f %%, other %.1f %%",
        document.strain,
        document.stress,
        document.stress_std,
        document.mean_temperature,
        fractions_percent["fcc"],
        fractions_percent["hcp"],
        fractions_percent["other"],
    )


# ---------------------------------------------------------------------- summary


@job
def tensile_summary_job(
    step_outputs: list, settings: dict, plot_dir: str | None = None
) -> TensileSummaryDocument:
    """Rows per strain, the strain at which fcc first exceeds 10 %, plots (PNG in
    ``plot_dir`` when given), and the summary document."""
    docs = sorted(
        (TensileStepDocument.model_validate(d) for d in step_outputs), key=lambda d: d.strain
    )
    rows = [
        TensileRow(
            strain=d.strain,
            stress=d.stress,
            stress_std=d.stress_std,
            mean_temperature=d.mean_temperature,
            xrd_peak=d.xrd_peak,
            cell_lengths=d.cell_lengths,
            flags=d.flags,
            **d.fractions,
        )
        for d in docs
    ]
    onset = next((row.strain for row in rows if row.fcc > FCC_ONSET), None)
    plots = {}
    if plot_dir is not None:
        uuid = CURRENT_JOB.job.uuid[:8] if CURRENT_JOB.job is not None else "local"
        stem = Path(plot_dir) / f"tensile_{docs[0].formula_pretty}_{docs[0].nsites}_{uuid}"
        plots = plot_tensile(docs, rows, stem)
    return TensileSummaryDocument(
        formula_pretty=docs[0].formula_pretty,
        chemsys=docs[0].chemsys,
        nsites=docs[0].nsites,
        temperature=docs[0].temperature,
        rows=rows,
        fcc_onset_strain=onset,
        plots=plots,
        flags=sorted({flag for row in rows for flag in row.flags}),
        settings=settings,
        gptff=docs[0].gptff.model_copy(update={"job_type": "tensile"}),
    )
