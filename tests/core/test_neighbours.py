"""Graph reuse (:mod:`gptff_core.neighbours`), in float64: the graph of a reused neighbour list is
the graph ``build_graph`` gives, bond for bond and triplet for triplet, with the same energy,
forces and stress, whether or not a step searches again; under moving atoms, a changing cell
(NPT-like), wrapped positions and mixed periodicity; the search is repeated exactly when the bound
says so; MD with a skin follows the trajectory of MD without one.
"""

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.build import bulk, fcc111
from ase.md.verlet import VelocityVerlet

from gptff_core import GPTFFCalculator, GPTFFInputError, StructureError
from gptff_core.evaluate import evaluate
from gptff_core.graph import build_graph
from gptff_core.neighbours import VerletGraphBuilder

F64 = torch.float64
EXACT = 1e-12  # eV, eV/Å, eV/Å³: the same graph up to the order of summation
SKIN = 1.0  # Å
SEARCH_RADIUS = 5.0 + SKIN  # Å


# ------------------------------------------------------------------------------ structures
def nacl() -> Atoms:
    """Conventional rocksalt NaCl (8 atoms, a cell smaller than the search radius), rattled."""
    atoms = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    atoms.rattle(0.05, seed=1)
    return atoms


def triclinic() -> Atoms:
    """TiO₂ in a sheared 2×1×1 cell, rattled."""
    cell = [[4.2, 0.1, 0.0], [1.3, 3.9, 0.2], [0.4, 0.8, 4.4]]
    frac = [[0.0, 0.0, 0.0], [0.3, 0.3, 0.1], [0.7, 0.6, 0.55]]
    atoms = Atoms("TiO2", scaled_positions=frac, cell=cell, pbc=True) * (2, 1, 1)
    atoms.rattle(0.05, seed=2)
    return atoms


def slab() -> Atoms:
    """A 2×2×3 Cu(111) slab, pbc=(True, True, False), rattled."""
    atoms = fcc111("Cu", size=(2, 2, 3), vacuum=6.0)
    atoms.rattle(0.05, seed=3)
    return atoms


def cluster() -> Atoms:
    """An 8-atom NaCl cluster: no cell, no periodicity."""
    atoms = nacl()
    atoms.pbc = False
    atoms.cell = None
    return atoms


def copper() -> Atoms:
    """Conventional fcc Cu 2×2×2 (32 atoms)."""
    return bulk("Cu", "fcc", a=3.61, cubic=True) * 2


STRUCTURES = {"nacl": nacl, "triclinic": triclinic, "slab": slab, "cluster": cluster}


# ----------------------------------------------------------------------------- comparison
def bonds_and_triplets(graph) -> tuple[set, set]:
    """The bonds ``(i, j, S)`` and triplets ``(bond a, bond b)`` of a graph, as sets."""
    shifts = graph.bond_shift.round().long().tolist()
    bonds = [
        (i, j, tuple(s))
        for i, j, s in zip(
            graph.bond_centre.tolist(), graph.bond_neighbour.tolist(), shifts, strict=True
        )
    ]
    short = graph.short_bonds.tolist()
    triplets = {
        (bonds[short[a]], bonds[short[b]])
        for a, b in zip(graph.triplet_first.tolist(), graph.triplet_second.tolist(), strict=True)
    }
    return set(bonds), triplets


def assert_same_graph(graph, atoms: Atoms, model=None) -> None:
    """``graph`` has the bonds and triplets of ``build_graph([atoms])`` (and, given a model, the
    same energy, forces and stress)."""
    reference = build_graph([atoms], dtype=F64)
    bonds, triplets = bonds_and_triplets(graph)
    expected_bonds, expected_triplets = bonds_and_triplets(reference)
    assert bonds == expected_bonds
    assert len(bonds) == graph.n_bonds
    assert triplets == expected_triplets
    assert graph.n_triplets == reference.n_triplets
    np.testing.assert_array_equal(graph.positions, reference.positions)
    np.testing.assert_array_equal(graph.cells, reference.cells)
    if model is None:
        return
    stress = bool(reference.volumes[0] > 0)
    got = evaluate(model, graph, stress=stress)
    expected = evaluate(model, reference, stress=stress)
    assert abs(got.energy.item() - expected.energy.item()) < EXACT
    np.testing.assert_allclose(got.forces, expected.forces, rtol=0, atol=EXACT)
    if stress:
        np.testing.assert_allclose(got.stress, expected.stress, rtol=0, atol=EXACT)


