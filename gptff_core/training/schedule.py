"""The recipe's schedule (:class:`~gptff_core.training.recipe.Recipe`): the learning rate of each
optimizer step, the structures sampled in each epoch, and the validation score that picks the best
epoch and drives early stopping."""

from __future__ import annotations

import math

import torch

from gptff_core.training.recipe import Recipe


def learning_rate(recipe: Recipe, epoch: int, position: float, step: int) -> float:
    """Cosine from ``learning_rate`` to ``final_learning_rate`` over the epochs (``position``
    is the fraction of the current epoch done), times a linear warm-up over the first
    ``warmup_steps`` optimizer steps."""
    r = recipe
    progress = min(1.0, (epoch + position) / r.epochs)
    rate = r.final_learning_rate + 0.5 * (r.learning_rate - r.final_learning_rate) * (
        1.0 + math.cos(math.pi * progress)
    )
    if r.warmup_steps:
        rate *= min(1.0, (step + 1) / r.warmup_steps)
    return rate


def epoch_order(recipe: Recipe, n_train: int, generator: torch.Generator) -> list[int]:
    """The training frames (indices) of one epoch: ``structures_per_epoch`` of them (default:
    all), drawn as whole shuffled passes over the ``n_train`` frames so each is sampled evenly."""
    wanted = recipe.structures_per_epoch or n_train
    order: list[int] = []
    while len(order) < wanted:
        order += torch.randperm(n_train, generator=generator).tolist()
    return order[:wanted]


def validation_score(recipe: Recipe, metrics: dict) -> float:
    """Validation score for best/early stopping: weighted MAEs in eV/atom, eV/Å and GPa."""
    r = recipe
    score = 0.0
    for key, weight, scale in (
        ("energy_mae_meV_per_atom", r.energy_weight, 1e-3),
        ("forces_mae_meV_per_A", r.forces_weight, 1e-3),
        ("stress_mae_GPa", r.stress_weight, 1.0),
    ):
        if metrics.get(key) is not None:
            score += weight * scale * metrics[key]
    return score
