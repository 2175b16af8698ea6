"""Batches of labelled frames and the training loss.

The loss is a weighted sum of Huber losses on the energy per atom (eV/atom), the force
components (eV/Å) and the stress components (GPa, so that its scale is comparable with the
others); a missing label is masked out of its term, and a term without any label in the batch
contributes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from ase import units
from torch.nn import functional as F

from gptff_core.evaluate import Prediction
from gptff_core.graph import Graph, StructureGraph, stack_graphs
from gptff_core.training.datasets import Frame


@dataclass
class Batch:
    """Stacked graph and labels of some frames (missing labels are NaN and masked).

    Attributes:
        graph: the stacked graph.
        energy: (B,) eV; ``energy_mask`` (B,) where labelled.
        forces: (N, 3) eV/Å; ``forces_mask`` (N,) where labelled.
        stress: (B, 3, 3) eV/Å³, ASE sign; ``stress_mask`` (B,) where labelled.
        indices: the frames' positions in their dataset.
    """

    graph: Graph
    energy: torch.Tensor
    energy_mask: torch.Tensor
    forces: torch.Tensor
    forces_mask: torch.Tensor
    stress: torch.Tensor
    stress_mask: torch.Tensor
    indices: list[int]


def make_batch(
    frames: Sequence[Frame],
    parts: Sequence[StructureGraph],
    indices: list[int],
    dtype: torch.dtype,
    device: torch.device | str,
) -> Batch:
    """Stack ``frames[indices]`` with their precomputed ``parts`` (graphs of the same frames)."""
    chosen = [frames[i] for i in indices]
    graph = stack_graphs([f.atoms for f in chosen], [parts[i] for i in indices], dtype, device)
    nan3 = np.full((3, 3), np.nan)
    energy = np.array([np.nan if f.energy is None else f.energy for f in chosen])
    forces = np.concatenate(
        [np.full((f.n_atoms, 3), np.nan) if f.forces is None else f.forces for f in chosen]
    )
    stress = np.stack([nan3 if f.stress is None else f.stress for f in chosen])
    forces_mask = np.concatenate([np.full(f.n_atoms, f.forces is not None) for f in chosen])

    def tensor(array: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(array, dtype=dtype, device=device)

    return Batch(
        graph=graph,
        energy=tensor(energy),
        energy_mask=torch.as_tensor(~np.isnan(energy), device=device),
        forces=tensor(forces),
        forces_mask=torch.as_tensor(forces_mask, device=device),
        stress=tensor(stress),
        stress_mask=torch.as_tensor([f.stress is not None for f in chosen], device=device),
        indices=list(indices),
    )


@dataclass(frozen=True)
class LossWeights:
    """Weights of the energy-per-atom, force and stress terms, and the Huber threshold δ
    (applied to each term in its unit: eV/atom, eV/Å, GPa)."""

    energy: float = 1.0
    forces: float = 1.0
    stress: float = 0.1
    huber_delta: float = 0.1


def loss_terms(
    prediction: Prediction, batch: Batch, weights: LossWeights
) -> tuple[torch.Tensor, dict[str, float]]:
    """The weighted loss (a scalar tensor with its autograd graph) and its unweighted terms."""
    counts = batch.graph.atoms_per_structure.to(prediction.energy.dtype)
    zero = prediction.energy.sum() * 0.0
    terms = {}
    total = zero
    gpa = units.GPa
    pairs = [
        (
            "energy",
            weights.energy,
            batch.energy_mask,
            prediction.energy,
            lambda m: (prediction.energy[m] / counts[m], batch.energy[m] / counts[m]),
        ),
        (
            "forces",
            weights.forces,
            batch.forces_mask,
            prediction.forces,
            lambda m: (prediction.forces[m], batch.forces[m]),
        ),
        (
            "stress",
            weights.stress,
            batch.stress_mask,
            prediction.stress,
            lambda m: (prediction.stress[m] / gpa, batch.stress[m] / gpa),
        ),
    ]
    for name, weight, mask, predicted_values, select in pairs:
        if weight == 0.0 or predicted_values is None or not bool(mask.any()):
            continue
        predicted, label = select(mask)
        term = F.huber_loss(predicted, label, delta=weights.huber_delta)
        terms[name] = float(term.detach())
        total = total + weight * term
    return total, terms
