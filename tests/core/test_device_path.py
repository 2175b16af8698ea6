"""The device path, where graphs are built in torch on the network's device, run on the CPU:
``GPTFF_GRAPH_BUILDER=torch`` sends ``predict``, the calculator (with and without a Verlet skin)
and the TorchSim model through the code every non-CPU device takes, and their results equal the
numpy path's in float64. The CUDA variants compare a CUDA run with the CPU and skip without CUDA.
"""

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.build import bulk, fcc111, molecule
from ase.md.verlet import VelocityVerlet

from gptff_core import GPTFFCalculator, GPTFFInputError, predict
from gptff_core.devices import builds_on_device

EXACT = 1e-10  # eV, eV/Å, eV/Å³: the same graph, summed in another order
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def rattled(atoms: Atoms, seed: int) -> Atoms:
    atoms = atoms.copy()
    atoms.rattle(0.05, seed=seed)
    return atoms


def structures() -> list[Atoms]:
    """Bulk, a supercell, a slab with vacuum and a molecule without a cell (no stress)."""
    return [
        rattled(bulk("NaCl", "rocksalt", a=5.64, cubic=True), 1),
        rattled(bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2), 2),
        rattled(fcc111("Al", size=(2, 2, 3), vacuum=8.0), 3),
        molecule("CH4"),
    ]


def assert_same_predictions(got, expected) -> None:
    np.testing.assert_allclose(got.energies, expected.energies, rtol=0, atol=EXACT)
    for f_got, f_expected in zip(got.forces, expected.forces, strict=True):
        np.testing.assert_allclose(f_got, f_expected, rtol=0, atol=EXACT)
    for s_got, s_expected in zip(got.stresses, expected.stresses, strict=True):
        assert (s_got is None) == (s_expected is None)
        if s_got is not None:
            np.testing.assert_allclose(s_got, s_expected, rtol=0, atol=EXACT)


def nve_positions(calculator: GPTFFCalculator, steps: int = 40) -> np.ndarray:
    """Positions (Å) of NVE MD of rattled NaCl from 2000 K velocities: atoms move more than
    half a 1 Å skin, bonds cross both cutoffs."""
    atoms = rattled(bulk("NaCl", "rocksalt", a=5.64, cubic=True), 1)
    thermal_speed = np.sqrt(units.kB * 2000 / atoms.get_masses())
    rng = np.random.default_rng(7)
    atoms.set_velocities(rng.normal(size=(len(atoms), 3)) * thermal_speed[:, None])
    atoms.calc = calculator
    dynamics = VelocityVerlet(atoms, timestep=2 * units.fs)
    positions = []
    dynamics.attach(lambda: positions.append(atoms.positions.copy()))
    dynamics.run(steps)
    return np.array(positions)


def test_graphs_are_built_where_the_network_runs(monkeypatch):
    monkeypatch.delenv("GPTFF_GRAPH_BUILDER", raising=False)
    assert not builds_on_device("cpu")
    assert builds_on_device("cuda") and builds_on_device(torch.device("meta"))
    monkeypatch.setenv("GPTFF_GRAPH_BUILDER", "torch")
    assert builds_on_device("cpu")
    monkeypatch.setenv("GPTFF_GRAPH_BUILDER", "numpy")
    assert not builds_on_device("cuda")
    monkeypatch.setenv("GPTFF_GRAPH_BUILDER", "gpu")
    with pytest.raises(GPTFFInputError, match="GPTFF_GRAPH_BUILDER"):
        builds_on_device("cpu")


def test_predict_on_the_device_path_equals_the_host_path(models, monkeypatch):
    """Batches split by a small atom limit, so stacking several structures is covered."""
    model = models("gptff-v2", "float64")
    monkeypatch.setenv("GPTFF_GRAPH_BUILDER", "numpy")
    expected = predict(structures(), model, max_atoms_per_batch=40)
    monkeypatch.setenv("GPTFF_GRAPH_BUILDER", "torch")
    assert_same_predictions(predict(structures(), model, max_atoms_per_batch=40), expected)


@pytest.mark.parametrize("skin", [0.0, 1.0])
def test_md_on_the_device_path_follows_the_host_path(models, monkeypatch, skin):
    model = models("gptff-v2", "float64")
    monkeypatch.setenv("GPTFF_GRAPH_BUILDER", "numpy")
    expected = nve_positions(GPTFFCalculator(model))
    monkeypatch.setenv("GPTFF_GRAPH_BUILDER", "torch")
    calculator = GPTFFCalculator(model, skin=skin)
    np.testing.assert_allclose(nve_positions(calculator), expected, rtol=0, atol=EXACT)
    if skin:
        assert 1 < calculator.graph_builder.n_rebuilds < 40  # searched again, and reused


def test_torchsim_model_on_the_device_path_equals_the_host_path(models, monkeypatch):
    ts = pytest.importorskip("torch_sim")
    from gptff_core.torchsim import GPTFFTorchSimModel

    model = GPTFFTorchSimModel(models("gptff-v2", "float64"))
    state = ts.io.atoms_to_state(structures()[:2], device="cpu", dtype=torch.float64)
    monkeypatch.setenv("GPTFF_GRAPH_BUILDER", "numpy")
    expected = model(state)
    monkeypatch.setenv("GPTFF_GRAPH_BUILDER", "torch")
    got = model(state)
    for key in ("energy", "forces", "stress"):
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=EXACT)


@needs_cuda
def test_cuda_equals_cpu():
    """predict, MD with a skin and the TorchSim model on CUDA against the CPU, float64."""
    cpu = predict(structures(), "gptff-v2", dtype="float64")
    assert_same_predictions(predict(structures(), "gptff-v2", dtype="float64", device="cuda"), cpu)
    expected = nve_positions(GPTFFCalculator("gptff-v2", dtype="float64"))
    on_cuda = GPTFFCalculator("gptff-v2", dtype="float64", device="cuda", skin=1.0)
    np.testing.assert_allclose(nve_positions(on_cuda), expected, rtol=0, atol=1e-9)
