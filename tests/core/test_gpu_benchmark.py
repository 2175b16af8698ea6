"""``benchmarks/gpu.py --device cpu --quick`` runs in CI: every case prints one valid JSON line per
size, with finite, positive throughput that agrees with its own steps, atoms and seconds, and the
CHGNet comparison appears exactly where CHGNet can be imported (a stand-in package here)."""

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu.py"
CASES = {"md_nvt_nose_hoover", "paper_3000_atoms", "torchsim_batched_nvt", "largest_cell"}
ASE_CASES = {"md_nvt_nose_hoover", "paper_3000_atoms"}
ATOMS_PER_CELL = 8  # the script's rocksalt NaCl conventional cell

# CHGNet (the ``bench`` extra) is not installed here: this stand-in has its import names and
# returns ASE's Lennard-Jones calculator, so the comparison path runs without the real network.
STAND_IN = """
from ase.calculators.lj import LennardJones


class CHGNet:
    @staticmethod
    def load(verbose=False):
        return None


def CHGNetCalculator(model, use_device="cpu"):
    return LennardJones(sigma=2.5, epsilon=0.01, rc=5.0)
"""


def run_benchmark(*extra: str, pythonpath: str | None = None) -> list[dict]:
    env = dict(os.environ)  # GPTFF_MODEL_DIR from tests/conftest.py
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [pythonpath, env.get("PYTHONPATH")]))
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--threads", "1", *extra],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    lines = [line for line in run.stdout.splitlines() if line.strip()]
    return [json.loads(line) for line in lines]  # every line is JSON


HAS_CHGNET = importlib.util.find_spec("chgnet") is not None  # the bench extra (not in CI)
ASE_CASES = {"md_nvt_nose_hoover", "paper_3000_atoms"}  # the cases CHGNet runs beside GPTFF


def check_record(record: dict) -> None:
    assert record["device"] == "cpu" and record["dtype"] == "float32"
    for key in ("seconds", "steps_per_s", "atom_steps_per_s", "peak_memory_MiB"):
        assert math.isfinite(record[key]) and record[key] > 0, (key, record)
    assert record["n_atoms"] % ATOMS_PER_CELL == 0 and record["n_atoms"] > 0
    # the throughput is the run's own steps, atoms and seconds
    assert record["steps_per_s"] == pytest.approx(record["steps"] / record["seconds"])
    assert record["atom_steps_per_s"] == pytest.approx(
        record["n_atoms"] * record["steps"] / record["seconds"]
    )


def test_quick_cpu_run_prints_every_case():
    records = run_benchmark()
    assert {r["case"] for r in records} == CASES
    for record in records:
        assert "skipped" not in record  # torch_sim is installed where the tests run
        check_record(record)
        ratio = record["ratio_vs_chgnet"]
        if HAS_CHGNET and record["case"] in ASE_CASES:  # GPTFF steps/s over CHGNet's
            assert math.isfinite(ratio) and ratio > 0
        else:
            assert ratio is None
    batched = [r for r in records if r["case"] == "torchsim_batched_nvt"]
    assert len({r["n_systems"] for r in batched}) > 1
    for record in batched:
        assert record["n_atoms"] % record["n_systems"] == 0  # equal systems in one batch
    (largest,) = [r for r in records if r["case"] == "largest_cell"]
    assert largest["stopped_by"] in {"max_atoms", "max_seconds", "out_of_memory"}
    md_sizes = [r["n_atoms"] for r in records if r["case"] == "md_nvt_nose_hoover"]
    assert len(set(md_sizes)) == len(md_sizes) > 1


def test_chgnet_ratio_is_reported_where_chgnet_imports(tmp_path):
    package = tmp_path / "chgnet"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "model.py").write_text(STAND_IN)
    records = run_benchmark("--cases", "md_nvt_nose_hoover", "torchsim_batched_nvt",
                            pythonpath=str(tmp_path))  # fmt: skip
    assert {r["case"] for r in records} == {"md_nvt_nose_hoover", "torchsim_batched_nvt"}
    for record in records:
        check_record(record)
        ratio = record["ratio_vs_chgnet"]
        if record["case"] in ASE_CASES:
            assert math.isfinite(ratio) and ratio > 0
        else:
            assert ratio is None  # no CHGNet TorchSim model to compare with


def test_only_memory_errors_stop_the_largest_cell_search(monkeypatch):
    """The doubling stops on an allocator failure (CUDA's or the CPU's) and re-raises any other
    error instead of reporting it as the largest cell."""
    import importlib

    import torch

    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    gpu = importlib.import_module("gpu")
    assert gpu.out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate"))
    assert gpu.out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried"))
    assert gpu.out_of_memory(MemoryError())
    assert not gpu.out_of_memory(RuntimeError("shape '[8, 3]' is invalid for input of size 9"))
