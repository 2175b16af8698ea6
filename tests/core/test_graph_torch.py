"""The torch graph builder gives the numpy builder's graph (bonds, triplets, homed positions) and
the same energy, forces and stress; CUDA variants skip without CUDA."""

import dataclasses

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, fcc111, molecule

from gptff_core.errors import GPTFFInputError, StructureError
from gptff_core.evaluate import evaluate
from gptff_core.graph import build_graph, find_triplets
from gptff_core.graph_torch import build_graph_torch, triplets_torch

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
    ),
]


def triclinic() -> Atoms:
    cell = [[4.1, 0.0, 0.0], [1.3, 3.9, 0.0], [0.7, 1.1, 4.4]]
    frac = [[0.0, 0.0, 0.0], [0.5, 0.4, 0.6], [0.2, 0.7, 0.3]]
    return Atoms("MgSiO", scaled_positions=frac, cell=cell, pbc=True)


def rattled(atoms: Atoms, seed: int = 0) -> Atoms:
    atoms = atoms.copy()
    atoms.rattle(0.05, seed=seed)
    return atoms


def slab() -> Atoms:
    atoms = fcc111("Al", size=(2, 2, 3), vacuum=30.0)  # gap wider than the narrowing threshold
    return rattled(atoms, 3)


CASES = {
    "NaCl": lambda: [rattled(bulk("NaCl", "rocksalt", a=5.64, cubic=True))],
    "Cu_supercell": lambda: [rattled(bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2), 1)],
    "triclinic": lambda: [triclinic()],
    "many_images": lambda: [bulk("Cu", "fcc", a=3.61)],  # 1 atom, images ≫ cell
    "batch_of_two": lambda: [
        bulk("Si", "diamond", a=5.43),
        rattled(bulk("NaCl", "rocksalt", a=5.64), 2),
    ],
    "slab_vacuum": lambda: [slab()],
    "molecule_no_cell": lambda: [molecule("CH3CH2OH")],
}


def bond_keys(graph, bonds: torch.Tensor) -> list[tuple]:
    shift = graph.bond_shift[bonds].round().long().cpu().tolist()
    centre = graph.bond_centre[bonds].cpu().tolist()
    neighbour = graph.bond_neighbour[bonds].cpu().tolist()
    return [(i, j, tuple(s)) for i, j, s in zip(centre, neighbour, shift, strict=True)]


def graph_sets(graph) -> tuple[list, list]:
    """Bonds (i, j, S) and triplets (bond a, bond b), sorted: independent of the bond order."""
    bonds = bond_keys(graph, torch.arange(graph.n_bonds, device=graph.bond_centre.device))
    short = graph.short_bonds
    first = bond_keys(graph, short[graph.triplet_first])
    second = bond_keys(graph, short[graph.triplet_second])
    return sorted(bonds), sorted(zip(first, second, strict=True))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_same_graph_as_numpy_builder(case, device):
    structures = CASES[case]()
    expected = build_graph(structures, dtype=torch.float64)
    graph = build_graph_torch(structures, dtype=torch.float64, device=device)
    assert graph.n_bonds == expected.n_bonds
    assert graph.n_triplets == expected.n_triplets
    assert graph.short_bonds.numel() == expected.short_bonds.numel()
    bonds, triplets = graph_sets(graph)
    expected_bonds, expected_triplets = graph_sets(expected)
    assert len(set(bonds)) == len(bonds)
    assert bonds == expected_bonds
    assert triplets == expected_triplets
    for name in ("numbers", "cells", "atom_structure", "atoms_per_structure"):
        assert torch.equal(getattr(graph, name).cpu(), getattr(expected, name)), name
    # Homed positions: the molecule's centring sums in another order (last-bit differences).
    np.testing.assert_allclose(graph.positions.cpu(), expected.positions, rtol=0, atol=1e-12)
    assert torch.equal(graph.volumes.cpu(), expected.volumes)
    assert graph.positions.device.type == torch.device(device).type


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", ["NaCl", "triclinic", "batch_of_two", "slab_vacuum"])
def test_same_energy_forces_stress(models, case, device):
    structures = CASES[case]()
    model = models("gptff-v2", "float64")
    expected = evaluate(model, build_graph(structures, dtype=torch.float64))
    graph = build_graph_torch(structures, dtype=torch.float64, device=device)
    result = evaluate(model.to(device), graph)
    model.to("cpu")
    np.testing.assert_allclose(result.energy.cpu(), expected.energy, rtol=0, atol=1e-10)
    np.testing.assert_allclose(result.forces.cpu(), expected.forces, rtol=0, atol=1e-10)
    np.testing.assert_allclose(result.stress.cpu(), expected.stress, rtol=0, atol=1e-10)


