"""Batching of :func:`gptff_core.predict`: batches are bounded in atoms, bonds and triplets, a
structure above the bounds runs alone, and results (float64) and their order do not depend on how
the structures are batched."""

import importlib

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule

from gptff_core.graph import build_graph
from gptff_core.predict import batches_by_size, predict

EXACT = 1e-10  # eV, eV/Å, eV/Å³ in float64
# the module (``gptff_core.predict`` is also the name of the function in the package namespace)
predict_module = importlib.import_module("gptff_core.predict")


def members() -> list[Atoms]:
    """Small structures of different sizes, elements and periodicity, one without any bond."""
    cells = [
        bulk("Cu", "fcc", a=3.61),
        bulk("NaCl", "rocksalt", a=5.64, cubic=True),
        bulk("Si", "diamond", a=5.43),
        molecule("NH3"),
        Atoms("Fe"),  # no bond, no triplet
        bulk("MgO", "rocksalt", a=4.21).repeat((2, 1, 1)),
        bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2),  # 32 atoms, the most triplets
        bulk("Li", "bcc", a=3.51),
    ]
    for seed, atoms in enumerate(cells):
        atoms.rattle(0.03, seed=seed)
    return cells


@pytest.fixture(scope="module")
def counts() -> list[tuple[int, int, int]]:
    """(atoms, bonds, triplets) of each member."""
    graphs = [build_graph([atoms]) for atoms in members()]
    return [(g.positions.shape[0], g.n_bonds, g.n_triplets) for g in graphs]


@pytest.fixture
def batches(monkeypatch) -> list[tuple[int, int, int, int]]:
    """(structures, atoms, bonds, triplets) of every graph that ``predict`` evaluates."""
    seen = []
    evaluate = predict_module.evaluate

    def recording(model, graph, **kwargs):
        sizes = (graph.n_structures, graph.positions.shape[0], graph.n_bonds, graph.n_triplets)
        seen.append(sizes)
        return evaluate(model, graph, **kwargs)

    monkeypatch.setattr(predict_module, "evaluate", recording)
    return seen


@pytest.fixture(scope="module")
def alone(models):
    """Each member evaluated on its own."""
    model = models("gptff-v2", "float64")
    return [predict([atoms], model, dtype="float64") for atoms in members()]


def assert_matches_alone(result, alone, order):
    """``result`` (of ``members()`` in ``order``) equals the members' results evaluated alone."""
    for slot, index in enumerate(order):
        expected = alone[index]
        assert abs(result.energies[slot] - expected.energies[0]) < EXACT
        np.testing.assert_allclose(result.forces[slot], expected.forces[0], rtol=0, atol=EXACT)
        if expected.stresses[0] is None:
            assert result.stresses[slot] is None
        else:
            np.testing.assert_allclose(result.stresses[slot], expected.stresses[0], 0, EXACT)


# ------------------------------------------------------------------------------ grouping
def test_batches_by_size_bounds_every_component():
    sizes = [(2, 10), (2, 10), (1, 50), (1, 1), (9, 1), (1, 1)]
    assert list(batches_by_size(sizes, (4, 60))) == [[0, 1], [2, 3], [4], [5]]
    assert list(batches_by_size(sizes, (100, 1000))) == [[0, 1, 2, 3, 4, 5]]
    assert list(batches_by_size(sizes, (1, 1))) == [[0], [1], [2], [3], [4], [5]]


def test_batches_by_size_reads_sizes_lazily():
    read = []

    def sizes():
        for size in [(3,), (3,), (3,)]:
            read.append(size)
            yield size

    groups = batches_by_size(sizes(), (4,))
    assert next(groups) == [0] and len(read) == 2  # the second item did not fit
    assert list(groups) == [[1], [2]]


# --------------------------------------------------------------------------- predict
def test_default_limits_give_one_batch(models, batches, alone, counts):
    result = predict(members(), models("gptff-v2", "float64"), dtype="float64")
    assert batches == [(len(counts), *np.sum(counts, axis=0))]
    assert_matches_alone(result, alone, range(len(counts)))


def test_few_triplets_per_batch_split_the_structures(models, batches, alone, counts):
    limit = 1300  # more than any member but the 32-atom Cu cell has
    big = int(np.argmax([c[2] for c in counts]))
    assert counts[big][2] > limit >= max(c[2] for i, c in enumerate(counts) if i != big)
    result = predict(
        members(), models("gptff-v2", "float64"), dtype="float64", max_triplets_per_batch=limit
    )
    expected = list(batches_by_size([c[2:] for c in counts], (limit,)))
    assert len(expected) > 2 and [big] in expected  # the big cell ran alone
    assert [b[0] for b in batches] == [len(g) for g in expected]
    assert all(b[3] <= limit or b[0] == 1 for b in batches)
    assert_matches_alone(result, alone, range(len(counts)))


def test_one_triplet_per_batch_runs_each_structure_alone(models, batches, alone, counts):
    result = predict(
        members(), models("gptff-v2", "float64"), dtype="float64", max_triplets_per_batch=1
    )
    # the bond-free atom too: the structure before it is already above the bound
    assert [b[0] for b in batches] == [1] * len(counts)
    assert_matches_alone(result, alone, range(len(counts)))


def test_few_bonds_per_batch_split_the_structures(models, batches, alone, counts):
    limit = 400
    result = predict(
        members(), models("gptff-v2", "float64"), dtype="float64", max_bonds_per_batch=limit
    )
    expected = list(batches_by_size([c[1:2] for c in counts], (limit,)))
    assert 2 < len(expected) < len(counts)
    assert [b[0] for b in batches] == [len(g) for g in expected]
    assert_matches_alone(result, alone, range(len(counts)))


def test_input_order_is_kept(models, batches, alone, counts):
    order = [6, 3, 0, 7, 4, 1, 5, 2]
    shuffled = [members()[i] for i in order]
    result = predict(
        shuffled, models("gptff-v2", "float64"), dtype="float64", max_triplets_per_batch=150
    )
    assert len(batches) > 2
    assert [len(f) for f in result.forces] == [counts[i][0] for i in order]
    assert_matches_alone(result, alone, order)
