"""Fine-tuning (and training from scratch) of GPTFF networks.

:class:`Trainer` runs the recipe (:class:`~gptff_core.training.recipe.Recipe`): AdamW with a
cosine learning rate (optional linear warm-up), Huber losses on energy per atom, forces and
stress, gradient clipping, optional EMA of the weights, freezing, early stopping and
per-epoch structure sampling. Batches are bounded by structures, atoms and triplets. A batch
whose loss or gradient is not finite is skipped and logged; the weights are untouched. Before any
step the labels are screened (:mod:`~gptff_core.training.outliers`: outliers refused or
dropped). A run that diverges (non-finite weights, every batch skipped, or non-finite validation
errors) stops with a :class:`ComputationError` naming the epoch; no checkpoint ever holds
non-finite weights or a non-finite best score, and the files of the last good epoch are kept.

Files in ``out_dir``: ``best.pt`` and ``last.pt`` (project checkpoints, loadable by
``GPTFFCalculator(model=path)``), ``training_state.pt`` (optimizer, schedule position, EMA,
random states: ``fit(..., resume=True)`` continues exactly), ``metrics.csv`` (one row per epoch),
``metrics.json`` (before/after and history) and parity plots.

The steps live beside it: :mod:`~gptff_core.training.network` (the network to train),
:mod:`~gptff_core.training.batches` (frames in batches and their predictions),
:mod:`~gptff_core.training.schedule` (learning rate, sampling, validation score) and
:mod:`~gptff_core.training.outputs` (checkpoint metadata, ``metrics.json``, the result, the stop
of a diverged run).
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from gptff_core.checkpoint import load_model, save_checkpoint
from gptff_core.errors import ComputationError, GPTFFInputError
from gptff_core.evaluate import evaluate
from gptff_core.graph import StructureGraph
from gptff_core.model import GPTFF
from gptff_core.paths import check_output_dir
from gptff_core.pretrained import DEFAULT_MODEL
from gptff_core.training import metrics as metrics_io
from gptff_core.training.batches import frame_batches, frame_graphs, predict_frames
from gptff_core.training.datasets import fingerprint
from gptff_core.training.frames import Frame, frame_names
from gptff_core.training.loss import LossWeights, loss_terms, make_batch
from gptff_core.training.metrics import FramePredictions, error_metrics
from gptff_core.training.network import (
    check_intact,
    new_network,
    provenance,
    set_dropout,
    trainable_parameters,
)
from gptff_core.training.outliers import refuse_or_drop, screen
from gptff_core.training.outputs import (
    EPOCH_FILES,
    STATE_FILE,
    TrainingResult,
    check_weights,
    checkpoint_metadata,
    diverged,
    non_finite_frames,
    run_summary,
    training_result,
)
from gptff_core.training.recipe import Recipe
from gptff_core.training.references import composition_matrix, refit_references
from gptff_core.training.schedule import epoch_order, learning_rate, validation_score
from gptff_core.training.state import EpochRecord, RunState

__all__ = ["STATE_FILE", "Trainer", "TrainingResult", "new_network"]

logger = logging.getLogger(__name__)


class Trainer:
    """Fine-tune ``model`` (a registry name, a checkpoint path or a :class:`GPTFF`, e.g. from
    :func:`new_network` to train from scratch) with ``recipe``.

    Args:
        model: what to start from.
        recipe: the options of the run.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        dtype: ``"float32"`` (default) or ``"float64"``.
        smooth: train the smooth variant (``None``: the checkpoint's setting).
        progress: progress bar over each epoch's batches (``None``: when stderr is a terminal).
    """

    def __init__(
        self,
        model: str | os.PathLike | GPTFF = DEFAULT_MODEL,
        recipe: Recipe | None = None,
        *,
        device: str = "cpu",
        dtype: str | None = "float32",
        smooth: bool | None = None,
        progress: bool | None = None,
    ):
        self.recipe = recipe or Recipe()
        self.model = load_model(model, device=device, dtype=dtype, smooth=smooth)
        self.base_model = provenance(model, self.model)
        parameter = next(self.model.parameters())
        self.device, self.dtype = parameter.device, parameter.dtype
        check_intact(self.model)
        self.progress = sys.stderr.isatty() if progress is None else progress
        self._weights = LossWeights(
            self.recipe.energy_weight,
            self.recipe.forces_weight,
            self.recipe.stress_weight,
            self.recipe.huber_delta,
        )

    # ------------------------------------------------------------------ evaluation

    def predict(
        self,
        model: GPTFF,
        frames: Sequence[Frame],
        parts: Sequence[StructureGraph],
        *,
        energies_only: bool = False,
    ) -> FramePredictions:
        """Energies (eV), forces (eV/Å) and stresses (eV/Å³) of ``frames`` in evaluation mode
        (``energies_only``: forces and stresses left empty)."""
        return predict_frames(
            model, frames, parts, self.recipe, self.dtype, self.device, energies_only=energies_only
        )

    # ------------------------------------------------------------------ training

    def _freeze(self) -> list[torch.nn.Parameter]:
        """The parameters left trainable by the recipe's ``freeze`` (see
        :func:`~gptff_core.training.network.trainable_parameters`)."""
        return trainable_parameters(self.model, self.recipe.freeze)

    def _train_epoch(self, state: RunState, frames, parts, epoch: int, bar_label: str) -> tuple:
        model, optimizer = self.model, state.optimizer
        model.train()
        order = epoch_order(self.recipe, len(frames), state.generator)
        groups = frame_batches(self.recipe, frames, parts, order)
        losses, skipped, rate = [], 0, 0.0
        autocast = torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=self.recipe.mixed_precision
        )
        with tqdm(total=len(groups), disable=not self.progress, desc=bar_label) as bar:
            for k, group in enumerate(groups):
                bar.update(1)
                rate = learning_rate(self.recipe, epoch, k / len(groups), state.step)
                for parameter_group in optimizer.param_groups:
                    parameter_group["lr"] = rate
                batch = make_batch(frames, parts, group, self.dtype, self.device)
                with autocast:
                    prediction = evaluate(
                        model,
                        batch.graph,
                        forces=self._weights.forces > 0 and bool(batch.forces_mask.any()),
                        stress=self._weights.stress > 0 and bool(batch.stress_mask.any()),
                        keep_graph=True,
                    )
                    loss, terms = loss_terms(prediction, batch, self._weights)
                optimizer.zero_grad(set_to_none=True)
                if not torch.isfinite(loss) or not loss.requires_grad:
                    skipped += 1
                    logger.warning(
                        "epoch %d: skipped a batch with loss %s (frames %s)",
                        epoch + 1,
                        float(loss.detach()),
                        frame_names(frames, group),
                    )
                    continue
                loss.backward()
                if not self._finite_gradients(state.trainable):
                    skipped += 1
                    optimizer.zero_grad(set_to_none=True)
                    logger.warning(
                        "epoch %d: skipped a batch with non-finite gradients (frames %s)",
                        epoch + 1,
                        frame_names(frames, group),
                    )
                    continue
                if self.recipe.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(state.trainable, self.recipe.grad_clip)
                optimizer.step()
                state.step += 1
                if state.ema is not None:
                    _update_ema(state.ema, model, self.recipe.ema_decay)
                losses.append(float(loss.detach()))
                bar.set_postfix({n: f"{v:.4g}" for n, v in terms.items()}, refresh=False)
        return (float(np.mean(losses)) if losses else None), skipped, rate

    @staticmethod
    def _finite_gradients(parameters: Sequence[torch.nn.Parameter]) -> bool:
        """Whether every gradient of ``parameters`` is finite (a missing one counts as finite),
        with one host sync for all of them."""
        finite = [torch.isfinite(p.grad).all() for p in parameters if p.grad is not None]
        return not finite or bool(torch.stack(finite).all())

    def fit(
        self,
        train: Sequence[Frame],
        valid: Sequence[Frame],
        out_dir: str | os.PathLike,
        *,
        resume: bool = False,
        on_epoch_end: Callable[[EpochRecord], None] | None = None,
    ) -> TrainingResult:
        """Train on ``train``, validate on ``valid`` after every epoch, write ``out_dir``.

        Args:
            train: training frames (at least one).
            valid: validation frames (at least one).
            out_dir: directory of the checkpoints, metrics and plots (created; checked writable
                before anything else).
            resume: continue from ``out_dir/training_state.pt`` (same data and recipe; the
                recipe's ``epochs`` may be larger, to extend the run).
            on_epoch_end: called with each epoch's record (after its files are written).

        Raises:
            GPTFFInputError: empty data, outliers or non-finite labels (see
                :mod:`~gptff_core.training.outliers`), an unwritable ``out_dir``, a resume state
                that does not match, bad recipe options.
            ComputationError: the run diverged (the files of the last good epoch are kept).
        """
        if not train or not valid:
            raise GPTFFInputError(
                f"need training and validation frames, got {len(train)} and {len(valid)}"
            )
        out = check_output_dir(out_dir, "output directory")
        if resume and not (out / STATE_FILE).is_file():
            raise GPTFFInputError(f"cannot resume: {out / STATE_FILE} does not exist")
        if self.recipe.dropout is not None:
            set_dropout(self.model, self.recipe.dropout)
        train, valid, train_parts, valid_parts, energies, outliers = self._screened(train, valid)
        prints = dict(train=fingerprint(train), valid=fingerprint(valid))
        prints |= dict(n_train=len(train), n_valid=len(valid))
        if resume:
            state = RunState.load(self, out / STATE_FILE, prints)
        else:
            state = self._start(train, energies, valid, valid_parts, prints)
        state.screening = outliers
        if not resume:
            # the refitted model is the first candidate for best.pt: training that only makes
            # the validation score worse leaves best.pt at the refit (epoch 0)
            epoch0 = state.history[0]
            state.best_score, state.best_epoch = validation_score(self.recipe, epoch0.metrics), 0
            self._save(self.model, out / "best.pt", state, epoch0, "best")
        return self._run(state, train, train_parts, valid, valid_parts, out, on_epoch_end)

    def _screened(self, train, valid) -> tuple:
        """The frames and graphs kept by the label screening, the network energies of the kept
        training frames (eV, with the current references) and the screening record."""
        train_parts = frame_graphs(self.model.config, train)
        valid_parts = frame_graphs(self.model.config, valid)
        model_energies = [
            self.predict(self.model, frames, parts, energies_only=True).energies
            for frames, parts in ((train, train_parts), (valid, valid_parts))
        ]
        for frames, energies in zip((train, valid), model_energies, strict=True):
            bad = [k for k, energy in enumerate(energies) if not math.isfinite(energy)]
            if bad:
                raise ComputationError(
                    "the network to train gives non-finite energies for "
                    f"{frame_names(frames, bad)}; nothing was trained. Check the network and "
                    "those structures"
                )
        references = self.model.reference_energies.detach().cpu().numpy().astype(np.float64)
        without_references = tuple(
            energies - composition_matrix(frames, len(references)) @ references
            for energies, frames in zip(model_energies, (train, valid), strict=True)
        )
        screening = screen(train, valid, without_references, references, self.recipe)
        kept_train, kept_valid = refuse_or_drop(screening, train, valid)
        return (
            [train[i] for i in kept_train],
            [valid[i] for i in kept_valid],
            [train_parts[i] for i in kept_train],
            [valid_parts[i] for i in kept_valid],
            model_energies[0][kept_train],
            screening.record(),
        )

    def _start(self, train, train_energies, valid, valid_parts, prints) -> RunState:
        """Measure the model as given, refit the references, measure again (epoch 0).
        ``train_energies``: the model's energies of ``train`` as given, eV."""
        before_predictions = self.predict(self.model, valid, valid_parts)
        before = error_metrics(valid, before_predictions)
        logger.info("before fine-tuning: %s", metrics_io.summary_line(before))
        network_energies = None
        if self.recipe.reference_refit == "residual":
            network_energies = train_energies
        refit = refit_references(self.model, train, self.recipe.reference_refit, network_energies)
        start = time.perf_counter()
        refit_predictions = self.predict(self.model, valid, valid_parts)
        epoch0 = EpochRecord(
            0, 0.0, None, time.perf_counter() - start, error_metrics(valid, refit_predictions)
        )
        if not math.isfinite(validation_score(self.recipe, epoch0.metrics)):
            raise ComputationError(
                "the network gives non-finite validation errors after the reference refit, "
                f"before any training step ({metrics_io.summary_line(epoch0.metrics)}; "
                f"{non_finite_frames(valid, refit_predictions)}); nothing was written. Check "
                "the network and the frames"
            )
        logger.info(
            "after reference refit (%s): %s", refit["mode"], metrics_io.summary_line(epoch0.metrics)
        )
        torch.manual_seed(self.recipe.seed)
        return RunState.new(self, prints, before, refit, epoch0, before_predictions)

    def _run(self, state, train, train_parts, valid, valid_parts, out, on_epoch_end):
        recipe = self.recipe
        predictions = None
        stopped_early = False
        while state.epoch < recipe.epochs:
            epoch = state.epoch
            start = time.perf_counter()
            loss, skipped, rate = self._train_epoch(
                state, train, train_parts, epoch, f"epoch {epoch + 1}/{recipe.epochs}"
            )
            evaluated = state.ema if state.ema is not None else self.model
            check_weights(self.model, state, epoch + 1, out, loss, skipped)
            predictions = self.predict(evaluated, valid, valid_parts)
            record = EpochRecord(
                epoch + 1,
                rate,
                loss,
                time.perf_counter() - start,
                error_metrics(valid, predictions),
                skipped,
            )
            score = validation_score(self.recipe, record.metrics)
            if not math.isfinite(score):
                where = non_finite_frames(valid, predictions)
                diverged(state, epoch + 1, out, f"the validation errors are not finite ({where})")
            state.history.append(record)
            state.epoch += 1
            improved = state.best_score is None or score < state.best_score
            if improved:
                state.best_score, state.best_epoch, state.stale = score, record.epoch, 0
                self._save(evaluated, out / "best.pt", state, record, "best")
            else:
                state.stale += 1
            self._save(evaluated, out / "last.pt", state, record, "last")
            state.save(self, out / STATE_FILE)
            metrics_io.write_history_csv([r.as_row() for r in state.history], out / "metrics.csv")
            logger.info(
                "epoch %d/%d  lr %.3g  loss %s  valid %s",
                record.epoch,
                recipe.epochs,
                rate,
                loss,
                metrics_io.summary_line(record.metrics),
            )
            if on_epoch_end is not None:
                on_epoch_end(record)
            if recipe.patience is not None and state.stale >= recipe.patience:
                stopped_early = True
                logger.info("early stop: no better validation score for %d epochs", state.stale)
                break
        if predictions is None:  # resumed a finished run: measure its last weights
            evaluated = state.ema if state.ema is not None else self.model
            predictions = self.predict(evaluated, valid, valid_parts)
        return self._finish(state, valid, valid_parts, out, predictions, stopped_early)

    def _finish(self, state, valid, valid_parts, out, last_predictions, stopped_early):
        """Measure ``best.pt`` on ``valid``, write the parity plots and ``metrics.json``, and
        return the run's :class:`TrainingResult`."""
        best = load_model(out / "best.pt", device=self.device, dtype=self.dtype)
        best_predictions = self.predict(best, valid, valid_parts)
        after = error_metrics(valid, best_predictions)
        files = [out / name for name in EPOCH_FILES]
        files += metrics_io.parity_plots(valid, state.before_predictions, best_predictions, out)
        summary = run_summary(state, after, stopped_early, out, self.base_model, self.recipe)
        metrics_io.write_json(summary, out / "metrics.json")
        files.append(out / "metrics.json")
        logger.info("best epoch %d: %s", state.best_epoch, metrics_io.summary_line(after))
        return training_result(state, after, out, last_predictions, stopped_early, files)

    def _save(self, network: GPTFF, path: Path, state, record: EpochRecord, kind: str) -> None:
        """Write ``network`` as checkpoint ``path`` (``kind``: best or last) after ``record``."""
        metadata = checkpoint_metadata(kind, record, state, self.base_model, self.recipe)
        save_checkpoint(network, path, metadata)


@torch.no_grad()
def _update_ema(ema: GPTFF, model: GPTFF, decay: float) -> None:
    """Move the EMA weights toward ``model``'s: ``ema ← decay·ema + (1 − decay)·model``."""
    for average, current in zip(ema.parameters(), model.parameters(), strict=True):
        average.lerp_(current, 1.0 - decay)
