"""Frame selection for active learning (gptff_flows.analysis.selection): the structural distance
against analytic cases, greedy selection by uncertainty that skips near-duplicates, farthest-point
sampling without scores, frames taken earlier, and the refusals."""

import math

import numpy as np
import pytest
from ase.build import bulk

from gptff_core.errors import GPTFFInputError
from gptff_flows.analysis.selection import frame_distance, select_frames


def cell(n_repeat=(2, 1, 1)):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(n_repeat)
    atoms.set_chemical_symbols(["Au"] + ["Cu"] * (len(atoms) - 1))
    return atoms


def moved(atoms, index, vector):
    """``atoms`` with atom ``index`` displaced by ``vector`` (Å)."""
    out = atoms.copy()
    out.positions[index] += vector
    return out


def test_distance_of_one_displaced_atom_is_the_analytic_rms():
    """One of N atoms moved by v: after removing the mean displacement v/N, the mean squared
    displacement is |v|²((1 − 1/N)² + (N − 1)/N²)/N = |v|²(N − 1)/N²."""
    atoms = cell()
    n = len(atoms)
    v = np.array([0.3, -0.2, 0.1])
    expected = np.linalg.norm(v) * math.sqrt(n - 1) / n
    assert frame_distance(atoms, moved(atoms, 3, v)) == pytest.approx(expected, rel=1e-12)
    assert frame_distance(moved(atoms, 3, v), atoms) == pytest.approx(expected, rel=1e-12)


def test_distance_ignores_translations_and_lattice_vectors_and_counts_the_cell():
    atoms = cell()
    shifted = atoms.copy()
    shifted.positions += [0.7, -1.3, 2.9]
    assert frame_distance(atoms, shifted) == pytest.approx(0.0, abs=1e-12)
    through_boundary = moved(atoms, 2, atoms.cell.array[0])  # one atom by a lattice vector
    assert frame_distance(atoms, through_boundary) == pytest.approx(0.0, abs=1e-12)
    # a uniform strain with the atoms scaled: each atom's fractional position is unchanged, so
    # only the cell term remains: |Δcell|²_F / 3
    strained = atoms.copy()
    strained.set_cell(atoms.cell.array * 1.02, scale_atoms=True)
    cell_term = np.sum((strained.cell.array - atoms.cell.array) ** 2) / 3
    assert frame_distance(atoms, strained) == pytest.approx(math.sqrt(cell_term), rel=1e-9)
    other = atoms.copy()
    other.set_chemical_symbols(["Cu"] * len(atoms))
    assert frame_distance(atoms, other) == math.inf
    assert frame_distance(atoms, cell((1, 1, 1))) == math.inf


def test_greedy_selection_takes_the_most_uncertain_and_skips_near_duplicates():
    """Frames 0..5, each atom 3 moved by its own vector; frame 4 is frame 1 moved by 0.01 Å
    more (a near-duplicate of the most uncertain frame), frame 5 the base cell. The three most
    uncertain mutually different frames are 1, 3, 2 (4 skipped for 1); computed from the scores
    and the analytic distances independently of the selection's code."""
    atoms = cell()
    vectors = [[0.0, 0.0, 0.2], [0.3, 0.0, 0.0], [0.0, 0.3, 0.0], [0.0, -0.3, 0.3]]
    frames = [moved(atoms, 3, v) for v in vectors]
    frames.append(moved(frames[1], 3, [0.01, 0.0, 0.0]))
    frames.append(atoms.copy())
    scores = np.array([0.10, 0.90, 0.40, 0.50, 0.85, 0.05])  # eV/Å
    min_distance = 0.05  # Å; frame 4 is 0.01·sqrt(N-1)/N ≈ 0.0047 Å from frame 1

    expected, picked = [], []
    for index in np.argsort(-scores, kind="stable"):
        if len(expected) == 3:
            break
        if all(frame_distance(frames[index], frames[j]) >= min_distance for j in picked):
            expected.append(int(index))
            picked.append(index)
    assert expected == [1, 3, 2]

    selection = select_frames(frames, 3, min_distance, scores=scores)
    assert selection.indices == expected
    assert selection.skipped == [(4, 1)]
    assert selection.reason is None
    assert selection.distances[0] == math.inf
    assert selection.distances[1] == pytest.approx(frame_distance(frames[3], frames[1]))
    # ties go to the earlier frame
    assert select_frames(frames, 2, 0.0, scores=np.ones(6)).indices == [0, 1]


def test_frames_taken_earlier_exclude_their_neighbours():
    atoms = cell()
    frames = [moved(atoms, 3, [0.1 * k, 0.0, 0.0]) for k in range(1, 5)]
    taken = [moved(atoms, 3, [0.4, 0.0, 0.0])]  # the same as frames[3]
    selection = select_frames(frames, 2, 0.02, scores=[0.1, 0.2, 0.3, 0.4], taken=taken)
    assert selection.indices == [2, 1]
    assert selection.skipped == [(3, "taken 0")]


def test_farthest_point_sampling_without_scores():
    """Atom 3 moved by 0, 0.1, ... 0.6 Å along x: distances are proportional to the
    difference of the displacements, so farthest-point sampling from frame 0 takes frame 6,
    then frame 3 (0.3 Å from both ends); with min_distance above 0.15·sqrt(N−1)/N Å it stops
    there and says why."""
    atoms = cell()
    frames = [moved(atoms, 3, [0.1 * k, 0.0, 0.0]) for k in range(7)]
    assert select_frames(frames, 3, 0.0).indices == [0, 6, 3]
    n = len(atoms)
    unit = math.sqrt(n - 1) / n  # Å of distance per Å of displacement
    selection = select_frames(frames, 5, 0.2 * unit)
    assert selection.indices == [0, 6, 3]
    assert "only 3 of the 7" in selection.reason
    assert {i for i, _ in selection.skipped} == {1, 2, 4, 5}
    # with a taken frame at the start, the farthest from it comes first
    assert select_frames(frames, 1, 0.0, taken=[atoms]).indices == [6]


def test_bad_arguments_are_refused():
    frames = [cell(), moved(cell(), 1, [0.2, 0, 0])]
    with pytest.raises(GPTFFInputError, match="k"):
        select_frames(frames, 0, 0.1)
    with pytest.raises(GPTFFInputError, match="min_distance"):
        select_frames(frames, 1, -0.1)
    with pytest.raises(GPTFFInputError, match="one score"):
        select_frames(frames, 1, 0.1, scores=[1.0])
    with pytest.raises(GPTFFInputError, match="NaN"):
        select_frames(frames, 1, 0.1, scores=[1.0, float("nan")])
