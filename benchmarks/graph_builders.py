"""Time per call of the numpy graph builder and the torch one, on the same structure.

Rattled fcc Cu, 6×6×7 conventional cells (1008 atoms), float32 graph. ``build_graph``
(numpy + vesin, then upload) against ``build_graph_torch`` (vesin's torch neighbour list, triplets
and stacking in torch) on the CPU, and on CUDA when it is available (there ``build_graph`` uploads
to CUDA, and CUDA is synchronised before each clock reading). The builders are called in turn,
so a busy machine slows both alike; the median of the timed calls is printed, with ratios.

vesin's own threads (``n_threads=0``: ``OMP_NUM_THREADS`` or every core) are left as they are
on both paths; on a shared machine ``OMP_WAIT_POLICY=passive`` keeps idle OpenMP threads from
spinning against each other.

Run: ``python benchmarks/graph_builders.py [--repeats 30] [--threads 1 2]`` (under a minute).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from ase.build import bulk

from gptff_core.graph import build_graph
from gptff_core.graph_torch import build_graph_torch

SUPERCELL = (6, 6, 7)
BUILDERS = {"numpy": build_graph, "torch": build_graph_torch}


def timed(builder, atoms, device: str) -> float:
    """Seconds of one call, with the device synchronised on both sides."""
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    builder([atoms], dtype=torch.float32, device=device)
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
        seconds = {name: [] for name in BUILDERS}
        for _ in range(3):  # warm-up (library loading, CUDA context, allocator)
            for builder in BUILDERS.values():
                timed(builder, atoms, device)
        for _ in range(args.repeats):
            for name, builder in BUILDERS.items():
                seconds[name].append(timed(builder, atoms, device))
        ms = {name: 1e3 * statistics.median(values) for name, values in seconds.items()}
        graph = build_graph_torch([atoms], device=device)
        record = {
            "device": device,
            "atoms": len(atoms),
            "bonds": graph.n_bonds,
            "triplets": graph.n_triplets,
            "torch_threads": torch.get_num_threads(),
            "numpy_ms": round(ms["numpy"], 2),
            "torch_ms": round(ms["torch"], 2),
            "numpy_over_torch": round(ms["numpy"] / ms["torch"], 3),
        }
        print(json.dumps(record))


if __name__ == "__main__":
    main()
