"""The state of a training run and its resume file.

``training_state.pt`` holds everything that decides the rest of a run: the raw weights (with the
refitted reference energies), the EMA weights, AdamW's moments, the schedule position (epoch and
optimizer step), the shuffling generator and torch's random states (dropout), the best score so
far, the history, and fingerprints of the data and the recipe, which a resume must match (except
``epochs``, which may grow: the run is extended and its cosine schedule re-planned over the new
total). It is read with ``torch.load(..., weights_only=True)`` after a check of its zip CRCs.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from gptff_core.checkpoint import non_finite_tensors
from gptff_core.errors import GPTFFInputError
from gptff_core.model import GPTFF
from gptff_core.paths import write_atomically
from gptff_core.pretrained import check_archive
from gptff_core.training.metrics import FramePredictions
from gptff_core.training.recipe import Recipe

STATE_VERSION = 1


@dataclass
class EpochRecord:
    """One line of the training history (metrics in :data:`~.metrics.METRIC_NAMES` units;
    epoch 0 is the model after the reference refit, before any step).

    Attributes:
        epoch: epochs completed.
        learning_rate: the last learning rate of the epoch.
        train_loss: mean training loss over the epoch's batches (None for epoch 0).
        seconds: wall time of the epoch, s.
        metrics: validation metrics.
        skipped_batches: batches skipped for a non-finite loss or gradient.
    """

    epoch: int
    learning_rate: float
    train_loss: float | None
    seconds: float
    metrics: dict
    skipped_batches: int = 0

    def as_row(self) -> dict:
        row = dict(epoch=self.epoch, learning_rate=self.learning_rate)
        row |= dict(train_loss=self.train_loss, seconds=self.seconds)
        return row | dict(skipped_batches=self.skipped_batches) | self.metrics


def _predictions_to_tensors(predictions: FramePredictions) -> dict:
    stresses = [np.full((3, 3), np.nan) if s is None else s for s in predictions.stresses]
    return dict(
        energies=torch.from_numpy(np.asarray(predictions.energies, dtype=np.float64)),
        forces=torch.from_numpy(np.concatenate(predictions.forces)),
        counts=[len(f) for f in predictions.forces],
        stresses=torch.from_numpy(np.stack(stresses)),
    )


def _predictions_from_tensors(stored: dict) -> FramePredictions:
    forces = [f.numpy() for f in torch.split(stored["forces"], stored["counts"])]
    stresses = [None if np.isnan(s).any() else s for s in stored["stresses"].numpy()]
    return FramePredictions(stored["energies"].numpy(), forces, stresses)


@dataclass
class RunState:
    """Everything a run carries from one epoch to the next (see the module docstring)."""

    model: GPTFF
    trainable: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    ema: GPTFF | None
    fingerprints: dict
    before: dict
    refit: dict
    before_predictions: FramePredictions | None
    history: list[EpochRecord] = field(default_factory=list)
    epoch: int = 0
    step: int = 0
    best_score: float | None = None
    best_epoch: int = 0
    stale: int = 0
    screening: dict | None = None

    @classmethod
    def new(
        cls,
        trainer,
        fingerprints: dict,
        before: dict,
        refit: dict,
        epoch0: EpochRecord,
        before_predictions: FramePredictions,
    ) -> RunState:
        """A fresh state for ``trainer`` (whose model is refitted): optimizer over the
        parameters left trainable by the recipe's ``freeze``, seeded shuffling, EMA copy."""
        recipe = trainer.recipe
        trainable = trainer._freeze()
        optimizer = torch.optim.AdamW(
            trainable, lr=recipe.learning_rate, weight_decay=recipe.weight_decay
        )
        generator = torch.Generator().manual_seed(recipe.seed)
        ema = None
        if recipe.ema_decay is not None:
            ema = copy.deepcopy(trainer.model).eval().requires_grad_(False)
        return cls(
            trainer.model,
            trainable,
            optimizer,
            generator,
            ema,
            fingerprints,
            before,
            refit,
            before_predictions,
            [epoch0],
        )

    def data_record(self) -> dict:
        """Provenance of the data: fingerprints (sha256) of the training and validation frames."""
        return {
            "train_fingerprint": self.fingerprints["train"],
            "valid_fingerprint": self.fingerprints["valid"],
            "n_train": self.fingerprints["n_train"],
            "n_valid": self.fingerprints["n_valid"],
            "outliers": self.screening,
        }

    def save(self, trainer, path: Path) -> None:
        """Write the resume file atomically."""
        payload = dict(
            version=STATE_VERSION,
            config=self.model.config.to_dict(),
            recipe=trainer.recipe.to_dict(),
            fingerprints=self.fingerprints,
            model=self.model.state_dict(),
            ema=None if self.ema is None else self.ema.state_dict(),
            optimizer=self.optimizer.state_dict(),
            shuffle_rng=self.generator.get_state(),
            torch_rng=torch.get_rng_state(),
            cuda_rng=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            history=[asdict(r) for r in self.history],
            before=self.before,
            before_predictions=None
            if self.before_predictions is None
            else _predictions_to_tensors(self.before_predictions),
            refit=self.refit,
            epoch=self.epoch,
            step=self.step,
            best_score=self.best_score,
            best_epoch=self.best_epoch,
            stale=self.stale,
        )
        write_atomically(path, lambda temporary: torch.save(payload, temporary))

    @classmethod
    def load(cls, trainer, path: Path, fingerprints: dict) -> RunState:
        """The state saved at ``path``, restored into ``trainer``'s model and random states.

        Raises:
            GPTFFInputError: no state file, a damaged one, or one written for other data, another
                recipe (``epochs`` may grow) or another network size.
        """
        saved = read_state(path)
        _check_compatible(saved, trainer, path, fingerprints)
        trainer.model.load_state_dict(saved["model"])
        history = [EpochRecord(**r) for r in saved["history"]]
        before_predictions = saved["before_predictions"]
        state = cls.new(
            trainer,
            fingerprints,
            saved["before"],
            saved["refit"],
            history[0],
            None if before_predictions is None else _predictions_from_tensors(before_predictions),
        )
        state.history = history
        state.optimizer.load_state_dict(saved["optimizer"])
        state.generator.set_state(saved["shuffle_rng"])
        if state.ema is not None:
            state.ema.load_state_dict(saved["ema"])
        torch.set_rng_state(saved["torch_rng"])
        if saved["cuda_rng"]:
            torch.cuda.set_rng_state_all(saved["cuda_rng"])
        for name in ("epoch", "step", "best_score", "best_epoch", "stale"):
            setattr(state, name, saved[name])
        return state


