"""Choosing which MD frames to label: the most uncertain ones that are mutually different.

Pure numpy on ASE ``Atoms`` (no jobflow). The active-learning loop
(:mod:`gptff_flows.flows.learn`) samples many frames by MD and can afford labels for only a few;
two frames a few MD steps apart carry almost the same information, so a label spent on the second
is wasted. :func:`select_frames` therefore picks frames one at a time and skips every candidate
closer than ``min_distance`` to a frame already chosen (or to a ``taken`` frame, e.g. one
labelled earlier):

* with ``scores`` (the committee's frame uncertainty, eV/Å): greedily by descending score (ties:
  the earlier frame), so the most uncertain frames are labelled first;
* without scores (the first iteration, before a committee exists): farthest-point sampling,
  starting from the first candidate, each next frame the one farthest from all chosen so far.

Structural distance (:func:`frame_distance`, Å): the root-mean-square displacement between two
frames of the same atoms (same elements in the same order, as frames of one MD run are), after
removing the mean displacement (a rigid translation), plus the change of the cell. In a periodic
cell the displacements are those of the fractional coordinates (each frame's own cell; minimum
image) in the two cells' mean, so a strain with the atoms following it counts once, as the
cell's change: ``d² = mean_i |Δr_i|² + |Δcell|²_F / 3`` (``|Δcell|_F`` the Frobenius norm, Å, so
the second term is the mean squared change of a cell vector). Frames of different atoms are
infinitely far apart. The distance is not invariant to swapping two atoms of one element (rare in
the short MD runs sampled; such a pair would only count as different).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from ase import Atoms

from gptff_core.errors import GPTFFInputError


def frame_distance(a: Atoms, b: Atoms) -> float:
    """Structural distance (Å) between frames ``a`` and ``b`` (see the module docstring);
    ``inf`` when they are not the same atoms (numbers in the same order)."""
    if len(a) != len(b) or not np.array_equal(a.numbers, b.numbers):
        return math.inf
    cell_a, cell_b = a.cell.array, b.cell.array
    if a.pbc.all() and b.pbc.all():
        fractional = np.linalg.solve(cell_b.T, b.positions.T).T
        fractional -= np.linalg.solve(cell_a.T, a.positions.T).T
        delta = (fractional - np.round(fractional)) @ ((cell_a + cell_b) / 2)
    else:
        delta = b.positions - a.positions
    delta = delta - delta.mean(axis=0)
    squared = np.mean(np.sum(delta**2, axis=1)) + np.sum((cell_b - cell_a) ** 2) / 3.0
    return float(np.sqrt(squared))


@dataclass
class Selection:
    """Frames chosen for labelling.

    Attributes:
        indices: positions of the chosen candidates, in the order chosen.
        distances: for each chosen frame, its distance (Å) to the nearest frame chosen before it
            or taken (``inf`` for the first when nothing was taken).
        skipped: ``(candidate, nearer frame)`` for each candidate considered and skipped as a
            near-duplicate; ``nearer frame`` is a candidate position, or ``"taken k"``.
        reason: why fewer than ``k`` frames were chosen (None: ``k`` were).
    """

    indices: list[int]
    distances: list[float]
    skipped: list[tuple[int, int | str]] = field(default_factory=list)
    reason: str | None = None


def _check(frames: Sequence[Atoms], k: int, min_distance: float, scores) -> np.ndarray | None:
    """Refuse bad arguments; ``scores`` as a float array (or None)."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise GPTFFInputError(f"k (frames to select) must be an integer ≥ 1, got {k!r}")
    if not (isinstance(min_distance, int | float) and min_distance >= 0):
        raise GPTFFInputError(f"min_distance must be a number ≥ 0 Å, got {min_distance!r}")
    if scores is None:
        return None
    values = np.asarray(scores, dtype=np.float64)
    if values.shape != (len(frames),):
        raise GPTFFInputError(
            f"scores have shape {values.shape} for {len(frames)} frames: give one score (eV/Å) "
            "per frame"
        )
    if not np.isfinite(values).all():
        raise GPTFFInputError("scores hold NaN or infinite values; score every frame (eV/Å)")
    return values


def _nearest(frame: Atoms, others: list[tuple[int | str, Atoms]]) -> tuple[float, int | str]:
    """(distance Å, name) of the frame of ``others`` nearest to ``frame``."""
    best, name = math.inf, None
    for other_name, other in others:
        d = frame_distance(frame, other)
        if d < best:
            best, name = d, other_name
    return best, name


def select_frames(
    frames: Sequence[Atoms],
    k: int,
    min_distance: float,
    scores: Sequence[float] | np.ndarray | None = None,
    taken: Sequence[Atoms] = (),
) -> Selection:
    """Up to ``k`` of ``frames``, mutually at least ``min_distance`` (Å) apart and as far from
    every ``taken`` frame.

    Args:
        frames: candidate frames (ASE Atoms, Å).
        k: frames wanted.
        min_distance: Å, smallest :func:`frame_distance` allowed between two chosen frames (0:
            no frame is skipped).
        scores: one score per frame (e.g. committee uncertainty, eV/Å): greedy by descending
            score; None: farthest-point sampling from the first frame.
        taken: frames already labelled; candidates near them are skipped too.

    Raises:
        GPTFFInputError: ``k`` < 1, a negative ``min_distance``, scores that are not one finite
            number per frame.
    """
    values = _check(frames, k, min_distance, scores)
    chosen = [(f"taken {j}", atoms) for j, atoms in enumerate(taken)]
    if values is None:
        return _farthest_points(frames, k, min_distance, chosen)
    selection = Selection(indices=[], distances=[])
    for index in sorted(range(len(frames)), key=lambda i: (-values[i], i)):
        if len(selection.indices) == k:
            break
        distance, nearest = _nearest(frames[index], chosen)
        if distance < min_distance:
            selection.skipped.append((index, nearest))
            continue
        selection.indices.append(index)
        selection.distances.append(distance)
        chosen.append((index, frames[index]))
    return _finish(selection, k, len(frames), min_distance)


def _farthest_points(frames, k, min_distance, chosen) -> Selection:
    """Farthest-point sampling: the first frame (or, with ``chosen`` frames, the one farthest
    from them), then repeatedly the frame farthest from all chosen, while that distance is at
    least ``min_distance``."""
    nearest = [_nearest(frame, chosen) for frame in frames]
    remaining = list(range(len(frames)))
    selection = Selection(indices=[], distances=[])
    while remaining and len(selection.indices) < k:
        pick = remaining[0] if not chosen else max(remaining, key=lambda i: (nearest[i][0], -i))
        if nearest[pick][0] < min_distance:
            selection.skipped += [(i, nearest[i][1]) for i in remaining]
            break
        selection.indices.append(pick)
        selection.distances.append(nearest[pick][0])
        chosen.append((pick, frames[pick]))
        remaining.remove(pick)
        for i in remaining:
            d = frame_distance(frames[i], frames[pick])
            if d < nearest[i][0]:
                nearest[i] = (d, pick)
    return _finish(selection, k, len(frames), min_distance)


def _finish(selection: Selection, k: int, n: int, min_distance: float) -> Selection:
    """``selection`` with its ``reason`` when fewer than ``k`` frames were chosen."""
    if len(selection.indices) < k:
        selection.reason = (
            f"only {len(selection.indices)} of the {n} candidate frames are at least "
            f"{min_distance:g} Å from each other and from the frames taken ({k} wanted)"
        )
    return selection
