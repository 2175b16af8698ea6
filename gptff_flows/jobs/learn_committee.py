"""The committee of the active-learning loop (:mod:`gptff_flows.jobs.learn`): fine-tuned, or
found in the store; evaluated on held-out labels.

:func:`fit_or_reuse` fine-tunes ``committee_size`` members from the base model on the training
labels (:func:`gptff_core.training.committee.train_committee`, member ``k`` with seed
``seed + k``), each keeping the checkpoint with the lowest error on those training labels (the
held-out labels are never seen by the training or by the choice of checkpoint). Before training
it computes the run's :func:`train_key` and reuses a committee stored with the same key: a
resumed run gets the very checkpoints it had, so its MD samples the same frames and finds their
labels stored. :func:`held_out_metrics` measures the committee mean against held-out labels.

Units: forces eV/Å, energies meV/atom in the metrics, times s.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gptff_flows.schemas.base import GPTFFProvenance
from gptff_flows.schemas.finetune_md import CheckpointBlob
from gptff_flows.schemas.learn import CommitteeMember, HeldOutMetrics

logger = logging.getLogger(__name__)


@dataclass
class Fitted:
    """A committee, trained now or found stored."""

    committee: list[CheckpointBlob]
    members: list[CommitteeMember]
    train_key: str
    reused: bool
    training_s: float


def write_blobs(blobs: Sequence, directory: str | Path) -> list[Path]:
    """The checkpoints ``blobs`` (CheckpointBlob or its dict) written into ``directory``
    (sha256 checked); their paths in order."""
    return [CheckpointBlob.model_validate(blob).write(directory) for blob in blobs]


def train_key(options: dict, label_keys: Sequence[str]) -> str:
    """sha256 of what decides a committee: the base checkpoint's sha256, the recipe (its seed
    replaced by the members'), size, seed, dtype, smooth flag and the training labels' frame keys
    in order."""
    from gptff_core.pretrained import cached_sha256, resolve_checkpoint
    from gptff_core.training import Recipe

    recipe = Recipe(**options["recipe"]).to_dict()
    recipe.pop("seed")
    payload = dict(
        base=cached_sha256(resolve_checkpoint(options["model"])),
        recipe=recipe,
        size=options["committee_size"],
        seed=options["seed"],
        dtype=options["dtype"],
        smooth=options["smooth"],
        labels=list(label_keys),
    )
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def fit_or_reuse(store, label_keys: list[str], documents: list, options: dict, scratch) -> Fitted:
    """The committee trained on the label ``documents`` (frame keys ``label_keys``): the one
    stored with the same :func:`train_key`, else fine-tuned now in ``scratch``."""
    from gptff_flows.queries.learn import stored_committee

    key = train_key(options, label_keys)
    stored = stored_committee(store, key) if store is not None else None
    if stored is not None:
        logger.info("committee %s… found in the store: not retrained", key[:12])
        blobs = [CheckpointBlob.model_validate(b) for b in stored["committee"]]
        members = [CommitteeMember.model_validate(m) for m in stored["members"]]
        return Fitted(blobs, members, key, True, 0.0)
    return _fit(documents, options, Path(scratch) / "committee", key)


def _fit(documents: list, options: dict, directory: Path, key: str) -> Fitted:
    """Fine-tune the committee on ``documents`` into ``directory``."""
    from gptff_core.training import Recipe
    from gptff_core.training.committee import train_committee
    from gptff_flows.jobs.training_data import frames_from_documents

    frames = frames_from_documents(list(documents))
    start = time.perf_counter()
    results = train_committee(
        options["model"],
        frames,
        frames,
        Recipe(**options["recipe"]),
        options["committee_size"],
        directory=directory,
        seed=options["seed"],
        dtype=options["dtype"],
        smooth=options["smooth"],
        device=options["device"],
    )
    blobs = [CheckpointBlob.from_file(r.best_checkpoint) for r in results]
    members = [
        CommitteeMember(
            seed=options["seed"] + k,
            checkpoint_sha256=blob.sha256,
            best_epoch=r.best_epoch,
            after=r.after,
        )
        for k, (r, blob) in enumerate(zip(results, blobs, strict=True))
    ]
    logger.info("committee of %d fine-tuned on %d labels", len(blobs), len(frames))
    return Fitted(blobs, members, key, False, time.perf_counter() - start)


def frame_errors(predicted_forces, label_forces, predicted_energies, label_energies, n_atoms):
    """(largest per-atom |ΔF| of each frame eV/Å, |ΔE| per atom of each frame meV/atom, every
    absolute force-component error eV/Å) of predictions against labels (eV, eV/Å)."""
    components = [
        np.abs(np.asarray(p) - np.asarray(q)).ravel()
        for p, q in zip(predicted_forces, label_forces, strict=True)
    ]
    largest = np.array(
        [
            np.linalg.norm(np.asarray(p) - np.asarray(q), axis=1).max()
            for p, q in zip(predicted_forces, label_forces, strict=True)
        ]
    )
    energy = 1e3 * np.abs(np.asarray(predicted_energies) - np.asarray(label_energies))
    return largest, energy / np.asarray(n_atoms), np.concatenate(components)


def _spearman(scores: np.ndarray, errors: np.ndarray) -> float | None:
    """Spearman ρ of ``scores`` and ``errors`` (None: fewer than 3, or one of them constant)."""
    if len(scores) < 3 or np.ptp(scores) == 0 or np.ptp(errors) == 0:
        return None
    from scipy.stats import spearmanr

    return float(spearmanr(scores, errors).statistic)


def held_out_metrics(documents: list, paths: list[Path], options: dict):
    """(:class:`HeldOutMetrics` of the committee ``paths`` on the label ``documents``, s)."""
    from gptff_core.committee import committee_predict
    from gptff_flows.jobs.training_data import frames_from_documents

    start = time.perf_counter()
    frames = frames_from_documents(list(documents))
    predictions = committee_predict(
        [f.atoms for f in frames],
        [str(p) for p in paths],
        device=options["device"],
        dtype=options["dtype"],
        smooth=options["smooth"],
    )
    n_atoms = [f.n_atoms for f in frames]
    largest, energy, components = frame_errors(
        predictions.forces,
        [f.forces for f in frames],
        predictions.energies,
        [f.energy for f in frames],
        n_atoms,
    )
    metrics = HeldOutMetrics(
        n_frames=len(frames),
        n_atoms=int(sum(n_atoms)),
        force_mae=float(components.mean()),
        energy_mae=float(energy.mean()),
        mean_uncertainty=float(np.mean(predictions.uncertainty)),
        max_uncertainty=float(np.max(predictions.uncertainty)),
        spearman=_spearman(np.asarray(predictions.uncertainty), largest),
    )
    return metrics, time.perf_counter() - start


def committee_provenance(path: Path, options: dict) -> GPTFFProvenance:
    """Provenance of a committee, as that of its first member's checkpoint ``path``; ``model``
    names the base model it was fine-tuned from."""
    from gptff_core.calculator import GPTFFCalculator

    calculator = GPTFFCalculator(
        model=str(path), dtype=options["dtype"], smooth=options["smooth"], device=options["device"]
    )
    return GPTFFProvenance.from_calculator(calculator, "learn", options["model"])
