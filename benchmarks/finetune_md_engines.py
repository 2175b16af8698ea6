"""Which MD path is faster for the fine-tune-then-MD flow: ASE (atomate2's MD Maker, one
temperature after another) or TorchSim (all temperatures in one batched state)?

Both run NVT Langevin with GPTFF on a Li3N supercell (2×2×2, 32 atoms) at three temperatures
for the same number of steps; the ratio is measured in one run (no timed asserts anywhere).

    python benchmarks/finetune_md_engines.py [--steps 100] [--cells 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from ase import Atoms, units
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import thermalize_momenta

from gptff_core import GPTFFCalculator


def li3n(repeat: int) -> Atoms:
    """α-Li3N (P6/mmm, a 3.648 Å, c 3.875 Å), repeated ``repeat`` times along each axis."""
    a, c = 3.648, 3.875
    cell = [[a, 0, 0], [-a / 2, a * np.sqrt(3) / 2, 0], [0, 0, c]]
    frac = [[0, 0, 0], [0, 0, 0.5], [1 / 3, 2 / 3, 0], [2 / 3, 1 / 3, 0]]
    atoms = Atoms("NLi3", scaled_positions=frac, cell=cell, pbc=True)
    return atoms.repeat((repeat, repeat, repeat))


def run_ase(atoms: Atoms, temperatures, steps: int, dtype: str) -> float:
    start = time.perf_counter()
    for temperature in temperatures:
        copy = atoms.copy()
        copy.calc = GPTFFCalculator(model="gptff-v2", dtype=dtype, smooth=True, skin=1.0)
        thermalize_momenta(copy, temperature_K=temperature, rng=np.random.default_rng(0))
        dyn = Langevin(copy, 2 * units.fs, temperature_K=temperature, friction=0.01 / units.fs)
        dyn.run(steps)
    return time.perf_counter() - start


def run_torchsim(atoms: Atoms, temperatures, steps: int, dtype: str) -> float:
    import torch_sim as ts
    from torch_sim.units import MetalUnits

    from gptff_core.torchsim import GPTFFTorchSimModel

    torch_dtype = getattr(torch, dtype)
    start = time.perf_counter()
    model = GPTFFTorchSimModel("gptff-v2", dtype=dtype, smooth=True, compute_stress=False)
    state = ts.io.atoms_to_state([atoms] * len(temperatures), torch.device("cpu"), torch_dtype)
    kT = torch.tensor(temperatures, dtype=torch_dtype) * MetalUnits.temperature
    dt = torch.tensor(0.002 * MetalUnits.time, dtype=torch_dtype)
    init, step = ts.nvt_langevin(model=model, dt=dt, kT=kT, seed=0)
    md_state = init(state)
    for _ in range(steps):
        md_state = step(md_state, kT=kT)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--cells", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    atoms = li3n(args.cells)
    temperatures = [600.0, 800.0, 1000.0]
    GPTFFCalculator(model="gptff-v2")  # load once, outside the timings
    ase_s = run_ase(atoms, temperatures, args.steps, args.dtype)
    ts_s = run_torchsim(atoms, temperatures, args.steps, args.dtype)
    total = args.steps * len(temperatures)
    print(
        f"{len(atoms)} atoms, {len(temperatures)} temperatures × {args.steps} steps, "
        f"{args.dtype}, {args.threads} thread(s)"
    )
    print(f"ASE (one temperature after another): {ase_s:.1f} s, {1e3 * ase_s / total:.1f} ms/step")
    print(f"TorchSim (one batch):                 {ts_s:.1f} s, {1e3 * ts_s / total:.1f} ms/step")
    print(f"TorchSim / ASE time ratio: {ts_s / ase_s:.2f}")


if __name__ == "__main__":
    main()
