"""Per-element reference energies refitted to a training set by robust least squares.

GPTFF adds ``Σ_i ref[Z_i]`` (eV) to its network energy. Data from another functional or code sit
on another energy scale, mostly a per-element offset; refitting the references removes it, so
the energy loss is not dominated by a constant. Two targets are available:

* ``"residual"``: fit ``E_label − E_network`` (the network's prediction without its references),
  so the refitted model matches the labels as well as a per-element shift can;
* ``"composition"``: fit ``E_label`` from composition alone, as if the network added nothing.

Both fit the energy *per atom* (the quantity the loss sees) by Huber regression: iteratively
reweighted least squares where a frame whose residual exceeds ``HUBER_K·σ`` (σ = 1.4826 × the
median absolute deviation of the residuals, re-estimated each iteration) gets the weight
``HUBER_K·σ/|r|``, followed by iterations where a frame farther than ``REJECT·σ`` gets no weight.
On clean data this is the least-squares fit; a single wrong frame (an energy of 1e6 eV) does not
move the references at all, where least squares would move them by its error over the number
of frames. Only elements present in the training set are refitted, the others keep their values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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


HUBER_K = 1.345
"""Huber threshold in units of σ (95 % efficiency for normal residuals)."""

REJECT = 10.0
"""Frames farther than this many σ from the fit get no weight in its final iterations."""

MAD_TO_SIGMA = 1.4826
"""σ of a normal distribution per unit of median absolute deviation."""

_TINY_SCALE = 1e-9
"""eV/atom: the smallest σ used for the weights (an exact fit has σ = 0)."""


@dataclass
class ReferenceFit:
    """A robust fit of per-element reference energies.

    Attributes:
        references: (n_elements,) eV/atom, index = Z (elements absent from the data unchanged).
        labelled: positions of the frames with an energy label (those fitted).
        residuals: (labelled,) residual per atom of those frames, label − fit, eV/atom.
        sigma: robust scale of the residuals, 1.4826 × their median absolute deviation, eV/atom.
        present: the elements (Z) fitted.
    """

    references: np.ndarray
    labelled: list[int]
    residuals: np.ndarray
    sigma: float
    present: np.ndarray


def robust_scale(residuals: np.ndarray) -> float:
    """1.4826 × the median absolute deviation of ``residuals`` (same unit)."""
    if residuals.size == 0:
        return 0.0
    return float(MAD_TO_SIGMA * np.median(np.abs(residuals - np.median(residuals))))


def _huber_weights(residuals: np.ndarray, reject: float | None) -> np.ndarray:
    """Huber weights at the current robust scale σ; 0 beyond ``reject``·σ when given."""
    sigma = max(robust_scale(residuals), _TINY_SCALE)
    size = np.abs(residuals)
    weights = np.where(size <= HUBER_K * sigma, 1.0, HUBER_K * sigma / np.maximum(size, sigma))
    if reject is not None:
        weights[size > reject * sigma] = 0.0
    return weights


def _irls(matrix, target, solution, reject: float | None, iterations: int) -> np.ndarray:
    """Iteratively reweighted least squares from ``solution`` until it stops changing; keeps
    the starting solution if the weights would leave a column (an element) without data."""
    for _ in range(iterations):
        weights = _huber_weights(target - matrix @ solution, reject)
        if not (weights @ (matrix != 0)).all():
            return solution
        root = np.sqrt(weights)
        updated, *_ = np.linalg.lstsq(matrix * root[:, None], target * root, rcond=None)
        change = np.max(np.abs(updated - solution), initial=0.0)
        solution = updated
        if change <= 1e-12 * (1.0 + np.max(np.abs(solution), initial=0.0)):
            break
    return solution


def huber_lstsq(
    matrix: np.ndarray, target: np.ndarray, iterations: int = 200
) -> tuple[np.ndarray, np.ndarray, float]:
    """Robust regression of ``target ≈ matrix @ x``: Huber by iteratively reweighted least
    squares (σ re-estimated each iteration), then the same with rows beyond ``REJECT``·σ given no
    weight, so that a gross error has no influence at all. Returns ``(x, residuals, σ)``."""
    solution, *_ = np.linalg.lstsq(matrix, target, rcond=None)
    solution = _irls(matrix, target, solution, None, iterations)
    solution = _irls(matrix, target, solution, REJECT, iterations)
    residuals = target - matrix @ solution
    return solution, residuals, robust_scale(residuals)


def reference_fit(
    frames: Sequence[Frame],
    network_energies: np.ndarray | None,
    current: np.ndarray,
) -> ReferenceFit:
    """Robust per-element energies of ``frames`` (see the module docstring).

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
    solution, residuals, sigma = huber_lstsq(
        counts[:, present] / n_atoms[:, None], target / n_atoms
    )
    refitted = np.array(current, dtype=np.float64, copy=True)
    refitted[present] = solution
    return ReferenceFit(refitted, labelled, residuals, sigma, present)


def fit_reference_energies(
    frames: Sequence[Frame],
    network_energies: np.ndarray | None,
    current: np.ndarray,
) -> np.ndarray:
    """Robust per-element energies (eV/atom, index = Z); see :func:`reference_fit`."""
    return reference_fit(frames, network_energies, current).references


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
