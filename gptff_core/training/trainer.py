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
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from gptff_core.checkpoint import load_model, non_finite_tensors, save_checkpoint
from gptff_core.errors import ComputationError, GPTFFInputError
from gptff_core.evaluate import evaluate
from gptff_core.graph import StructureGraph, structure_graph
from gptff_core.model import GPTFF, AtomTransformer, GPTFFConfig
from gptff_core.paths import check_output_dir
from gptff_core.predict import batches_by_size
from gptff_core.pretrained import DEFAULT_MODEL
from gptff_core.training import metrics as metrics_io
from gptff_core.training.datasets import Frame, fingerprint
from gptff_core.training.loss import LossWeights, loss_terms, make_batch
from gptff_core.training.metrics import FramePredictions, error_metrics
from gptff_core.training.outliers import refuse_or_drop, screen
from gptff_core.training.recipe import Recipe
from gptff_core.training.references import composition_matrix, refit_references
from gptff_core.training.state import EpochRecord, RunState

logger = logging.getLogger(__name__)

STATE_FILE = "training_state.pt"


def new_network(config: GPTFFConfig | None = None, seed: int = 0) -> GPTFF:
    """A randomly initialised network of ``config`` (default: v2's size) for training from
    scratch: PyTorch's default layer initialisation and a standard-normal embedding (rescaled to
    norm 1 by the embedding's max-norm rule), with zero reference energies."""
    torch.manual_seed(seed)
    network = GPTFF(config or GPTFFConfig())
    with torch.no_grad():
        torch.nn.init.normal_(network.embedding)
    return network


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
        self.base_model = _provenance(model, self.model)
        parameter = next(self.model.parameters())
        self.device, self.dtype = parameter.device, parameter.dtype
        bad = non_finite_tensors(self.model.state_dict())
        if bad:
            raise GPTFFInputError(
                f"the network to train has non-finite weights (NaN or infinity) in "
                f"{', '.join(name for name, _ in bad[:6])}; start from an intact network"
            )
        self.progress = sys.stderr.isatty() if progress is None else progress
        self._weights = LossWeights(
            self.recipe.energy_weight,
            self.recipe.forces_weight,
            self.recipe.stress_weight,
            self.recipe.huber_delta,
        )

    # ------------------------------------------------------------------ evaluation

    def _graphs(self, frames: Sequence[Frame]) -> list[StructureGraph]:
        cfg = self.model.config
        return [
            structure_graph(f.atoms, cfg.bond_cutoff, cfg.three_body_cutoff, f.label)
            for f in frames
        ]

    def _batches(self, frames, parts, order: Sequence[int]) -> list[list[int]]:
        r = self.recipe
        sizes = ((frames[i].n_atoms, parts[i].triplet_first.size, 1) for i in order)
        limits = (r.max_atoms_per_batch, r.max_triplets_per_batch, r.max_structures_per_batch)
        return [[order[k] for k in group] for group in batches_by_size(sizes, limits)]

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
        was_training = model.training
        model.eval()
        energies = np.zeros(len(frames))
        forces: list[np.ndarray] = [np.zeros((0, 3))] * len(frames)
        stresses: list[np.ndarray | None] = [None] * len(frames)
        for group in self._batches(frames, parts, range(len(frames))):
            batch = make_batch(frames, parts, group, self.dtype, self.device)
            wanted = not energies_only
            result = evaluate(model, batch.graph, forces=wanted, stress=wanted)
            for slot, index in enumerate(group):
                energies[index] = float(result.energy[slot])
            if energies_only:
                continue
            split = torch.split(result.forces, batch.graph.atoms_per_structure.tolist())
            for slot, index in enumerate(group):
                forces[index] = split[slot].cpu().double().numpy()
                if bool(result.has_stress[slot]):
                    stresses[index] = result.stress[slot].cpu().double().numpy()
        model.train(was_training)
        return FramePredictions(energies, forces, stresses)

    # ------------------------------------------------------------------ training

    def _freeze(self) -> list[torch.nn.Parameter]:
        trainable = []
        names = dict(self.model.named_parameters())
        for prefix in self.recipe.freeze:
            if not any(n == prefix or n.startswith(prefix + ".") for n in names):
                raise GPTFFInputError(
                    f"recipe: freeze {prefix!r} matches no parameter; use a prefix such as "
                    "embedding, bond_init, bond_basis_proj, layers.0, readout"
                )
        for name, parameter in names.items():
            frozen = any(name == p or name.startswith(p + ".") for p in self.recipe.freeze)
            parameter.requires_grad_(not frozen)
            if not frozen:
                trainable.append(parameter)
        if not trainable:
            raise GPTFFInputError("recipe: freeze leaves no parameter to train")
        return trainable

    def _learning_rate(self, epoch: int, position: float, step: int) -> float:
        """Cosine from ``learning_rate`` to ``final_learning_rate`` over the epochs (``position``
        is the fraction of the current epoch done), times a linear warm-up over the first
        ``warmup_steps`` optimizer steps."""
        r = self.recipe
        progress = min(1.0, (epoch + position) / r.epochs)
        rate = r.final_learning_rate + 0.5 * (r.learning_rate - r.final_learning_rate) * (
            1.0 + math.cos(math.pi * progress)
        )
        if r.warmup_steps:
            rate *= min(1.0, (step + 1) / r.warmup_steps)
        return rate

    def _epoch_order(self, n_train: int, generator: torch.Generator) -> list[int]:
        wanted = self.recipe.structures_per_epoch or n_train
        order: list[int] = []
        while len(order) < wanted:
            order += torch.randperm(n_train, generator=generator).tolist()
        return order[:wanted]

    def _score(self, metrics: dict) -> float:
        """Validation score for best/early stopping: weighted MAEs in eV/atom, eV/Å and GPa."""
        r = self.recipe
        score = 0.0
        for key, weight, scale in (
            ("energy_mae_meV_per_atom", r.energy_weight, 1e-3),
            ("forces_mae_meV_per_A", r.forces_weight, 1e-3),
            ("stress_mae_GPa", r.stress_weight, 1.0),
        ):
            if metrics.get(key) is not None:
                score += weight * scale * metrics[key]
        return score

    def _train_epoch(self, state: RunState, frames, parts, epoch: int, bar_label: str) -> tuple:
        model, optimizer = self.model, state.optimizer
        model.train()
        groups = self._batches(frames, parts, self._epoch_order(len(frames), state.generator))
        losses, skipped, rate = [], 0, 0.0
        autocast = torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=self.recipe.mixed_precision
        )
        with tqdm(total=len(groups), disable=not self.progress, desc=bar_label) as bar:
            for k, group in enumerate(groups):
                bar.update(1)
                rate = self._learning_rate(epoch, k / len(groups), state.step)
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
                        _names(frames, group),
                    )
                    continue
                loss.backward()
                if not self._finite_gradients(state.trainable):
                    skipped += 1
                    optimizer.zero_grad(set_to_none=True)
                    logger.warning(
                        "epoch %d: skipped a batch with non-finite gradients (frames %s)",
                        epoch + 1,
                        _names(frames, group),
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
        return all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in parameters)

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
            _set_dropout(self.model, self.recipe.dropout)
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
            state.best_score, state.best_epoch = self._score(epoch0.metrics), 0
            self._save(self.model, out / "best.pt", state, epoch0, "best")
        return self._run(state, train, train_parts, valid, valid_parts, out, on_epoch_end)

    def _screened(self, train, valid) -> tuple:
        """The frames and graphs kept by the label screening, the network energies of the kept
        training frames (eV, with the current references) and the screening record."""
        train_parts, valid_parts = self._graphs(train), self._graphs(valid)
        model_energies = [
            self.predict(self.model, frames, parts, energies_only=True).energies
            for frames, parts in ((train, train_parts), (valid, valid_parts))
        ]
        for frames, energies in zip((train, valid), model_energies, strict=True):
            bad = [k for k, energy in enumerate(energies) if not math.isfinite(energy)]
            if bad:
                raise ComputationError(
                    f"the network to train gives non-finite energies for {_names(frames, bad)}; "
                    "nothing was trained. Check the network and those structures"
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
        if not math.isfinite(self._score(epoch0.metrics)):
            raise ComputationError(
                "the network gives non-finite validation errors after the reference refit, "
                f"before any training step ({metrics_io.summary_line(epoch0.metrics)}; "
                f"{_non_finite_frames(valid, refit_predictions)}); nothing was written. Check "
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
            self._check_weights(state, epoch + 1, out, loss, skipped)
            predictions = self.predict(evaluated, valid, valid_parts)
            record = EpochRecord(
                epoch + 1,
                rate,
                loss,
                time.perf_counter() - start,
                error_metrics(valid, predictions),
                skipped,
            )
            score = self._score(record.metrics)
            if not math.isfinite(score):
                where = _non_finite_frames(valid, predictions)
                self._diverged(
                    state, epoch + 1, out, f"the validation errors are not finite ({where})"
                )
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

    def _check_weights(self, state, epoch: int, out: Path, loss, skipped: int) -> None:
        """Stop a diverged run: non-finite weights (raw or EMA), or every batch skipped."""
        for network in (self.model, state.ema):
            bad = [] if network is None else non_finite_tensors(network.state_dict())
            if bad:
                names = ", ".join(name for name, _ in bad[:4])
                self._diverged(state, epoch, out, f"the weights are not finite ({names})")
        if loss is None and skipped:
            self._diverged(
                state, epoch, out, f"every batch ({skipped}) had a non-finite loss or gradient"
            )

    def _diverged(self, state, epoch: int, out: Path, what: str) -> None:
        kept = [n for n in ("best.pt", "last.pt", STATE_FILE, "metrics.csv") if (out / n).exists()]
        raise ComputationError(
            f"training diverged in epoch {epoch}: {what}. Nothing of epoch {epoch} was written; "
            f"{out} keeps {', '.join(kept) or 'nothing'} (best epoch {state.best_epoch}, last "
            f"good epoch {state.epoch}). Start a new run with a lower learning rate (--lr) or "
            "check the training data"
        )

    def _finish(self, state, valid, valid_parts, out, last_predictions, stopped_early):
        best_path = out / "best.pt"
        best = load_model(best_path, device=self.device, dtype=self.dtype)
        best_predictions = self.predict(best, valid, valid_parts)
        after = error_metrics(valid, best_predictions)
        before_predictions = state.before_predictions
        files = [out / "best.pt", out / "last.pt", out / STATE_FILE, out / "metrics.csv"]
        files += metrics_io.parity_plots(valid, before_predictions, best_predictions, out)
        summary = dict(
            before=state.before,
            after=after,
            best_epoch=state.best_epoch,
            epochs_run=state.epoch,
            stopped_early=stopped_early,
            checkpoint=str(best_path),
            last_checkpoint=str(out / "last.pt"),
            reference_refit=state.refit,
            base_model=self.base_model,
            data=state.data_record(),
            recipe=self.recipe.to_dict(),
            history=[r.as_row() for r in state.history],
        )
        metrics_io.write_json(summary, out / "metrics.json")
        files.append(out / "metrics.json")
        logger.info("best epoch %d: %s", state.best_epoch, metrics_io.summary_line(after))
        return TrainingResult(
            before=state.before,
            after=after,
            history=list(state.history),
            best_checkpoint=best_path,
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

    def _save(self, network: GPTFF, path: Path, state, record: EpochRecord, kind: str) -> None:
        metadata = dict(
            trained_by="gptff_core.training",
            kind=kind,
            epoch=record.epoch,
            base_model=self.base_model,
            data=state.data_record(),
            reference_refit=state.refit,
            recipe=self.recipe.to_dict(),
            metrics=dict(before=state.before, valid=record.metrics),
        )
        save_checkpoint(network, path, metadata)


def _non_finite_frames(frames: Sequence[Frame], predictions: FramePredictions) -> str:
    """``"non-finite energies: <up to 3 frames>"``, or a note that only forces/stress are."""
    bad = [k for k, energy in enumerate(predictions.energies) if not math.isfinite(energy)]
    return f"non-finite energies: {_names(frames, bad)}" if bad else "forces or stresses"


def _names(frames: Sequence[Frame], group: Sequence[int]) -> str:
    shown = ", ".join(frames[i].label for i in group[:3])
    return shown + (f" and {len(group) - 3} more" if len(group) > 3 else "")


def _provenance(requested: object, network: GPTFF) -> dict:
    source = getattr(network, "source", None)
    if source is None:
        return {"name": "scratch" if isinstance(requested, GPTFF) else str(requested)}
    return {"name": source.name, "sha256": source.sha256, "path": source.path}


def _set_dropout(network: GPTFF, dropout: float) -> None:
    network.config = replace(network.config, dropout=dropout)
    for module in network.modules():
        if isinstance(module, AtomTransformer):
            module.dropout = dropout


@torch.no_grad()
def _update_ema(ema: GPTFF, model: GPTFF, decay: float) -> None:
    for average, current in zip(ema.parameters(), model.parameters(), strict=True):
        average.lerp_(current, 1.0 - decay)