def random_walk(atoms: Atoms, steps: int, step: float, strain: float, seed: int):
    """Yield ``atoms`` after each of ``steps`` random moves: every atom by up to ``step`` Å per
    direction and, when periodic, the periodic cell vectors by a random symmetric strain of up
    to ``strain`` that carries the atoms along."""
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        atoms.positions += rng.uniform(-step, step, size=(len(atoms), 3))
        if atoms.pbc.any() and strain:
            epsilon = rng.uniform(-strain, strain, size=(3, 3))
            deformation = np.eye(3) + (epsilon + epsilon.T) / 2
            cell = atoms.cell.array.copy()
            cell[atoms.pbc] = cell[atoms.pbc] @ deformation
            atoms.positions = atoms.positions @ deformation
            atoms.cell = cell
        yield atoms


# ----------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("strain", [0.0, 0.005], ids=["fixed-cell", "strained"])
@pytest.mark.parametrize("name", list(STRUCTURES))
def test_reused_graph_equals_a_fresh_graph(models, name, strain):
    model = models("gptff-v2", "float64")
    builder = VerletGraphBuilder(SKIN)
    searched = []
    walk = random_walk(STRUCTURES[name](), steps=10, step=0.2, strain=strain, seed=5)
    for step, atoms in enumerate(walk):
        before = builder.n_rebuilds
        graph = builder.build(atoms, dtype=F64)
        searched.append(builder.n_rebuilds > before)
        assert_same_graph(graph, atoms, model if step % 2 else None)
    assert searched[0]
    assert not all(searched[1:]), "no step reused the neighbour list"
    assert any(searched[1:]), "no step searched again: the walk is too short to test the bound"


def test_isotropic_compression_searches_again_when_the_bound_says_so(models):
    """A 1 % compression per step that carries the atoms along: the pairs outside the list come
    closer by at most (1 − 0.99ᵏ)·6 Å after k steps, more than the 1 Å skin from k = 19 on.
    Expansion brings no pair closer, so it never searches."""
    model = models("gptff-v2", "float64")
    atoms = nacl()
    builder = VerletGraphBuilder(SKIN)
    builder.build(atoms, dtype=F64)
    since_search = 0
    for scale in [0.99] * 25 + [1.01] * 15:
        atoms.set_cell(atoms.cell.array * scale, scale_atoms=True)
        since_search += 1
        expected_search = scale < 1 and (1 - 0.99**since_search) * SEARCH_RADIUS > SKIN
        before = builder.n_rebuilds
        graph = builder.build(atoms, dtype=F64)
        assert (builder.n_rebuilds > before) == expected_search, since_search
        if expected_search:
            since_search = 0
        if since_search % 6 == 0:  # the network on a few steps, the graph on all
            assert_same_graph(graph, atoms, model)
        else:
            assert_same_graph(graph, atoms)
    assert builder.n_rebuilds == 2


def test_cell_change_without_moving_the_atoms():
    """The cell alone compressed: relative to the cell, atoms up to 9.4 Å from the origin move
    by up to 9.4 Å × the strain, which the bound counts. 1 %: 2 × 0.094 + 0.01 × 6 < 1 Å, the list
    is kept; 5 % in all: 2 × 0.47 + 0.05 × 6 > 1 Å, it is not."""
    atoms = copper()
    builder = VerletGraphBuilder(SKIN)
    builder.build(atoms, dtype=F64)
    for scale, searches in [(0.99, 1), (0.96, 2)]:
        atoms.set_cell(atoms.cell.array * scale, scale_atoms=False)
        assert_same_graph(builder.build(atoms, dtype=F64), atoms)
        assert builder.n_rebuilds == searches


