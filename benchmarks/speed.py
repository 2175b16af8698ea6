"""GPTFF v2 against CHGNet 0.3 on CPU: energy + forces + stress of four ~500-atom cells.

Prints, per structure, the median time of one evaluation of each model (measured interleaved in
one run, so machine noise hits both alike) and the ratio GPTFF / CHGNet next to the published
implementation's ratio and this project's target (the performance issue's table).

It also profiles one GPTFF evaluation and reports the time spent in matrix products (GEMMs, whose
count is fixed by the network: every product of the exact network is already done once) and the
ratio that would remain if everything else were free — the floor of GPTFF / CHGNet on this
machine for the exact network.

    pip install -e ".[bench]"          # CHGNet 0.3, which ships its weights
    python benchmarks/speed.py [--repeats 5] [--threads 2] [--model gptff-v2]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
import warnings

import torch
from ase import Atoms
from ase.build import bulk

# structure name → (published GPTFF / CHGNet, target / CHGNet)
RATIOS = {
    "fcc Cu 5×5×5, rattled 0.05 Å": (0.19, 0.04),
    "rocksalt NaCl 4×4×4, rattled 0.05 Å": (0.35, 0.10),
    "diamond Si 4×4×4, rattled 0.05 Å": (0.27, 0.08),
    "rocksalt LiCl a=5.13 4×4×4, rattled 0.2 Å": (0.39, 0.12),
}


def structures() -> dict[str, Atoms]:
    """The four benchmark cells (conventional cells repeated; fixed rattle seeds)."""
    cells = {
        "fcc Cu 5×5×5, rattled 0.05 Å": (bulk("Cu", "fcc", a=3.61, cubic=True), 5, 0.05),
        "rocksalt NaCl 4×4×4, rattled 0.05 Å": (
            bulk("NaCl", "rocksalt", a=5.64, cubic=True), 4, 0.05,
        ),
        "diamond Si 4×4×4, rattled 0.05 Å": (bulk("Si", "diamond", a=5.43, cubic=True), 4, 0.05),
        "rocksalt LiCl a=5.13 4×4×4, rattled 0.2 Å": (
            bulk("LiCl", "rocksalt", a=5.13, cubic=True), 4, 0.2,
        ),
    }  # fmt: skip
    result = {}
    for name, (unit, repeat, amplitude) in cells.items():
        atoms = unit.repeat((repeat, repeat, repeat))
        atoms.rattle(amplitude, seed=0)
        result[name] = atoms
    return result


def time_one(calculator, atoms: Atoms) -> float:
    """Seconds for energy, forces and stress from a fresh calculation."""
    work = atoms.copy()
    calculator.reset()
    work.calc = calculator
    start = time.perf_counter()
    work.get_potential_energy()
    work.get_forces()
    work.get_stress()
    return time.perf_counter() - start


MATRIX_PRODUCTS = ("aten::mm", "aten::addmm", "aten::bmm")


def matrix_products(calculator, atoms: Atoms) -> tuple[float, float]:
    """(seconds, GFLOP) of the matrix products in one evaluation, from PyTorch's profiler."""
    from torch.profiler import profile

    with profile(with_flops=True) as prof:
        time_one(calculator, atoms)
    events = [e for e in prof.key_averages() if e.key in MATRIX_PRODUCTS]
    return sum(e.self_cpu_time_total for e in events) / 1e6, sum(e.flops for e in events) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per model")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (%(default)s)")
    parser.add_argument("--model", default="gptff-v2")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    try:
        from chgnet.model import CHGNet, CHGNetCalculator
    except ImportError:
        raise SystemExit("CHGNet is the yardstick: pip install -e '.[bench]'") from None
    from gptff_core import GPTFFCalculator

    gptff = GPTFFCalculator(args.model, dtype="float32")
    chgnet = CHGNetCalculator(CHGNet.load(verbose=False), use_device="cpu")
    machine = platform.processor() or "cpu"
    print(f"torch {torch.__version__}, {args.threads} threads, {machine}; {args.model} float32")
    print(f"vs CHGNet; median of {args.repeats} interleaved calls\n")
    print(
        "| structure | atoms | GPTFF (s) | CHGNet (s) | GPTFF / CHGNet | published | target "
        "| GPTFF matrix products (s, GFLOP) | floor ratio |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, atoms in structures().items():
        time_one(gptff, atoms), time_one(chgnet, atoms)  # warm-up
        ours, theirs = [], []
        for _ in range(args.repeats):
            ours.append(time_one(gptff, atoms))
            theirs.append(time_one(chgnet, atoms))
        ratio = statistics.median(ours) / statistics.median(theirs)
        published, target = RATIOS[name]
        verdict = "ok" if ratio <= target else "above target"
        products, gflop = matrix_products(gptff, atoms)
        floor = products / statistics.median(theirs)
        print(
            f"| {name} | {len(atoms)} | {statistics.median(ours):.3f} | "
            f"{statistics.median(theirs):.3f} | {ratio:.3f} ({verdict}) | {published} | {target} "
            f"| {products:.3f}, {gflop:.1f} | {floor:.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
