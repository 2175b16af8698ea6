"""Throughput of batched ``predict`` against one ASE calculator call per structure.

Many small cells (rattled and slightly strained rocksalt, fcc, bcc, perovskite and fluorite
supercells of 8–40 atoms over several elements, fixed seeds) get energy, forces and stress in
float32, once through :func:`gptff_core.predict` (batched by atoms, bonds and triplets) and once
through one :class:`gptff_core.GPTFFCalculator` call per structure (what a user's loop does; the
calculator is reset between structures). Both include building the graphs. The one-at-a-time path
is timed on a fixed random subset and scaled. Prints structures per second both ways and their
ratio (the performance issue's target is ≥ 5×).

    python benchmarks/throughput.py [--n 1000] [--subset 100] [--threads 2] [--model gptff-v2]
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch
from ase import Atoms
from ase.build import bulk
from speed import time_one  # benchmarks/ is on sys.path when a script here runs

from gptff_core import GPTFFCalculator, load_model, predict

REPEATS = [(1, 1, 1), (2, 1, 1), (2, 2, 1), (2, 2, 2), (3, 1, 1), (3, 2, 1), (3, 2, 2), (3, 3, 1)]
"""Supercells tried for every conventional cell (those of 8–40 atoms are used)."""


def perovskite(formula: tuple[str, str, str], a: float) -> Atoms:
    """Cubic ABO₃-type perovskite (5 atoms), lattice constant ``a`` in Å."""
    a_site, b_site, x_site = formula
    return Atoms(
        [a_site, b_site, x_site, x_site, x_site],
        scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]],
        cell=np.eye(3) * a,
        pbc=True,
    )


def conventional_cells() -> list[Atoms]:
    """The conventional cells the structures are built from (lattice constants in Å)."""
    rocksalt = [("NaCl", 5.64), ("MgO", 4.21), ("LiF", 4.03), ("KCl", 6.29)]
    fcc = [("Cu", 3.61), ("Al", 4.05), ("Ni", 3.52), ("Ag", 4.09)]
    bcc = [("Fe", 2.87), ("W", 3.16), ("Mo", 3.15), ("Na", 4.29)]
    fluorite = [("CaF2", 5.46), ("CeO2", 5.41), ("ZrO2", 5.07)]
    perovskites = [(("Sr", "Ti", "O"), 3.905), (("Ba", "Ti", "O"), 4.00), (("Ca", "Ti", "O"), 3.84)]
    return (
        [bulk(f, "rocksalt", a=a, cubic=True) for f, a in rocksalt]
        + [bulk(f, "fcc", a=a, cubic=True) for f, a in fcc]
        + [bulk(f, "bcc", a=a, cubic=True) for f, a in bcc]
        + [bulk(f, "fluorite", a=a, cubic=True) for f, a in fluorite]
        + [perovskite(f, a) for f, a in perovskites]
    )


def structures(n: int, seed: int = 0) -> list[Atoms]:
    """``n`` cells of 8–40 atoms: a random conventional cell and supercell, strained by up to 2 %
    per lattice vector and rattled by 0.05 Å (Gaussian), all from ``seed``."""
    rng = np.random.default_rng(seed)
    choices = [
        (unit, repeat)
        for unit in conventional_cells()
        for repeat in REPEATS
        if 8 <= len(unit) * int(np.prod(repeat)) <= 40
    ]
    result = []
    for k in range(n):
        unit, repeat = choices[rng.integers(len(choices))]
        atoms = unit.repeat(repeat)
        strain = np.diag(1.0 + rng.uniform(-0.02, 0.02, size=3))
        atoms.set_cell(atoms.cell.array @ strain, scale_atoms=True)
        atoms.rattle(0.05, seed=seed * 100_003 + k)
        result.append(atoms)
    return result


def one_at_a_time(calculator: GPTFFCalculator, members: list[Atoms]) -> float:
    """Seconds for energy, forces and stress of every member, one calculator call each."""
    return sum(time_one(calculator, atoms) for atoms in members)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="structures (%(default)s)")
    parser.add_argument(
        "--subset", type=int, default=100, help="structures timed one at a time (%(default)s)"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads (%(default)s)")
    parser.add_argument("--model", default="gptff-v2")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    members = structures(args.n)
    subset_size = min(args.subset, args.n)
    chosen = np.random.default_rng(1).choice(args.n, size=subset_size, replace=False)
    subset = [members[i] for i in sorted(chosen)]
    network = load_model(args.model, dtype="float32")
    calculator = GPTFFCalculator(network)
    sizes = [len(atoms) for atoms in members]

    machine = platform.processor() or "cpu"
    print(f"torch {torch.__version__}, {args.threads} threads, {machine}; {args.model} float32")
    print(
        f"{args.n} structures of {min(sizes)}–{max(sizes)} atoms ({sum(sizes)} atoms), "
        "energy + forces + stress\n"
    )
    predict(members[:50], network, progress=False)  # warm-up
    one_at_a_time(calculator, subset[:10])

    start = time.perf_counter()
    predict(members, network, progress=False)
    batched_s = time.perf_counter() - start
    single_s = one_at_a_time(calculator, subset) * args.n / subset_size  # scaled to all
    batched, single = args.n / batched_s, args.n / single_s

    print(f"| path | structures/s | ms/structure | s for all {args.n} |")
    print("|---|---|---|---|")
    print(f"| batched `predict` | {batched:.1f} | {1e3 / batched:.2f} | {batched_s:.1f} |")
    print(
        f"| one `GPTFFCalculator` call each ({subset_size} timed, scaled) | {single:.1f} | "
        f"{1e3 / single:.2f} | {single_s:.1f} |"
    )
    verdict = "ok" if batched / single >= 5.0 else "below the 5× target"
    print(f"\nbatched / one at a time: {batched / single:.1f}× ({verdict})")


if __name__ == "__main__":
    main()
