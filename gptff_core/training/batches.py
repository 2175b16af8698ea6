"""Frames in batches: their graphs, batches bounded by the recipe (structures, atoms, triplets),
and the network's predictions for them in evaluation mode (eV, eV/Å, eV/Å³ with ASE's sign)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from gptff_core.evaluate import evaluate, to_host
from gptff_core.graph import StructureGraph, structure_graph
from gptff_core.model import GPTFF, GPTFFConfig
from gptff_core.predict import batches_by_size
from gptff_core.training.frames import Frame
from gptff_core.training.loss import make_batch
from gptff_core.training.metrics import FramePredictions
from gptff_core.training.recipe import Recipe


def frame_graphs(config: GPTFFConfig, frames: Sequence[Frame]) -> list[StructureGraph]:
    """The graph of each frame at ``config``'s cutoffs (Å), named by the frame's label."""
    return [
        structure_graph(f.atoms, config.bond_cutoff, config.three_body_cutoff, f.label)
        for f in frames
    ]


def frame_batches(
    recipe: Recipe,
    frames: Sequence[Frame],
    parts: Sequence[StructureGraph],
    order: Sequence[int],
) -> list[list[int]]:
    """The frames of ``order`` (indices) in consecutive batches within the recipe's bounds on
    atoms, triplets and structures per batch."""
    r = recipe
    sizes = ((frames[i].n_atoms, parts[i].triplet_first.size, 1) for i in order)
    limits = (r.max_atoms_per_batch, r.max_triplets_per_batch, r.max_structures_per_batch)
    return [[order[k] for k in group] for group in batches_by_size(sizes, limits)]


def predict_frames(
    model: GPTFF,
    frames: Sequence[Frame],
    parts: Sequence[StructureGraph],
    recipe: Recipe,
    dtype: torch.dtype,
    device: torch.device,
    *,
    energies_only: bool = False,
) -> FramePredictions:
    """Energies (eV), forces (eV/Å) and stresses (eV/Å³) of ``frames`` in evaluation mode, in
    the recipe's batches (``energies_only``: forces and stresses left empty). ``model``'s
    training mode is restored afterwards."""
    was_training = model.training
    model.eval()
    energies = np.zeros(len(frames))
    forces: list[np.ndarray] = [np.zeros((0, 3))] * len(frames)
    stresses: list[np.ndarray | None] = [None] * len(frames)
    for group in frame_batches(recipe, frames, parts, range(len(frames))):
        batch = make_batch(frames, parts, group, dtype, device)
        wanted = not energies_only
        host = to_host(evaluate(model, batch.graph, forces=wanted, stress=wanted), batch.graph)
        energies[group] = host.energies
        if energies_only:
            continue
        for slot, index in enumerate(group):
            forces[index] = host.forces[slot]
            stresses[index] = host.stresses[slot]
    model.train(was_training)
    return FramePredictions(energies, forces, stresses)
