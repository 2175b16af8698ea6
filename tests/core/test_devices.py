"""Where the network runs: ``device="auto"`` is CUDA when there is one, else the CPU; a network
passed in keeps its device and dtype (it used to be copied to the CPU, so a job configured for a
GPU evaluated there), and the caller's network is never changed."""

import pytest
import torch
from ase.build import bulk
from training_fixtures import TINY

from gptff_core import GPTFF, GPTFFCalculator, load_model, predict
from gptff_core.devices import resolve_device


def test_auto_is_cuda_when_available_else_cpu():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    atoms = bulk("Cu", "fcc", a=3.6)
    atoms.calc = GPTFFCalculator(device="auto")
    assert next(atoms.calc.model.parameters()).device.type == expected
    assert predict(atoms, device="auto").energies.shape == (1,)


def test_a_network_passed_in_keeps_its_device_and_dtype():
    """The meta device stands in for an accelerator: no CUDA is needed to see where it went."""
    with torch.device("meta"):
        network = GPTFF(TINY).to(torch.float64)
    loaded = load_model(network)
    parameter = next(loaded.parameters())
    assert parameter.device.type == "meta" and parameter.dtype == torch.float64
    assert loaded is not network  # a copy: the caller's network is not changed
    assert next(network.parameters()).device.type == "meta"
    on_cpu = GPTFF(TINY)  # and an explicit device or dtype is honoured
    moved = next(load_model(on_cpu, device="meta", dtype="float64").parameters())
    assert moved.device.type == "meta" and moved.dtype == torch.float64
    assert next(on_cpu.parameters()).device.type == "cpu"


def test_a_name_without_a_device_loads_on_the_cpu():
    parameter = next(load_model("gptff-v2").parameters())
    assert parameter.device.type == "cpu" and parameter.dtype == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_cuda_network_passed_in_stays_on_cuda():
    network = load_model("gptff-v2", device="cuda", dtype="float64")
    atoms = bulk("Cu", "fcc", a=3.6)
    atoms.calc = GPTFFCalculator(model=network)
    assert next(atoms.calc.model.parameters()).device.type == "cuda"
    assert torch.isfinite(torch.tensor(atoms.get_potential_energy()))
