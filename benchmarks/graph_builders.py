"""Time per call of the numpy graph builder and the torch one, on the same structure.

Rattled fcc Cu, 6×6×7 conventional cells (1008 atoms), float32 graph. The numpy builder (numpy +
vesin, then upload) against the torch one (vesin's torch neighbour list, triplets and stacking in
torch), chosen with ``GPTFF_GRAPH_BUILDER`` (``build_graph`` picks torch on any device but the
CPU), on the CPU and on CUDA when it is available (CUDA is synchronised before each clock
reading). Both are timed for a fresh graph and for a reused Verlet list (1 Å skin, a step that
moves no atom beyond it: the cost per MD step between neighbour searches). The builders are
called in turn, so a busy machine slows both alike; the median of the timed calls is printed,
with ratios.

vesin's own threads (``n_threads=0``: ``OMP_NUM_THREADS`` or every core) are left as they are
on both paths; on a shared machine ``OMP_WAIT_POLICY=passive`` keeps idle OpenMP threads from
spinning against each other.

Run: ``python benchmarks/graph_builders.py [--repeats 30] [--threads 1 2]`` (under a minute).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
from ase.build import bulk

from gptff_core.graph import build_graph
from gptff_core.neighbours import VerletGraphBuilder

SUPERCELL = (6, 6, 7)
BUILDERS = ("numpy", "torch")


def fresh(atoms, device: str) -> None:
    build_graph([atoms], dtype=torch.float32, device=device)


def reused(builder: VerletGraphBuilder):
    """A call of ``builder`` after its search: the per-step cost between searches."""

    def build(atoms, device: str) -> None:
        builder.build(atoms, dtype=torch.float32, device=device)

    return build


def timed(name: str, builder, atoms, device: str) -> float:
    """Seconds of one call of ``builder`` with the ``name`` builder, the device synchronised on
    both sides."""
    os.environ["GPTFF_GRAPH_BUILDER"] = name
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    builder(atoms, device)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument(
        "--threads", type=int, nargs="+", default=[1, torch.get_num_threads()],
        help="torch CPU thread counts to measure (default: 1 and torch's default)",
    )  # fmt: skip
    args = parser.parse_args()
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * SUPERCELL
    atoms.rattle(0.05, seed=0)
    cases = [("cpu", n) for n in dict.fromkeys(args.threads)]
    if torch.cuda.is_available():
        cases.append(("cuda", torch.get_num_threads()))
    for device, threads in cases:
        torch.set_num_threads(threads)
        for kind in ("fresh", "verlet_reuse"):
            print(json.dumps(measure(kind, atoms, device, args.repeats)))


def measure(kind: str, atoms, device: str, repeats: int) -> dict:
    """Median ms per call of both builders for a ``fresh`` graph or a ``verlet_reuse`` step."""
    builders = {
        name: fresh if kind == "fresh" else reused(VerletGraphBuilder(1.0)) for name in BUILDERS
    }
    seconds = {name: [] for name in BUILDERS}
    for _ in range(3):  # warm-up (library loading, CUDA context, allocator, the Verlet search)
        for name, builder in builders.items():
            timed(name, builder, atoms, device)
    for _ in range(repeats):
        for name, builder in builders.items():
            seconds[name].append(timed(name, builder, atoms, device))
    ms = {name: 1e3 * statistics.median(values) for name, values in seconds.items()}
    graph = build_graph([atoms], device=device)
    return {
        "device": device,
        "kind": kind,
        "atoms": len(atoms),
        "bonds": graph.n_bonds,
        "triplets": graph.n_triplets,
        "torch_threads": torch.get_num_threads(),
        "numpy_ms": round(ms["numpy"], 2),
        "torch_ms": round(ms["torch"], 2),
        "numpy_over_torch": round(ms["numpy"] / ms["torch"], 3),
    }


if __name__ == "__main__":
    main()
