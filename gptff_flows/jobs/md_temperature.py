"""The document of one temperature of the fine-tune-then-MD flow, from the frames its MD job
recorded: the mean temperature checked against the target, the NPT volume check, the drift of
the conserved energy, and the diffusion analysis of the production frames.

Units: time fs, temperature K, pressure GPa, volume Å³, energies eV, D cm²/s, σ mS/cm.
"""

from __future__ import annotations

import numpy as np
from pymatgen.core import Structure
from pymatgen.core.trajectory import Trajectory

from gptff_flows.analysis.diffusion import DiffusionResult, analyze_diffusion
from gptff_flows.analysis.md_verdict import MAX_VOLUME_CHANGE, TemperatureCheck, check_temperature
from gptff_flows.jobs.md import DYNAMICS, conserved_drift
from gptff_flows.schemas.base import GPTFFProvenance, formula_fields
from gptff_flows.schemas.finetune_md import MDTemperatureDocument
from gptff_flows.schemas.md_trajectory import TRAJECTORY_DOCUMENT_VERSION


def _temperature_verdict(
    cell: Structure,
    temperature: float,
    settings: dict,
    temps: np.ndarray,
    cells: np.ndarray,
    time_fs: np.ndarray,
) -> tuple[TemperatureCheck, list[str], float]:
    """(mean T against ``temperature`` K, flags, mean volume Å³) of the production frames:
    ``temperature_not_reached``, and ``volume_unstable`` for an NPT run whose mean volume moved
    more than :data:`~gptff_flows.analysis.md_verdict.MAX_VOLUME_CHANGE` from ``cell``'s."""
    check = check_temperature(
        temperature, temps, len(cell), float(np.ptp(time_fs)), correlation_fs=settings["tdamp"]
    )
    flags = [] if check.reached else ["temperature_not_reached"]
    mean_volume = float(np.abs(np.linalg.det(cells)).mean()) if len(cells) else cell.volume
    if settings["ensemble"] == "npt" and abs(mean_volume / cell.volume - 1) > MAX_VOLUME_CHANGE:
        flags.append("volume_unstable")
    return check, flags, mean_volume


def _diffusion(
    cell: Structure,
    temperature: float,
    settings: dict,
    positions: np.ndarray,
    cells: np.ndarray,
    flags: list[str],
) -> tuple[DiffusionResult | None, list[str]]:
    """(diffusion analysis of the production ``positions`` Å with their ``cells`` Å, flags):
    the run's ``flags`` join the diffusion's (the Arrhenius fit leaves such temperatures out);
    no analysis and ``no_production_frames`` with fewer than 3 frames."""
    if len(positions) < 3:
        return None, [*flags, "no_production_frames"]
    frac = np.einsum("fai,fij->faj", positions, np.linalg.inv(cells))
    diffusion = analyze_diffusion(
        cell,
        frac,
        settings["species"],
        temperature,
        settings["time_step"] * settings["traj_interval"],
        lattices=cells,
        charge=settings["charge"],
        n_blocks=settings["n_blocks"],
    )
    diffusion.flags += flags
    return diffusion, list(diffusion.flags)


def _run_fields(cell: Structure, temperature: float, settings: dict) -> dict:
    """The fields of an :class:`MDTemperatureDocument` that restate the run's settings."""
    ensemble = settings["ensemble"]
    dynamics = DYNAMICS[ensemble].__name__
    return dict(
        **formula_fields(cell),
        temperature=float(temperature),
        ensemble=ensemble,
        dynamics=dynamics,
        pressure=settings["pressure"] if ensemble == "npt" else None,
        time_step=settings["time_step"],
        n_steps=settings["n_steps"],
        equilibration_steps=settings["equilibration_steps"],
        traj_interval=settings["traj_interval"],
        supercell=[int(n) for n in settings["supercell"]],
        seed=settings["seed"],
        conserved_quantity="total energy" if ensemble == "nve" else f"{dynamics} conserved energy",
    )


def temperature_document(
    cell: Structure,
    temperature: float,
    settings: dict,
    arrays: dict[str, np.ndarray],
    elapsed: float,
    provenance: GPTFFProvenance,
    trajectory: Trajectory | None = None,
) -> MDTemperatureDocument:
    """Analyse the production frames of ``arrays`` (those of
    :func:`~gptff_flows.schemas.md_trajectory.load_trajectory`): mean T checked against
    ``temperature`` (K), drift, diffusion; the document, holding ``trajectory``."""
    production = arrays["steps"] >= settings["equilibration_steps"]
    time_fs, temps = arrays["time_fs"][production], arrays["temperature"][production]
    cells, positions = arrays["cells"][production], arrays["positions"][production]
    check, flags, mean_volume = _temperature_verdict(
        cell, temperature, settings, temps, cells, time_fs
    )
    diffusion, flags = _diffusion(cell, temperature, settings, positions, cells, flags)
    conserved = arrays["conserved_energy"][production]
    drift, deviation = conserved_drift(time_fs, conserved, len(cell))
    total_steps = settings["equilibration_steps"] + settings["n_steps"]
    return MDTemperatureDocument(
        **_run_fields(cell, temperature, settings),
        mean_temperature=check.mean,
        std_temperature=float(temps.std()),
        temperature_check=check,
        mean_pressure=float(arrays["pressure"][production].mean()),
        mean_volume=mean_volume,
        conserved_drift=drift,
        conserved_max_deviation=deviation,
        diffusion=diffusion,
        flags=flags,
        elapsed_s=elapsed,
        ms_per_step=1e3 * elapsed / max(total_steps, 1),
        trajectory=trajectory,
        gptff=provenance,
        document_version=TRAJECTORY_DOCUMENT_VERSION,
    )
