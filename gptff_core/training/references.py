"""Per-element reference energies refitted to a training set by least squares.

GPTFF adds ``Σ_i ref[Z_i]`` (eV) to its network energy. Data from another functional or code sit
on another energy scale, mostly a per-element offset; refitting the references removes it, so
the energy loss is not dominated by a constant. Two targets are available:

* ``"residual"``: fit ``E_label − E_network`` (the network's prediction without its references),
  so the refitted model matches the labels as well as a per-element shift can;
* ``"composition"``: fit ``E_label`` from composition alone, as if the network added nothing.

Both minimise the squared error of the energy *per atom* (the quantity the loss sees); only
elements present in the training set are refitted, the others keep their values.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from gptff_core.errors import GPTFFInputError
from gptff_core.model import GPTFF
from gptff_core.training.datasets import Frame

REFIT_MODES = ("residual", "composition", "none")


def composition_matrix(frames: Sequence[Frame], n_elements: int) -> np.ndarray:
    """(frames, n_elements) number of atoms of each element (column = Z)."""
    counts = np.zeros((len(frames), n_elements))
    for row, frame in enumerate(frames):
        np.add.at(counts[row], frame.atoms.numbers, 1.0)
    return counts


def fit_reference_energies(
    frames: Sequence[Frame],
    network_energies: np.ndarray | None,
    current: np.ndarray,
) -> np.ndarray:
    """Least-squares per-element energies (eV/atom, index = Z).

    Args:
        frames: training frames; those without an energy label are ignored.
        network_energies: (frames,) network energies without references, eV (``"residual"``
            mode), or None to fit the labels from composition alone.
        current: (n_elements,) the references now in use (kept for absent elements), eV/atom.

    Raises:
        GPTFFInputError: no frame has an energy label.
    """
    labelled = [i for i, frame in enumerate(frames) if frame.energy is not None]
    if not labelled:
        raise GPTFFInputError("reference refit needs energy labels; no training frame has one")
    chosen = [frames[i] for i in labelled]
    counts = composition_matrix(chosen, len(current))
    n_atoms = counts.sum(axis=1)
    target = np.array([frame.energy for frame in chosen])
    if network_energies is not None:
        target = target - np.asarray(network_energies)[labelled]
    present = np.flatnonzero(counts.sum(axis=0))
    solution, *_ = np.linalg.lstsq(
        counts[:, present] / n_atoms[:, None], target / n_atoms, rcond=None
    )
    refitted = np.array(current, dtype=np.float64, copy=True)
    refitted[present] = solution
    return refitted


def refit_references(
    model: GPTFF,
    frames: Sequence[Frame],
    mode: str,
    network_energies: np.ndarray | None = None,
) -> dict:
    """Refit ``model.reference_energies`` in place and return a record for the checkpoint.

    Args:
        model: the network whose references are replaced.
        frames: training frames.
        mode: ``"residual"``, ``"composition"`` or ``"none"``.
        network_energies: (frames,) model energies of ``frames`` with its current references,
            eV (needed for ``"residual"``).

    Returns:
        ``{"mode", "elements": {symbol: eV/atom}, "previous": {symbol: eV/atom}}`` for the
        refitted elements.
    """
    from ase.data import chemical_symbols

    if mode not in REFIT_MODES:
        raise GPTFFInputError(f"reference refit mode must be one of {REFIT_MODES}, got {mode!r}")
    current = model.reference_energies.detach().cpu().numpy().astype(np.float64)
    if mode == "none":
        return {"mode": "none", "elements": {}, "previous": {}}
    residual = None
    if mode == "residual":
        if network_energies is None:
            raise GPTFFInputError("residual refit needs the network's energies of the frames")
        references = composition_matrix(frames, len(current)) @ current
        residual = np.asarray(network_energies) - references
    refitted = fit_reference_energies(frames, residual, current)
    with torch.no_grad():
        model.reference_energies.copy_(torch.from_numpy(refitted))
    labelled = [frame for frame in frames if frame.energy is not None]
    changed = np.flatnonzero(composition_matrix(labelled, len(current)).sum(axis=0))
    return {
        "mode": mode,
        "elements": {chemical_symbols[z]: float(refitted[z]) for z in changed},
        "previous": {chemical_symbols[z]: float(current[z]) for z in changed},
    }
