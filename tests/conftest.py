"""Shared fixtures. The published checkpoints come from $GPTFF_MODEL_DIR (default ../shared/models);
no test touches the network."""

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
os.environ.setdefault("GPTFF_MODEL_DIR", str(SHARED / "models"))
REFERENCE_FILE = SHARED / "reference" / "gptff_reference_shared.json"


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """The test graphs are small: they gain nothing from intra-op threads, and two OpenMP threads
    on a busy 2-core machine made evaluations up to ~20-100× slower (measured); restored after."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def reference() -> dict:
    """The published implementation's energies/forces/stresses on 12 structures."""
    return json.loads(REFERENCE_FILE.read_text())


@pytest.fixture(scope="session")
def models():
    """Loaded networks, cached per (name, dtype, smooth)."""
    from gptff_core import load_model

    cache = {}

    def get(name: str = "gptff-v2", dtype: str = "float64", smooth: bool = False):
        key = (name, dtype, smooth)
        if key not in cache:
            cache[key] = load_model(name, dtype=dtype, smooth=smooth)
        return cache[key]

    return get


@pytest.fixture(params=["native", "pytorch"])
def kernel(request, monkeypatch):
    """Run a test with the compiled kernels of gptff_core.native (which every machine that runs
    the tests must be able to build) and with the PyTorch fallback; ``kernel.called`` lists the
    compiled kernels that ran."""
    from gptff_core import native

    kernel = SimpleNamespace(name=request.param, called=[])
    if request.param == "native":
        assert native.kernels() is not None, "the fused kernels failed to build"
        call = native.call

        def counted(name, *arguments):
            kernel.called.append(name)
            call(name, *arguments)

        monkeypatch.setattr(native, "call", counted)
    else:
        monkeypatch.setattr(native, "usable", lambda *tensors: False)
    return kernel


@pytest.fixture(scope="module")
def emt_frames():
    """(train, valid): 8 and 4 EMT-labelled frames of Cu–Au cells (tests of training)."""
    from training_fixtures import emt_configurations

    from gptff_core.training import frames_from_structures

    frames = frames_from_structures(emt_configurations(12, seed=5))
    return frames[:8], frames[8:]
