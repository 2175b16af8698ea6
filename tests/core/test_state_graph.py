"""Graphs of periodic structures built from tensors (:mod:`gptff_core.state_graph`, the TorchSim
model's path off the CPU) equal ``build_graph``'s: same bonds and triplets, energies, forces and
stresses; bad structures are refused with the Atoms path's messages, also after the cell checks
were cached. CUDA variants skip without CUDA."""

import copy

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from test_graph_torch import graph_sets

from gptff_core.errors import StructureError
from gptff_core.evaluate import evaluate
from gptff_core.graph import build_graph
from gptff_core.state_graph import PeriodicGraphBuilder

DEVICES = [
    "cpu",
    pytest.param(
        "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
    ),
]


def structures() -> list[Atoms]:
    """Rattled NaCl with unwrapped positions, a triclinic cell and one atom whose images
    reach far beyond its cell."""
    salt = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    salt.rattle(0.05, seed=1)
    salt.positions[0] += salt.cell[0] * 3 - salt.cell[2] * 2  # unwrapped by lattice vectors
    cell = [[4.1, 0.0, 0.0], [1.3, 3.9, 0.0], [0.7, 1.1, 4.4]]
    triclinic = Atoms("MgSiO", scaled_positions=[[0, 0, 0], [0.5, 0.4, 0.6], [0.2, 0.7, 0.3]],
                      cell=cell, pbc=True)  # fmt: skip
    return [salt, triclinic, bulk("Cu", "fcc", a=3.61)]


def tensors(atoms_list: list[Atoms], device: str = "cpu"):
    positions = torch.tensor(np.concatenate([a.positions for a in atoms_list]), device=device)
    cells = torch.tensor(np.stack([a.cell.array for a in atoms_list]), device=device)
    numbers = torch.tensor(np.concatenate([a.numbers for a in atoms_list]), device=device)
    return positions, cells, numbers, [len(a) for a in atoms_list]


@pytest.mark.parametrize("device", DEVICES)
def test_same_graph_and_results_as_build_graph(models, device):
    expected = build_graph(structures(), dtype=torch.float64)
    graph = PeriodicGraphBuilder().build(*tensors(structures(), device), dtype=torch.float64)
    assert graph.positions.device.type == device
    assert (graph.n_bonds, graph.n_triplets) == (expected.n_bonds, expected.n_triplets)
    assert graph_sets(graph) == graph_sets(expected)
    model = copy.deepcopy(models("gptff-v2", "float64")).to(device)
    got, want = evaluate(model, graph), evaluate(models("gptff-v2", "float64"), expected)
    for name in ("energy", "forces", "stress"):
        torch.testing.assert_close(
            getattr(got, name).cpu(), getattr(want, name), rtol=0, atol=1e-10
        )


def refusal(atoms_list: list[Atoms]) -> str:
    with pytest.raises(StructureError) as error:
        build_graph(atoms_list, labels=["system 0", "system 1"])
    return str(error.value)


@pytest.mark.parametrize("damage", ["nan", "overlap", "element", "degenerate_cell"])
def test_refuses_with_the_atoms_path_message(damage):
    builder = PeriodicGraphBuilder()
    atoms_list = structures()[:2]
    builder.build(*tensors(atoms_list), labels=["system 0", "system 1"])  # caches the cells
    bad = atoms_list[1]
    if damage == "nan":
        bad.positions[1, 0] = np.nan
    elif damage == "overlap":
        bad.positions[1] = bad.positions[0] + [0.2, 0.0, 0.0]
    elif damage == "element":
        bad.numbers[2] = 99
    else:
        bad.cell[2] = bad.cell[0] + bad.cell[1]
    expected = refusal(atoms_list)
    with pytest.raises(StructureError) as error:
        builder.build(*tensors(atoms_list), labels=["system 0", "system 1"])
    assert str(error.value) == expected and "system 1" in expected