def test_float32_graph_matches():
    structures = CASES["Cu_supercell"]()
    expected = build_graph(structures)
    graph = build_graph_torch(structures)
    assert graph.positions.dtype == graph.bond_shift.dtype == torch.float32
    np.testing.assert_allclose(graph.positions, expected.positions, rtol=0, atol=1e-6)
    assert graph_sets(graph) == graph_sets(expected)


@pytest.mark.parametrize("sizes", [[], [1], [2, 1, 3], [4, 4]])
def test_triplets_match_numpy(sizes):
    """Groups of n short bonds give n(n−1) triplets, as find_triplets does (plus long bonds)."""
    rng = np.random.default_rng(len(sizes))
    centre = np.repeat(np.arange(len(sizes)), sizes).astype(np.int64)
    length = rng.uniform(1.0, 3.4, centre.size)
    long_bonds = rng.random(centre.size) < 0.3
    length[long_bonds] = 4.5
    expected = find_triplets(centre, length)
    result = triplets_torch(torch.from_numpy(centre), torch.from_numpy(length))
    for got, want in zip(result, expected, strict=True):
        np.testing.assert_array_equal(got.numpy(), want)


def test_refuses_what_build_graph_refuses():
    with pytest.raises(GPTFFInputError):
        build_graph_torch([])
    with pytest.raises(GPTFFInputError):
        build_graph_torch(bulk("Cu"))
    close = Atoms("Cu2", positions=[[0, 0, 0], [0.3, 0, 0]], cell=[6, 6, 6], pbc=True)
    with pytest.raises(StructureError) as numpy_error:
        build_graph([bulk("Cu"), close])
    with pytest.raises(StructureError) as torch_error:
        build_graph_torch([bulk("Cu"), close])
    assert str(torch_error.value) == str(numpy_error.value)


def test_published_bond_and_triplet_counts(reference):
    """The 12 reference structures (slab with vacuum, molecule in a box, triclinic …), rounded
    to float32 as the reference generator did: counts as published."""
    for name, entry in reference["structures"].items():
        atoms = Atoms(
            numbers=entry["numbers"],
            positions=np.asarray(entry["positions"], dtype=np.float32),
            cell=np.asarray(entry["cell"], dtype=np.float32),
            pbc=entry["pbc"],
        )
        graph = build_graph_torch([atoms])
        assert (graph.n_bonds, graph.n_triplets) == (entry["n_pairs"], entry["n_triplets"]), name


def test_both_builders_record_the_largest_structure(models):
    """The size the transformer pads to is known on the host (no device read per forward);
    a graph without it gives the same energies."""
    structures = [*CASES["batch_of_two"](), bulk("Cu", "fcc", a=3.61, cubic=True)]
    model = models("gptff-v2", "float64")
    for build in (build_graph, build_graph_torch):
        graph = build(structures, dtype=torch.float64)
        assert graph.largest_structure == max(len(a) for a in structures)
        unknown = dataclasses.replace(graph, largest_structure=None)
        torch.testing.assert_close(
            evaluate(model, graph).energy, evaluate(model, unknown).energy, rtol=0, atol=1e-12
        )
