"""Time and memory of one energy + forces + stress evaluation from ~100 to ~11,000 atoms.

Rattled fcc Cu and rocksalt NaCl supercells, GPTFF v1 and v2 in float32. Every point runs in a
fresh subprocess (so its peak resident memory is its own): load the network, warm up on the
system's smallest supercell, build the graph, then time one evaluation. For v2 a second,
profiled evaluation measures the share of the fused attention kernels (forward and backward of
``scaled_dot_product_attention``), the only work quadratic in the atoms of a structure; the table
gives that share and the attention time it implies. The summary fits the attention time as
``c·N²`` and the rest of v2's evaluation as ``a·N`` and reports ``N = a/c``, where the quadratic
term would equal the linear one.

    python benchmarks/scaling.py [--max-atoms 11000] [--threads 2] [--systems Cu NaCl]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time

import numpy as np
import torch
from ase import Atoms
from ase.build import bulk

from gptff_core import load_model
from gptff_core.evaluate import evaluate
from gptff_core.graph import build_graph

SYSTEMS = {
    "Cu": (lambda: bulk("Cu", "fcc", a=3.61, cubic=True), (3, 5, 7, 10, 14)),
    "NaCl": (lambda: bulk("NaCl", "rocksalt", a=5.64, cubic=True), (3, 4, 6, 8, 11)),
}
"""System → (conventional cell, repeats n of the n×n×n supercells)."""

VERSIONS = ("v1", "v2")


def supercell(system: str, repeat: int) -> Atoms:
    """The ``repeat``³ supercell of ``system``'s conventional cell, rattled by 0.05 Å (seed 0)."""
    atoms = SYSTEMS[system][0]().repeat((repeat, repeat, repeat))
    atoms.rattle(0.05, seed=0)
    return atoms


def attention_seconds(profile: torch.profiler.profile) -> float:
    """Seconds spent in the scaled-dot-product-attention kernels (forward and backward)."""
    events = profile.key_averages()
    return sum(e.self_cpu_time_total for e in events if "scaled_dot_product" in e.key) / 1e6


def measure_point(system: str, repeat: int, version: str, threads: int) -> dict:
    """One point, in this process: sizes, graph and evaluation seconds, peak RSS (MiB) and for
    v2 the attention share of a profiled evaluation."""
    torch.set_num_threads(threads)
    model = load_model(f"gptff-{version}", dtype="float32")
    evaluate(model, build_graph([supercell(system, SYSTEMS[system][1][0])]))  # warm-up
    atoms = supercell(system, repeat)

    start = time.perf_counter()
    graph = build_graph([atoms])
    graph_s = time.perf_counter() - start
    start = time.perf_counter()
    evaluate(model, graph)
    evaluate_s = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

    attention_share = None
    if model.config.transformer:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
            start = time.perf_counter()
            evaluate(model, graph)
            profiled_s = time.perf_counter() - start
        attention_share = attention_seconds(profile) / profiled_s
    return dict(
        system=system,
        version=version,
        atoms=len(atoms),
        bonds=graph.n_bonds,
        triplets=graph.n_triplets,
        graph_s=graph_s,
        evaluate_s=evaluate_s,
        peak_mib=peak_mib,
        attention_share=attention_share,
    )


def run_point(system: str, repeat: int, version: str, threads: int) -> dict | None:
    """:func:`measure_point` in a fresh subprocess; None (with its error printed) if it fails."""
    command = [sys.executable, __file__, "--point", system, str(repeat), version]
    done = subprocess.run(
        [*command, "--threads", str(threads)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        print(f"{system} {repeat}³ {version} failed ({done.returncode}):\n{done.stderr[-2000:]}")
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def print_table(points: list[dict]) -> None:
    """Markdown table of the points (v2 rows with the attention time and share)."""
    print(
        "| system | atoms | bonds | triplets | model | graph (s) | E+F+S (s) | ms/atom | "
        "peak RSS (MiB) | attention (s) | attention share |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for p in points:
        share = p["attention_share"]
        attention = "–" if share is None else f"{share * p['evaluate_s']:.2f}"
        share_text = "–" if share is None else f"{100 * share:.1f} %"
        per_atom = 1e3 * p["evaluate_s"] / p["atoms"]
        print(
            f"| {p['system']} | {p['atoms']} | {p['bonds']} | {p['triplets']} | {p['version']} | "
            f"{p['graph_s']:.2f} | {p['evaluate_s']:.2f} | {per_atom:.2f} | {p['peak_mib']:.0f} | "
            f"{attention} | {share_text} |"
        )


def print_crossover(points: list[dict]) -> None:
    """Per system: fit attention ≈ c·N² and the rest of v2 ≈ a·N (least squares through the
    origin) and print where the quadratic term would equal the linear one."""
    print()
    for system in SYSTEMS:
        v2 = [p for p in points if p["system"] == system and p["version"] == "v2"]
        if len(v2) < 2:
            continue
        n = np.array([p["atoms"] for p in v2], dtype=float)
        attention = np.array([p["attention_share"] * p["evaluate_s"] for p in v2])
        rest = np.array([p["evaluate_s"] for p in v2]) - attention
        c = float(n**2 @ attention / (n**2 @ n**2))  # s / atom²
        a = float(n @ rest / (n @ n))  # s / atom
        largest = v2[-1]
        print(
            f"{system}: attention ≈ {1e9 * c:.2f} ns × N², rest of v2 ≈ {1e3 * a:.3f} ms × N; "
            f"they are equal at N ≈ {a / c:,.0f} atoms (attention is "
            f"{100 * largest['attention_share']:.1f} % of v2 at {largest['atoms']} atoms)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-atoms", type=int, default=11_000, help="largest cell (%(default)s)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (%(default)s)")
    parser.add_argument("--systems", nargs="+", choices=list(SYSTEMS), default=list(SYSTEMS))
    parser.add_argument(
        "--point",
        nargs=3,
        metavar=("SYSTEM", "REPEAT", "VERSION"),
        help="measure one point in this process and print it as JSON (used internally)",
    )
    args = parser.parse_args()
    if args.point:
        system, repeat, version = args.point
        print(json.dumps(measure_point(system, int(repeat), version, args.threads)))
        return

    machine = platform.processor() or "cpu"
    print(f"torch {torch.__version__}, {args.threads} threads, {machine}; float32, E+F+S\n")
    points = []
    for system in args.systems:
        unit, repeats = SYSTEMS[system]
        for repeat in repeats:
            if len(unit()) * repeat**3 > args.max_atoms:
                break
            for version in VERSIONS:
                point = run_point(system, repeat, version, args.threads)
                if point is not None:
                    points.append(point)
    print_table(points)
    print_crossover(points)


if __name__ == "__main__":
    main()
