"""Training a committee: M networks fine-tuned from one base model with different seeds, whose
disagreement (:mod:`gptff_core.committee`) measures how far a structure is from the data.

Member ``k`` runs the recipe with ``seed + k``: its own shuffling of the training frames into
batches and its own dropout masks (the transformer's), from the same starting weights and on the
same frames. Each member is an ordinary :class:`~gptff_core.training.trainer.Trainer` run in
``directory/member_k/`` (``best.pt``, ``last.pt``, metrics; see the trainer). Load the committee
with ``CommitteeCalculator([r.best_checkpoint for r in results])``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from gptff_core.committee import COMMITTEE_SIZE
from gptff_core.errors import GPTFFInputError
from gptff_core.model import GPTFF
from gptff_core.paths import check_output_dir
from gptff_core.training.batches import frame_batches, frame_graphs
from gptff_core.training.frames import Frame
from gptff_core.training.outputs import STATE_FILE, TrainingResult
from gptff_core.training.recipe import Recipe
from gptff_core.training.state import EpochRecord
from gptff_core.training.trainer import Trainer

__all__ = ["COMMITTEE_SIZE", "member_directory", "train_committee"]

logger = logging.getLogger(__name__)


def member_directory(directory: str | os.PathLike, k: int) -> Path:
    """The output directory of member ``k`` (from 0) of a committee trained in ``directory``."""
    return Path(directory) / f"member_{k}"


def train_committee(
    base_model: str | os.PathLike | GPTFF,
    train: Sequence[Frame],
    valid: Sequence[Frame],
    recipe: Recipe,
    size: int = COMMITTEE_SIZE,
    *,
    directory: str | os.PathLike,
    seed: int = 0,
    dtype: str = "float32",
    smooth: bool | None = None,
    device: str = "cpu",
    on_epoch_end: Callable[[int, EpochRecord], None] | None = None,
    resume: bool = False,
) -> list[TrainingResult]:
    """Fine-tune ``size`` copies of ``base_model`` on ``train``, member ``k`` with
    ``recipe``'s ``seed`` replaced by ``seed + k``, one after another.

    Args:
        base_model: registry name, checkpoint path or :class:`GPTFF` (never modified).
        train, valid: training and validation frames (the same for every member).
        recipe: the run's options (its ``seed`` is replaced).
        size: members, at least 2 (see :data:`~gptff_core.committee.COMMITTEE_SIZE`).
        directory: member ``k`` writes to ``directory/member_k/``.
        seed: member ``k`` trains with seed ``seed + k``.
        dtype, smooth, device: as :class:`~gptff_core.training.Trainer`'s.
        on_epoch_end: called as ``on_epoch_end(k, record)`` after each epoch of member ``k``.
        resume: continue each member whose directory holds a resume state (a finished member
            is only measured again); the others start afresh.

    Returns:
        The members' :class:`TrainingResult`, in order of ``k``.

    Raises:
        GPTFFInputError: ``size`` below 2; a recipe that would train identical members (no
            dropout and every epoch one batch of all the frames); the trainer's input errors.
        ComputationError: a member's run diverged (earlier members' files are kept).
    """
    _check_size_and_seed(size, seed)
    check_output_dir(directory, "committee directory")
    options = dict(device=device, dtype=dtype, smooth=smooth, progress=False)
    results = []
    for k in range(size):
        trainer = Trainer(base_model, dataclasses.replace(recipe, seed=seed + k), **options)
        if k == 0:
            _refuse_identical_members(trainer.model, trainer.recipe, train)
        out = member_directory(directory, k)
        callback = None if on_epoch_end is None else _for_member(on_epoch_end, k)
        logger.info("committee member %d/%d (seed %d) → %s", k + 1, size, seed + k, out)
        again = resume and (out / STATE_FILE).is_file()
        results.append(trainer.fit(train, valid, out, resume=again, on_epoch_end=callback))
    return results


def _check_size_and_seed(size: object, seed: object) -> None:
    """Refuse a committee of fewer than 2 members or a seed that is not an integer."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 2:
        raise GPTFFInputError(f"committee size must be an integer ≥ 2 (members), got {size!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise GPTFFInputError(f"committee seed must be an integer, got {seed!r}")


def _for_member(
    on_epoch_end: Callable[[int, EpochRecord], None], k: int
) -> Callable[[EpochRecord], None]:
    """The trainer's one-argument callback that calls ``on_epoch_end(k, record)``."""
    return lambda record: on_epoch_end(k, record)


def _refuse_identical_members(network: GPTFF, recipe: Recipe, train: Sequence[Frame]) -> None:
    """Refuse a recipe under which the seed changes nothing: no active dropout, and each epoch
    is one batch of all the training frames (their order inside a batch does not matter)."""
    dropout = network.config.dropout if recipe.dropout is None else recipe.dropout
    if network.config.transformer and dropout > 0:
        return
    if recipe.structures_per_epoch not in (None, len(train)):
        return  # each seed samples other frames
    parts = frame_graphs(network.config, train)
    if len(frame_batches(recipe, train, parts, range(len(train)))) > 1:
        return
    raise GPTFFInputError(
        f"committee: with no dropout and all {len(train)} training frames in one batch, every "
        "member would train identically (zero disagreement everywhere); lower the recipe's "
        "max_structures_per_batch below the number of frames or set its dropout above 0"
    )