def read_state(path: Path) -> dict:
    """The resume file's content, its zip CRCs, version and weights checked.

    Raises:
        GPTFFInputError: missing, damaged or unreadable, or non-finite weights.
    """
    if not path.is_file():
        raise GPTFFInputError(f"cannot resume: {path} does not exist (nothing to resume)")
    check_archive(path, "Training state")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise GPTFFInputError(f"cannot resume: {path} is unreadable ({error})") from error
    if not isinstance(saved, dict) or saved.get("version") != STATE_VERSION:
        version = saved.get("version") if isinstance(saved, dict) else None
        raise GPTFFInputError(f"cannot resume: {path} has version {version}")
    for key in ("model", "ema"):
        bad = non_finite_tensors(saved.get(key) or {})
        if bad:
            raise GPTFFInputError(
                f"cannot resume: {path} holds non-finite {key} weights ({bad[0][0]}); start a new "
                "run in another --out directory"
            )
    return saved


def saved_epochs(path: Path) -> int | None:
    """The ``epochs`` of the recipe saved in the resume file ``path`` (None: no such file)."""
    if not path.is_file():
        return None
    return int(read_state(path)["recipe"]["epochs"])


def _check_compatible(saved: dict, trainer, path: Path, fingerprints: dict) -> None:
    """Refuse a resume with other data, network size or recipe; only ``epochs`` may grow (to at
    least the epochs already run)."""
    mismatches = [
        name
        for name, key, ours in (
            ("training/validation data", "fingerprints", fingerprints),
            ("network config", "config", trainer.model.config.to_dict()),
        )
        if saved.get(key) != ours
    ]
    saved_recipe = Recipe.from_dict(saved["recipe"])  # defaults for options added since
    changes = [c for c in trainer.recipe.changes_from(saved_recipe) if not c.startswith("epochs ")]
    if changes:
        mismatches.append("recipe (" + ", ".join(changes) + ")")
    if mismatches:
        raise GPTFFInputError(
            f"cannot resume from {path}: the {'; the '.join(mismatches)} differ from the run that "
            "wrote it; resume with the same files and options (only --epochs may change, to "
            "extend the run), or start a new --out directory"
        )
    if trainer.recipe.epochs < saved["epoch"]:
        raise GPTFFInputError(
            f"cannot resume from {path}: the run has already completed {saved['epoch']} epochs, "
            f"more than epochs={trainer.recipe.epochs}; give --epochs {saved['epoch']} or more"
        )
