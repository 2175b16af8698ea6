"""Validation metrics people read, their files, and parity plots.

Errors are reported as MAE and RMSE of the energy per atom (meV/atom), of every force component
(meV/Å) and of the six independent stress components (GPa, ASE sign), over the frames (atoms)
that carry the label.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import units

from gptff_core.errors import ComputationError
from gptff_core.training.datasets import Frame

VOIGT = ([0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1])
"""Row and column indices of the Voigt components xx yy zz yz xz xy of a 3×3 tensor."""

METRIC_NAMES = (
    "energy_mae_meV_per_atom",
    "energy_rmse_meV_per_atom",
    "forces_mae_meV_per_A",
    "forces_rmse_meV_per_A",
    "stress_mae_GPa",
    "stress_rmse_GPa",
)


@dataclass
class FramePredictions:
    """Model predictions for a list of frames, in the frames' order.

    Attributes:
        energies: (frames,) eV.
        forces: one (n_atoms, 3) array per frame, eV/Å.
        stresses: one (3, 3) array per frame, eV/Å³ ASE sign (None where the cell has no volume
            or stress was not computed).
    """

    energies: np.ndarray
    forces: list[np.ndarray]
    stresses: list[np.ndarray | None]


def parity_pairs(
    frames: Sequence[Frame], predictions: FramePredictions
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(label, prediction) arrays per quantity in the reported units: energy meV/atom, forces
    meV/Å (components), stress GPa (Voigt components); only labelled frames."""
    energy_l, energy_p, force_l, force_p, stress_l, stress_p = [], [], [], [], [], []
    for k, frame in enumerate(frames):
        if frame.energy is not None:
            energy_l.append(frame.energy / frame.n_atoms * 1000.0)
            energy_p.append(predictions.energies[k] / frame.n_atoms * 1000.0)
        if frame.forces is not None:
            force_l.append(frame.forces.ravel() * 1000.0)
            force_p.append(predictions.forces[k].ravel() * 1000.0)
        if frame.stress is not None and predictions.stresses[k] is not None:
            stress_l.append(frame.stress[VOIGT] / units.GPa)
            stress_p.append(predictions.stresses[k][VOIGT] / units.GPa)

    def joined(parts: list) -> np.ndarray:
        return np.concatenate([np.atleast_1d(p) for p in parts]) if parts else np.zeros(0)

    return {
        "energy": (joined(energy_l), joined(energy_p)),
        "forces": (joined(force_l), joined(force_p)),
        "stress": (joined(stress_l), joined(stress_p)),
    }


def error_metrics(frames: Sequence[Frame], predictions: FramePredictions) -> dict[str, float]:
    """MAE and RMSE per quantity (keys :data:`METRIC_NAMES`; None where nothing is labelled)."""
    metrics = {}
    units_of = {"energy": "meV_per_atom", "forces": "meV_per_A", "stress": "GPa"}
    for name, (label, predicted) in parity_pairs(frames, predictions).items():
        error = predicted - label
        empty = error.size == 0
        metrics[f"{name}_mae_{units_of[name]}"] = None if empty else float(np.abs(error).mean())
        metrics[f"{name}_rmse_{units_of[name]}"] = (
            None if empty else float(np.sqrt((error**2).mean()))
        )
    return metrics


def summary_line(metrics: dict) -> str:
    """``E 12.3 meV/atom  F 45.6 meV/Å  S 0.123 GPa`` (MAEs; quantities without labels left out)."""
    parts = []
    for key, name, unit, digits in (
        ("energy_mae_meV_per_atom", "E", "meV/atom", 2),
        ("forces_mae_meV_per_A", "F", "meV/Å", 1),
        ("stress_mae_GPa", "S", "GPa", 3),
    ):
        if metrics.get(key) is not None:
            parts.append(f"{name} {metrics[key]:.{digits}f} {unit}")
    return "  ".join(parts) or "no labelled validation frames"


def write_history_csv(history: Sequence[dict], path: Path) -> None:
    """One row per epoch (epoch 0: after the reference refit, before any step)."""
    columns = ["epoch", "learning_rate", "train_loss", "seconds", "skipped_batches", *METRIC_NAMES]
    with Path(path).open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in history:
            writer.writerow({c: row.get(c) for c in columns})


def write_json(document: dict, path: Path) -> None:
    """Write ``document`` as strict JSON (a NaN or infinity is refused, never written)."""
    try:
        text = json.dumps(document, indent=2, default=_jsonable, allow_nan=False)
    except ValueError as error:
        raise ComputationError(
            f"{path}: a value is not finite (NaN or infinity), so it was not written ({error})"
        ) from None
    Path(path).write_text(text + "\n")


def _jsonable(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray | tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def parity_plots(
    frames: Sequence[Frame],
    before: FramePredictions | None,
    after: FramePredictions,
    out_dir: Path,
) -> list[Path]:
    """``parity_energy.png``, ``parity_forces.png``, ``parity_stress.png`` (quantities with labels):
    prediction against label, before (grey) and after fine-tuning, with the MAEs in the legend."""
    from matplotlib.figure import Figure

    titles = {
        "energy": "energy per atom (meV/atom)",
        "forces": "force components (meV/Å)",
        "stress": "stress components (GPa)",
    }
    after_pairs = parity_pairs(frames, after)
    before_pairs = parity_pairs(frames, before) if before is not None else {}
    written = []
    for name, (label, predicted) in after_pairs.items():
        if label.size == 0:
            continue
        figure = Figure(figsize=(4.5, 4.5), dpi=120)
        axis = figure.add_subplot()
        shown = [label, predicted]
        if name in before_pairs:
            old_label, old = before_pairs[name]
            mae = np.abs(old - old_label).mean()
            axis.scatter(old_label, old, s=4, c="0.7", label=f"before (MAE {mae:.3g})")
            shown.append(old)
        mae = np.abs(predicted - label).mean()
        axis.scatter(label, predicted, s=4, c="C0", label=f"after (MAE {mae:.3g})")
        low = min(float(a.min()) for a in shown)
        high = max(float(a.max()) for a in shown)
        axis.plot([low, high], [low, high], "k--", lw=0.8)
        axis.locator_params(nbins=5)
        axis.set_xlabel(f"label: {titles[name]}")
        axis.set_ylabel(f"GPTFF: {titles[name]}")
        axis.legend(loc="upper left", fontsize=8)
        figure.tight_layout()
        path = Path(out_dir) / f"parity_{name}.png"
        figure.savefig(path)
        written.append(path)
    return written
