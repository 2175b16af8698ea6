"""What D3(BJ) dispersion costs beside a GPTFF evaluation; ours against torch-dftd's calculator.

On rattled diamond Si (2×2×2 conventional, 64 atoms) and fcc Cu (5×5×5 conventional, 500 atoms),
each an energy + forces + stress evaluation: GPTFF v2 (float32, the calculator's default), our
:class:`gptff_core.dispersion.D3Dispersion` (float64 and float32; pairs listed once, C6 computed
once per atom pair for all its images), and torch-dftd's own ``TorchDFTD3Calculator`` (float64;
full pair list, C6 per listed pair), all at the default cutoffs (40 bohr). Also the D3 energy per
atom at the 95-bohr cutoff of the original DFT-D3 program (Si only: the 500-atom cell needs GBs).
Timings are minima of interleaved repeats in one process; ratios are to GPTFF.

Run: ``python benchmarks/dispersion.py [--threads N]`` (needs torch-dftd; about a minute).
"""

from __future__ import annotations

import argparse
import time

import torch
from ase.build import bulk
from ase.units import Bohr
from torch_dftd.torch_dftd3_calculator import TorchDFTD3Calculator

from gptff_core import GPTFFCalculator
from gptff_core.dispersion import D3_CN_CUTOFF, D3_CUTOFF, D3Dispersion, find_pairs

REPEATS = 3


def cells() -> dict:
    silicon = bulk("Si", "diamond", a=5.43, cubic=True).repeat(2)
    copper = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(5)
    for seed, atoms in enumerate((silicon, copper)):
        atoms.rattle(0.02, seed=seed)
    return {"Si 64": silicon, "Cu 500": copper}


def evaluators(atoms) -> dict:
    """name -> a function evaluating energy, forces and stress of ``atoms``."""
    gptff = GPTFFCalculator("gptff-v2")
    reference = TorchDFTD3Calculator(
        damping="bj", xc="pbe", dtype=torch.float64, cutoff=D3_CUTOFF, cnthr=D3_CN_CUTOFF
    )
    ours64, ours32 = D3Dispersion(dtype="float64"), D3Dispersion(dtype="float32")

    def ase_call(calculator):
        def run():
            calculator.reset()
            calculator.calculate(atoms, ["energy", "forces", "stress"])

        return run

    return {
        "GPTFF v2 (float32)": ase_call(gptff),
        "D3 ours, float64": lambda: ours64([atoms]),
        "D3 ours, float32": lambda: ours32([atoms]),
        "D3 torch-dftd calculator, float64": ase_call(reference),
    }


def timings(runs: dict) -> dict:
    for run in runs.values():
        run()  # warm-up
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(REPEATS):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (%(default)s)")
    torch.set_num_threads(parser.parse_args().threads)
    for label, atoms in cells().items():
        pairs = find_pairs(atoms.positions, atoms.cell.array, atoms.pbc, D3_CUTOFF)[0].shape[1]
        best = timings(evaluators(atoms))
        base = best["GPTFF v2 (float32)"]
        print(f"{label} atoms, {pairs} D3 pairs within {D3_CUTOFF:.2f} Å (each once)")
        for name, seconds in best.items():
            print(f"  {name:<36} {seconds * 1e3:9.1f} ms   {seconds / base:6.2f} × GPTFF")
        n = len(atoms)
        e40 = D3Dispersion()([atoms], forces=False, stress=False).energy.item() / n
        line = f"  D3 energy per atom: {e40 * 1e3:.3f} meV (40 bohr)"
        if n < 100:
            far = D3Dispersion(cutoff=95 * Bohr)([atoms], forces=False, stress=False)
            line += f", {far.energy.item() / n * 1e3:.3f} meV (95 bohr)"
        print(line)


if __name__ == "__main__":
    main()