def test_wrapped_positions_stay_exact():
    atoms = nacl()
    builder = VerletGraphBuilder(SKIN)
    builder.build(atoms, dtype=F64)
    atoms.positions[0] -= [0.2, 0.0, 0.0]  # out of the cell through the x = 0 face
    atoms.wrap()
    assert_same_graph(builder.build(atoms, dtype=F64), atoms)
    assert builder.n_rebuilds == 2  # the wrapped atom moved by a lattice vector


def test_new_atoms_search_again():
    atoms = nacl()
    other_elements = atoms.copy()
    other_elements.numbers = [19, 35] * 4  # KBr on the same sites
    non_periodic = atoms.copy()
    non_periodic.pbc = False
    sequence = [
        ("first call", atoms, 1),
        ("same atoms", atoms.copy(), 1),
        ("fewer atoms", atoms[:-1], 2),
        ("other elements", other_elements, 3),
        ("NaCl again", atoms.copy(), 4),
        ("other periodicity", non_periodic, 5),
    ]
    builder = VerletGraphBuilder(SKIN)
    for name, structure, searches in sequence:
        assert_same_graph(builder.build(structure, dtype=F64), structure)
        assert builder.n_rebuilds == searches, name


def test_every_call_is_validated():
    """The reused list still refuses overlapping atoms and NaN positions."""
    atoms = Atoms("Cu2", positions=[[0, 0, 0], [0.9, 0, 0]], cell=[8, 8, 8], pbc=True)
    builder = VerletGraphBuilder(SKIN)
    builder.build(atoms)
    atoms.positions[1, 0] = 0.45  # moved by 0.45 Å: within the skin, so no new search
    with pytest.raises(StructureError, match="overlapping atoms"):
        builder.build(atoms)
    assert builder.n_rebuilds == 1
    atoms.positions[1, 0] = np.nan
    with pytest.raises(StructureError, match="NaN"):
        builder.build(atoms)


@pytest.mark.parametrize("skin", [0.0, -1.0, float("nan"), float("inf")])
def test_skin_must_be_positive(skin):
    with pytest.raises(GPTFFInputError, match="skin"):
        VerletGraphBuilder(skin)


def test_calculator_skin_negative_is_refused(models):
    with pytest.raises(GPTFFInputError, match="skin"):
        GPTFFCalculator(models("gptff-v2", "float64"), skin=-0.5)


def test_md_with_a_skin_follows_md_without(models):
    """NVE MD of NaCl at 2000 K (atoms move more than half the skin, bonds cross both cutoffs):
    the same trajectory with graph reuse as with a new graph every step."""
    model = models("gptff-v2", "float64")
    trajectories, calculators = [], []
    for skin in (0.0, SKIN):
        atoms = nacl()
        thermal_speed = np.sqrt(units.kB * 2000 / atoms.get_masses())  # Å/(ASE time unit)
        rng = np.random.default_rng(7)
        atoms.set_velocities(rng.normal(size=(len(atoms), 3)) * thermal_speed[:, None])
        atoms.calc = GPTFFCalculator(model, dtype="float64", skin=skin)
        dynamics = VelocityVerlet(atoms, timestep=2 * units.fs)
        positions = []
        dynamics.attach(lambda a=atoms, p=positions: p.append(a.positions.copy()))
        dynamics.run(50)
        trajectories.append(np.array(positions))
        calculators.append(atoms.calc)
    fresh, reused = trajectories
    assert calculators[0].graph_builder is None
    np.testing.assert_allclose(reused, fresh, rtol=0, atol=1e-10)
    assert 1 < calculators[1].graph_builder.n_rebuilds <= 10
