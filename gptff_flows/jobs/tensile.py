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

import numpy as np
from ase import Atoms, units
from ase.md.velocitydistribution import Stationary, thermalize_momenta
from jobflow import CURRENT_JOB, job
from pymatgen.core import Structure
from pymatgen.io.ase import AseAtomsAdaptor

from gptff_flows.analysis.md_verdict import check_temperature
from gptff_flows.analysis.stacking import LABELS, classify, fractions
from gptff_flows.analysis.xrd import broadened_average, strongest_peak
from gptff_flows.jobs.md import DYNAMICS
from gptff_flows.schemas.base import GPTFFProvenance
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
    ``two_theta_range`` degrees.
    """
    from gptff_core.calculator import GPTFFCalculator

    axis, temperature = settings["axis"], settings["temperature"]
    atoms = AseAtomsAdaptor.get_atoms(structure)
    cell = strained_cell(settings["reference_cell"], strain, axis, settings["poisson"])
    atoms.set_cell(cell, scale_atoms=True)
    velocities = structure.site_properties.get("velocities")
    warm = settings["equilibration_steps"]
    if velocities is None:
        rng = np.random.default_rng(settings["seed"])
        thermalize_momenta(atoms, temperature_K=temperature, rng=rng)
        Stationary(atoms)
        warm += settings["initial_equilibration_steps"]
    else:
        atoms.set_velocities(np.asarray(velocities, dtype=float))
    calculator = GPTFFCalculator(
        model=settings["model"],
        dtype=settings["dtype"],
        smooth=settings["smooth"],
        device=settings["device"],
        skin=settings["skin"],
    )
    atoms.calc = calculator
    dynamics = DYNAMICS["nvt"](
        atoms,
        timestep=settings["time_step"] * units.fs,
        temperature_K=temperature,
        tdamp=settings["tdamp"] * units.fs,
    )
    direction = cell[axis] / np.linalg.norm(cell[axis])
    interval, production = settings["snapshot_interval"], settings["steps_per_strain"]
    stresses, temperatures, snapshots = [], [], []

    def record():
        done = dynamics.nsteps - warm
        if done <= 0:  # ASE calls observers once before the first step of run()
            return
        stress = atoms.get_stress(voigt=False, include_ideal_gas=True)
        stresses.append(direction @ stress @ direction / units.GPa)
        temperatures.append(atoms.get_temperature())
        if done % interval == 0:
            snapshots.append(atoms.copy())

    start = time.perf_counter()
    dynamics.run(warm)
    dynamics.attach(record, interval=1)
    dynamics.run(production)
    elapsed = time.perf_counter() - start

    check = check_temperature(
        temperature,
        temperatures,
        len(atoms),
        production * settings["time_step"],
        correlation_fs=settings["tdamp"],
    )
    per_snapshot = [fractions(classify(snapshot)) for snapshot in snapshots]
    mean_fractions = {key: float(np.mean([f[key] for f in per_snapshot])) for key in LABELS}
    grid, intensity = broadened_average(snapshots, tuple(settings["two_theta_range"]))
    document = TensileStepDocument(
        formula_pretty=structure.composition.reduced_formula,
        chemsys=structure.composition.chemical_system,
        nsites=len(structure),
        strain=float(strain),
        axis=axis,
        cell_lengths=[float(x) for x in atoms.cell.lengths()],
        temperature=float(temperature),
        mean_temperature=check.mean,
        temperature_check=check,
        flags=[] if check.reached else ["temperature_not_reached"],
        stress=float(np.mean(stresses)),
        stress_std=float(np.std(stresses)),
        fractions=mean_fractions,
        fractions_last=per_snapshot[-1],
        n_snapshots=len(snapshots),
        xrd_two_theta=grid.round(4).tolist(),
        xrd_intensity=intensity.round(4).tolist(),
        xrd_peak=strongest_peak(grid, intensity),
        structure=_structure_with_velocities(atoms),
        time_step=settings["time_step"],
        equilibration_steps=warm,
        production_steps=production,
        snapshot_interval=interval,
        elapsed_s=elapsed,
        ms_per_step=1e3 * elapsed / (warm + production),
        gptff=GPTFFProvenance.from_calculator(calculator, "md", settings["model"]),
    )
    logger.info(
        "strain %.3f: σ = %.2f ± %.2f GPa, T = %.0f K, fcc %.1f %%, hcp %.1f %%, other %.1f %%",
        document.strain,
        document.stress,
        document.stress_std,
        document.mean_temperature,
        100 * mean_fractions["fcc"],
        100 * mean_fractions["hcp"],
        100 * mean_fractions["other"],
    )
    return document


# ---------------------------------------------------------------------- summary


def _plots(docs: list[TensileStepDocument], rows: list[TensileRow], stem: Path) -> dict[str, str]:
    """PNG plots next to ``stem``: fractions vs strain, stress–strain, stacked XRD."""
    from matplotlib.figure import Figure

    strain = np.array([100 * row.strain for row in rows])
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = {}

    fig = Figure(figsize=(5.5, 3.5))
    ax = fig.subplots()
    for key in ("hcp", "fcc", "bcc", "other"):
        ax.plot(strain, [100 * getattr(row, key) for row in rows], "o-", label=key)
    ax.set(xlabel="tensile strain (%)", ylabel="atoms (%)", ylim=(-2, 102))
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    paths["fractions"] = str(stem.with_name(f"{stem.name}_fractions.png"))
    fig.savefig(paths["fractions"], dpi=150)

    fig = Figure(figsize=(4.5, 3.5))
    ax = fig.subplots()
    ax.errorbar(strain, [r.stress for r in rows], yerr=[r.stress_std for r in rows], fmt="o-")
    ax.set(xlabel="tensile strain (%)", ylabel="σ along the axis (GPa)")
    fig.tight_layout()
    paths["stress_strain"] = str(stem.with_name(f"{stem.name}_stress_strain.png"))
    fig.savefig(paths["stress_strain"], dpi=150)

    fig = Figure(figsize=(4.5, 1.2 + 0.45 * len(docs)))
    ax = fig.subplots()
    for k, doc in enumerate(docs):
        offset = 110 * k
        ax.plot(doc.xrd_two_theta, np.asarray(doc.xrd_intensity) + offset, lw=1)
        ax.text(doc.xrd_two_theta[-1], offset + 10, f"{100 * doc.strain:g} %", ha="right")
    ax.axvline(38.0, color="grey", ls="--", lw=1)
    ax.set(xlabel="2θ (degrees, Cu Kα₁)", ylabel="intensity (offset by strain)", yticks=[])
    fig.tight_layout()
    paths["xrd"] = str(stem.with_name(f"{stem.name}_xrd.png"))
    fig.savefig(paths["xrd"], dpi=150)
    return paths


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
        plots = _plots(docs, rows, stem)
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
