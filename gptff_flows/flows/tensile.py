"""Uniaxial tension with NVT MD at each strain: the paper's hcp → fcc transition of Ti.

The GPTFF paper (Xie et al., Sci. Bull. 69 (2024) 3525) strains ~1,000-atom hcp Ti along
[10-10] and runs MD near 100 K at each strain; fcc appears (an XRD peak near 38° 2θ).
:class:`TensileMDMaker` builds that as a flow:

1. one :func:`~gptff_flows.jobs.tensile.tensile_step_job` per strain 0, ``strain_step``, …,
   ``max_strain``, chained: each starts from the previous job's final structure and velocities,
   strains the *reference* cell (the one given to ``make``) so strains never compound, and runs
   NVT MD; the first (ε = 0) draws Maxwell–Boltzmann velocities and equilibrates first;
2. :func:`~gptff_flows.jobs.tensile.tensile_summary_job` — fractions, stress and XRD per strain,
   the fcc onset strain, plots.

:func:`oriented_hcp_cell` builds the orthohexagonal hcp cell whose b vector is along <10-10>.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
from ase.build import bulk
from jobflow import Flow, Maker
from pymatgen.core import Structure
from pymatgen.io.ase import AseAtomsAdaptor

from gptff_core.errors import GPTFFInputError
from gptff_flows.jobs.force_field import require_periodic
from gptff_flows.jobs.tensile import tensile_step_job, tensile_summary_job
from gptff_flows.options import GPTFFOptions, absolute_dir, require_int, require_number

TI_A, TI_C = 2.951, 4.686
"""Å, α-Ti lattice constants at room temperature (R. M. Wood, Proc. Phys. Soc. 80 (1962) 783:
a = 2.9508 Å, c = 4.6855 Å; the CRC Handbook lists the same)."""


def oriented_hcp_cell(
    element: str = "Ti",
    a: float = TI_A,
    c: float = TI_C,
    repeat: tuple[int, int, int] = (4, 2, 3),
) -> Structure:
    """Orthohexagonal hcp supercell (4 atoms per cell, ``repeat`` times) as a Structure.

    Cell vectors: a along [2-1-10] (length ``a``), b along [01-10], a <10-10> direction (length
    √3·``a``), c along [0001] (length ``c``); lengths in Å. Straining b is tension along <10-10>.
    """
    if not (a > 0 and c > 0):
        raise GPTFFInputError(f"lattice constants a, c must be > 0 Å, got {a}, {c}")
    if len(repeat) != 3 or not all(isinstance(n, int) and n >= 1 for n in repeat):
        raise GPTFFInputError(f"repeat must be three integers ≥ 1, got {repeat!r}")
    atoms = bulk(element, "hcp", a=a, c=c, orthorhombic=True) * tuple(repeat)
    return AseAtomsAdaptor.get_structure(atoms)


@dataclass
class TensileMDMaker(GPTFFOptions, Maker):
    """Strain a crystal step by step along one lattice vector, NVT MD at each strain.

    ``model``, ``dtype``, ``device``, ``dispersion`` (D3(BJ) added to the MD forces and stress)
    and ``calculator_kwargs`` are :class:`~gptff_flows.options.GPTFFOptions`'; ``smooth`` is
    off by default (below).

    Args:
        name: flow name.
        temperature: K, thermostat target.
        strain_step: engineering strain between steps (0.02 = 2 %).
        max_strain: largest engineering strain (included when a multiple of ``strain_step``).
        axis: strained lattice vector: 0 a, 1 b (for :func:`oriented_hcp_cell` b ∥ <10-10>), 2 c.
        poisson: Poisson ratio ν; the two other vectors are scaled by (1 + ε)^(−ν) (0 keeps them
            fixed). 0.32 is the handbook value of polycrystalline α-Ti (ASM Handbook / CRC:
            0.32–0.34), a stand-in for the lateral relaxation an NPT barostat would give.
        time_step: fs.
        steps_per_strain: production MD steps per strain (stress, temperature, snapshots).
        equilibration_steps: steps run after each strain is applied, before production.
        initial_equilibration_steps: extra steps at ε = 0 after drawing velocities.
        snapshot_interval: production steps between analysed snapshots (a-CNA, XRD).
        seed: seed of the initial Maxwell–Boltzmann velocities.
        smooth: C² cutoff envelopes. Off by default, the published network: the envelopes
            change hcp Ti's relaxed c/a from 1.593 (published network; experiment 1.588) to
            1.693 (measured with v2, float64).
        skin: Å, neighbour-list skin of the calculator (not in ``calculator_kwargs``).
        tdamp: fs, Nosé–Hoover time constant (None: 100 time steps).
        two_theta_range: degrees, XRD range (Cu Kα₁).
        plot_dir: directory of the PNG plots (None: no plots); a relative path is resolved
            against the working directory when the Maker is built.
    """

    name: str = "GPTFF tensile MD"
    temperature: float = 100.0
    strain_step: float = 0.02
    max_strain: float = 0.20
    axis: int = 1
    poisson: float = 0.32
    time_step: float = 2.0
    steps_per_strain: int = 200
    equilibration_steps: int = 100
    initial_equilibration_steps: int = 300
    snapshot_interval: int = 50
    seed: int = 0
    smooth: bool | None = field(default=False, kw_only=True)
    supports_dispersion: ClassVar[bool] = True
    skin: float = 1.0
    tdamp: float | None = None
    two_theta_range: tuple[float, float] = (30.0, 50.0)
    plot_dir: str | None = None

    def __post_init__(self) -> None:
        self.plot_dir = absolute_dir(self.plot_dir)

    def strains(self) -> list[float]:
        """Engineering strains of the steps: 0, strain_step, …, ≤ max_strain."""
        count = math.floor(self.max_strain / self.strain_step + 1e-9)
        return [round(k * self.strain_step, 10) for k in range(count + 1)]

    def _validate(self, structure: Structure) -> None:
        """Refuse a structure or a field the flow cannot run (the message names the field)."""
        require_periodic(structure)
        if not structure.is_ordered:
            raise GPTFFInputError("structure must be ordered (one element per site)")
        self._check_strains()
        self._check_md()
        self.check_options()
        self.check_calculator_kwargs(reserved=("skin",))
        low, high = self.two_theta_range
        if not 0 <= low < high <= 180:
            raise GPTFFInputError(
                f"two_theta_range must be 0 ≤ low < high ≤ 180 degrees, got {self.two_theta_range}"
            )

    def _check_strains(self) -> None:
        """Refuse strains (engineering), an axis or a Poisson ratio out of range."""
        require_number("strain_step", self.strain_step, "(engineering strain, 0.02 = 2 %)")
        require_number("max_strain", self.max_strain, "(engineering strain)")
        if self.max_strain < self.strain_step or self.max_strain > 0.5:
            raise GPTFFInputError(
                f"max_strain must be between strain_step ({self.strain_step}) and 0.5 "
                f"(engineering strain), got {self.max_strain}"
            )
        if self.axis not in (0, 1, 2):
            raise GPTFFInputError(f"axis must be 0 (a), 1 (b) or 2 (c), got {self.axis!r}")
        if not (isinstance(self.poisson, int | float) and 0 <= self.poisson < 0.5):
            raise GPTFFInputError(
                f"poisson must be in [0, 0.5) (dimensionless), got {self.poisson}"
            )

    def _check_md(self) -> None:
        """Refuse a temperature (K), time step or tdamp (fs), step count or skin (Å) out of
        range."""
        require_number("temperature", self.temperature, "(K)")
        require_number("time_step", self.time_step, "(fs)")
        if self.time_step > 10:
            raise GPTFFInputError(f"time_step is in fs; {self.time_step} fs is far too long")
        require_int("steps_per_strain", self.steps_per_strain)
        require_int("snapshot_interval", self.snapshot_interval)
        require_int("equilibration_steps", self.equilibration_steps, minimum=0)
        require_int("initial_equilibration_steps", self.initial_equilibration_steps, minimum=0)
        if self.snapshot_interval > self.steps_per_strain:
            raise GPTFFInputError(
                f"snapshot_interval ({self.snapshot_interval} steps) must be ≤ steps_per_strain "
                f"({self.steps_per_strain}) so each strain has a snapshot"
            )
        if self.tdamp is not None:
            require_number("tdamp", self.tdamp, "(fs)")
        require_number("skin", self.skin, "Å", inclusive=True)

    def settings(self, structure: Structure) -> dict:
        """What every step job receives (K, fs, Å, degrees); JSON-serialisable."""
        settings = dict(
            reference_cell=np.asarray(structure.lattice.matrix).tolist(),
            axis=self.axis,
            poisson=float(self.poisson),
            temperature=float(self.temperature),
            strains=self.strains(),
            time_step=float(self.time_step),
            tdamp=float(self.tdamp if self.tdamp is not None else 100 * self.time_step),
            steps_per_strain=self.steps_per_strain,
            equilibration_steps=self.equilibration_steps,
            initial_equilibration_steps=self.initial_equilibration_steps,
            snapshot_interval=self.snapshot_interval,
            seed=self.seed,
            model=str(self.model),
            dtype=self.dtype,
            smooth=self.smooth,
            device=self.device,
            skin=float(self.skin),
            two_theta_range=[float(x) for x in self.two_theta_range],
        )
        if self.calculator_kwargs:  # only then, so the settings of other runs stay as they were
            settings["calculator_kwargs"] = dict(self.calculator_kwargs)
        if self.dispersion:  # likewise
            settings["dispersion"] = True
        return settings

    def make(self, structure: Structure) -> Flow:
        """The flow for ``structure`` (the reference, unstrained cell; any velocities dropped).
        Its output is a :class:`~gptff_flows.schemas.tensile.TensileSummaryDocument`."""
        self._validate(structure)
        start = structure.copy()
        if "velocities" in start.site_properties:
            start.remove_site_property("velocities")
        settings = self.settings(start)
        steps, current = [], start
        for strain in settings["strains"]:
            step = tensile_step_job(current, strain, settings)
            step.name = f"{self.name} ε={100 * strain:g}%"
            step.update_metadata({"gptff_role": "tensile_step", "strain": strain})
            steps.append(step)
            current = step.output.structure
        summary = tensile_summary_job([s.output for s in steps], settings, self.plot_dir)
        summary.name = f"{self.name} summary"
        summary.update_metadata({"gptff_role": "tensile_summary"})
        flow = Flow([*steps, summary], output=summary.output, name=self.name)
        flow.update_metadata({"flow_name": self.name})
        return flow
