"""What a training run writes and returns.

Files in ``out_dir``: ``best.pt`` and ``last.pt`` (project checkpoints whose metadata records the
base model, the data, the reference refit, the recipe and the metrics), ``training_state.pt``
(:mod:`~gptff_core.training.state`), ``metrics.csv`` (one row per epoch), ``metrics.json``
(before/after and history) and parity plots. A run that diverges stops with a
:class:`ComputationError` that names the files of the last good epoch, which are kept.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from gptff_core.checkpoint import non_finite_tensors
from gptff_core.errors import ComputationError
from gptff_core.model import GPTFF
from gptff_core.training.frames import Frame, frame_names
from gptff_core.training.metrics import FramePredictions
from gptff_core.training.recipe import Recipe
from gptff_core.training.state import EpochRecord, RunState

STATE_FILE = "training_state.pt"

EPOCH_FILES = ("best.pt", "last.pt", STATE_FILE, "metrics.csv")
"""The files written after every epoch (``best.pt`` only when the epoch scored best)."""


@dataclass
class TrainingResult:
    """What a run produced.

    Attributes:
        before: validation metrics of the model as given (before the refit and any step).
        after: validation metrics of the best checkpoint.
        history: one record per epoch (epoch 0: after the reference refit).
        best_checkpoint, last_checkpoint: paths of ``best.pt`` and ``last.pt``.
        last_predictions: the last epoch's validation predictions (eV, eV/Å, eV/Å³).
        reference_refit: the refit record stored in the checkpoints.
        best_epoch: the epoch of ``best.pt`` (0: the reference refit alone scored best).
        stopped_early: whether early stopping ended the run.
        files: every file written.
        outliers: the screening of the labels (rule, frames dropped; see
            :mod:`~gptff_core.training.outliers`).
        n_train, n_valid: the frames trained and validated on (outliers dropped).
    """

    before: dict
    after: dict
    history: list[EpochRecord]
    best_checkpoint: Path
    last_checkpoint: Path
    last_predictions: FramePredictions
    reference_refit: dict
    best_epoch: int
    stopped_early: bool = False
    files: list[Path] = field(default_factory=list)
    outliers: dict = field(default_factory=dict)
    n_train: int = 0
    n_valid: int = 0


def checkpoint_metadata(
    kind: str, record: EpochRecord, state: RunState, base_model: dict, recipe: Recipe
) -> dict:
    """The metadata of ``best.pt`` or ``last.pt`` (``kind``) written after epoch ``record``."""
    return dict(
        trained_by="gptff_core.training",
        kind=kind,
        epoch=record.epoch,
        base_model=base_model,
        data=state.data_record(),
        reference_refit=state.refit,
        recipe=recipe.to_dict(),
        metrics=dict(before=state.before, valid=record.metrics),
    )


def run_summary(
    state: RunState, after: dict, stopped_early: bool, out: Path, base_model: dict, recipe: Recipe
) -> dict:
    """The content of ``metrics.json``: metrics before and after (best epoch), the checkpoints,
    the reference refit, the provenance of the model and the data, the recipe and the history."""
    return dict(
        before=state.before,
        after=after,
        best_epoch=state.best_epoch,
        epochs_run=state.epoch,
        stopped_early=stopped_early,
        checkpoint=str(out / "best.pt"),
        last_checkpoint=str(out / "last.pt"),
        reference_refit=state.refit,
        base_model=base_model,
        data=state.data_record(),
        recipe=recipe.to_dict(),
        history=[r.as_row() for r in state.history],
    )


def training_result(
    state: RunState,
    after: dict,
    out: Path,
    last_predictions: FramePredictions,
    stopped_early: bool,
    files: list[Path],
) -> TrainingResult:
    """The :class:`TrainingResult` of a finished run whose files are in ``out``."""
    return TrainingResult(
        before=state.before,
        after=after,
        history=list(state.history),
        best_checkpoint=out / "best.pt",
        last_checkpoint=out / "last.pt",
        last_predictions=last_predictions,
        reference_refit=state.refit,
        best_epoch=state.best_epoch,
        stopped_early=stopped_early,
        files=files,
        outliers=state.screening or {},
        n_train=state.fingerprints["n_train"],
        n_valid=state.fingerprints["n_valid"],
    )


def check_weights(
    model: GPTFF, state: RunState, epoch: int, out: Path, loss: float | None, skipped: int
) -> None:
    """Stop a diverged run: non-finite weights (raw or EMA), or every batch skipped."""
    for network in (model, state.ema):
        bad = [] if network is None else non_finite_tensors(network.state_dict())
        if bad:
            names = ", ".join(name for name, _ in bad[:4])
            diverged(state, epoch, out, f"the weights are not finite ({names})")
    if loss is None and skipped:
        diverged(state, epoch, out, f"every batch ({skipped}) had a non-finite loss or gradient")


def diverged(state: RunState, epoch: int, out: Path, what: str) -> NoReturn:
    """Raise the :class:`ComputationError` of a run that diverged in ``epoch`` (``what``: why),
    naming the files of the last good epoch kept in ``out``."""
    kept = [n for n in EPOCH_FILES if (out / n).exists()]
    raise ComputationError(
        f"training diverged in epoch {epoch}: {what}. Nothing of epoch {epoch} was written; "
        f"{out} keeps {', '.join(kept) or 'nothing'} (best epoch {state.best_epoch}, last "
        f"good epoch {state.epoch}). Start a new run with a lower learning rate (--lr) or "
        "check the training data"
    )


def non_finite_frames(frames: Sequence[Frame], predictions: FramePredictions) -> str:
    """``"non-finite energies: <up to 3 frames>"``, or a note that only forces/stress are."""
    bad = [k for k, energy in enumerate(predictions.energies) if not math.isfinite(energy)]
    return f"non-finite energies: {frame_names(frames, bad)}" if bad else "forces or stresses"
