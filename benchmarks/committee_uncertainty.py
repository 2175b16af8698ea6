"""Does committee disagreement rank true errors, and how many members does it take?

GPTFF v2 is fine-tuned on EMT-labelled Cu–Au frames (fcc cells of 4 and 8 atoms, rattled and
strained as in the training tests) by ``train_committee`` with the largest size asked for; then
committees of each size (every subset of that many of the trained members) predict held-out EMT
frames that range from like the training data to far from it (stronger rattling, strain and
compression, other Au fractions), and held-out frames drawn like the training data ("near":
the harder ranking, errors differ less). For each committee the script prints Spearman ρ between
the frame score (``uncertainty``: largest per-atom force disagreement, eV/Å) and the true error
of the committee mean (largest per-atom |F_mean − F_EMT|, eV/Å), averaged over the subsets of
that size (with their range), and the training and evaluation time of one member.

    python benchmarks/committee_uncertainty.py [--train 60] [--test 120] [--epochs 3]
        [--sizes 2,3,4,6,8] [--repeats 2] [--threads 1] [--seed 0]
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time

import numpy as np
import torch
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from scipy.stats import spearmanr

from gptff_core import predict
from gptff_core.committee import force_disagreement
from gptff_core.training import Recipe, frames_from_structures
from gptff_core.training.committee import train_committee


def cu_au_frame(rng: np.random.Generator, rattle: float, strain: float, scale: float) -> Atoms:
    """An fcc Cu–Au cell of 4 or 8 atoms: normal rattle σ ``rattle`` (Å), symmetric strain
    uniform in ±``strain``, lattice scaled by ``scale``; labelled with EMT (eV, eV/Å, eV/Å³)."""
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
    if rng.random() < 0.5:
        atoms = atoms.repeat((2, 1, 1))
    gold = rng.uniform(0.0, 0.6)
    atoms.set_chemical_symbols(["Au" if rng.random() < gold else "Cu" for _ in atoms])
    deformation = np.eye(3) + rng.uniform(-strain, strain, (3, 3))
    swelling = 1.0 + 0.03 * atoms.get_chemical_symbols().count("Au") / len(atoms)
    cell = atoms.cell.array @ ((deformation + deformation.T) / 2) * swelling * scale
    atoms.set_cell(cell, scale_atoms=True)
    atoms.positions += rng.normal(0.0, rattle, atoms.positions.shape)
    atoms.calc = EMT()
    atoms.get_potential_energy()
    atoms.get_stress()
    return atoms


def training_frames(count: int, seed: int) -> list[Atoms]:
    """Frames like the training tests': rattle 0.1 Å, strain ±3 %, no compression."""
    rng = np.random.default_rng(seed)
    return [cu_au_frame(rng, 0.1, 0.03, 1.0) for _ in range(count)]


def test_frames(count: int, seed: int) -> list[Atoms]:
    """Held-out frames from like the training data to far from it: rattle 0.05–0.35 Å, strain
    up to ±8 %, lattice scaled by 0.9–1.06."""
    rng = np.random.default_rng(seed)
    return [
        cu_au_frame(rng, rng.uniform(0.05, 0.35), rng.uniform(0.0, 0.08), rng.uniform(0.9, 1.06))
        for _ in range(count)
    ]


def ranking(member_forces: list[np.ndarray], labels: list[np.ndarray], members) -> float:
    """Spearman ρ between the frame score and the largest force error of the committee mean,
    for the committee of ``members`` (indices); ``member_forces[m][k]`` is member m's forces of
    frame k (eV/Å)."""
    scores, errors = [], []
    for k, label in enumerate(labels):
        forces = np.stack([member_forces[m][k] for m in members])
        scores.append(force_disagreement(forces).max())
        errors.append(np.linalg.norm(forces.mean(axis=0) - label, axis=1).max())
    return float(spearmanr(scores, errors).statistic)


def measure(args: argparse.Namespace, sizes: list[int], seed: int) -> dict:
    """Train one committee of ``max(sizes)`` members (data and committee seeded by ``seed``)
    and rank the held-out errors with every subset of each size: ``{"wide": {size: [ρ]},
    "near": {size: [ρ]}, "train_s", "predict_s" (per member), "mae" (meV/Å per member)}``."""
    frames = frames_from_structures(training_frames(args.train, seed))
    n_valid = max(2, len(frames) // 6)
    train, valid = frames[n_valid:], frames[:n_valid]
    wide = test_frames(args.test, seed + 1000)
    near = training_frames(args.test, seed + 2000)
    labels = [atoms.get_forces() for atoms in wide + near]
    recipe = Recipe(epochs=args.epochs, learning_rate=2e-4, max_structures_per_batch=4)
    members = max(sizes)
    with tempfile.TemporaryDirectory() as directory:
        start = time.perf_counter()
        results = train_committee(
            "gptff-v2", train, valid, recipe, members, directory=directory, seed=seed
        )
        train_s = (time.perf_counter() - start) / members
        start = time.perf_counter()
        member_forces = [predict(wide + near, r.best_checkpoint).forces for r in results]
        predict_s = (time.perf_counter() - start) / members
    n = len(wide)
    sets = {
        "wide": ([forces[:n] for forces in member_forces], labels[:n]),
        "near": ([forces[n:] for forces in member_forces], labels[n:]),
    }
    measured = {"train_s": train_s, "predict_s": predict_s, "n_train": len(train)}
    measured["mae"] = [float(r.after["forces_mae_meV_per_A"]) for r in results]
    for name, (forces, truth) in sets.items():
        measured[name] = {
            size: [
                ranking(forces, truth, subset)
                for subset in itertools.combinations(range(members), size)
            ]
            for size in sizes
        }
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=60, help="frames (1/6 for validation)")
    parser.add_argument("--test", type=int, default=120, help="held-out frames of each kind")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--sizes", default="2,3,4,6,8", help="committee sizes, comma-separated")
    parser.add_argument("--repeats", type=int, default=2, help="committees (data and seeds)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sizes = sorted({int(s) for s in args.sizes.split(",")})
    runs = [measure(args, sizes, args.seed + r) for r in range(args.repeats)]
    print(
        f"GPTFF v2 fine-tuned on {runs[0]['n_train']} EMT Cu–Au frames ({args.epochs} epochs), "
        f"{args.test} + {args.test} held-out frames (wide + near), {args.repeats} committee(s) "
        f"of {max(sizes)} members, {args.threads} thread(s)"
    )
    for r, run in enumerate(runs):
        print(
            f"committee {r}: per member training {run['train_s']:.1f} s, predicting the "
            f"held-out frames {run['predict_s']:.1f} s; validation force MAE "
            f"{', '.join(f'{v:.0f}' for v in run['mae'])} meV/Å"
        )
    print("Spearman ρ(frame score, largest force error of the committee mean), mean over")
    print("every subset of each size in each committee [its min, max]; cost = member runs")
    print("size  wide ρ [min, max]      near ρ [min, max]      cost")
    for size in sizes:
        columns = []
        for name in ("wide", "near"):
            values = [v for run in runs for v in run[name][size]]
            columns.append(f"{np.mean(values):.3f} [{min(values):.3f}, {max(values):.3f}]")
        print(f"{size:4d}  {columns[0]}  {columns[1]}  {size:4d}")


if __name__ == "__main__":
    main()
