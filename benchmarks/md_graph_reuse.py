"""MD speed with and without graph reuse (``GPTFFCalculator(skin=...)``), on the CPU.

NVE MD (velocity Verlet, 1 fs) of rattled fcc Cu, 6×6×7 conventional cells (1008 atoms), v2 in
float32, with ``skin=0`` (a neighbour search every step) and ``skin=1.0`` Å (a search only when
the Verlet bound requires one). The two runs advance one step at a time in turn, so a busy machine
slows both alike; after the warm-up steps each step is timed, and the graph building inside it
(``build_graph`` or ``VerletGraphBuilder.build``) separately. The rest of a step is the network
(energy, forces and stress) and the integrator. The two trajectories are compared at the end.

Run: ``GPTFF_MODEL_DIR=/path/to/models python benchmarks/md_graph_reuse.py`` (about 2 minutes).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from ase import Atoms, units
from ase.build import bulk
from ase.md.verlet import VelocityVerlet

from gptff_core import GPTFFCalculator
from gptff_core import calculator as calculator_module

SKINS = [0.0, 1.0]  # Å
SUPERCELL = (6, 6, 7)
TEMPERATURE = 600.0  # K, initial velocities
TIMESTEP = 1.0  # fs
WARM_UP_STEPS = 2
TIMED_STEPS = 20


class Stopwatch:
    """Wraps a function and adds up the seconds spent in it."""

    def __init__(self, function: Callable):
        self.function = function
        self.seconds = 0.0

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self.function(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start


def copper() -> Atoms:
    """The 1008-atom cell with Maxwell–Boltzmann velocities (same seed for every run)."""
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * SUPERCELL
    atoms.rattle(0.05, seed=0)
    rng = np.random.default_rng(1)
    speed = np.sqrt(units.kB * TEMPERATURE / atoms.get_masses())  # Å per ASE time unit
    atoms.set_velocities(rng.normal(size=(len(atoms), 3)) * speed[:, None])
    return atoms


def main() -> None:
    # skin=0 builds its graphs with graph.build_graph, skin>0 with its VerletGraphBuilder.
    fresh_graphs = Stopwatch(calculator_module.build_graph)
    calculator_module.build_graph = fresh_graphs
    runs = []
    for skin in SKINS:
        atoms = copper()
        atoms.calc = GPTFFCalculator("gptff-v2", dtype="float32", skin=skin)
        builder = atoms.calc.graph_builder
        graphs = fresh_graphs if builder is None else Stopwatch(builder.build)
        if builder is not None:
            builder.build = graphs
        dynamics = VelocityVerlet(atoms, timestep=TIMESTEP * units.fs)
        runs.append(
            {"skin": skin, "atoms": atoms, "graphs": graphs, "dynamics": dynamics, "seconds": 0.0}
        )

    for step in range(WARM_UP_STEPS + TIMED_STEPS):
        if step == WARM_UP_STEPS:
            for run in runs:
                run["graphs"].seconds = 0.0
                run["seconds"] = 0.0
        for run in runs:
            start = time.perf_counter()
            run["dynamics"].run(1)
            run["seconds"] += time.perf_counter() - start

    atoms = runs[0]["atoms"]
    print(
        f"fcc Cu {len(atoms)} atoms, gptff-v2 float32, CPU, {torch.get_num_threads()} threads, "
        f"velocity Verlet {TIMESTEP:g} fs from {TEMPERATURE:.0f} K, {TIMED_STEPS} timed steps "
        f"after {WARM_UP_STEPS} warm-up steps, runs interleaved step by step\n"
    )
    print("| skin (Å) | steps/s | graph (ms/step) | network + MD (ms/step) | neighbour searches |")
    print("|---|---|---|---|---|")
    for run in runs:
        graph_ms = 1e3 * run["graphs"].seconds / TIMED_STEPS
        step_ms = 1e3 * run["seconds"] / TIMED_STEPS
        builder = run["atoms"].calc.graph_builder
        searches = WARM_UP_STEPS + TIMED_STEPS + 1 if builder is None else builder.n_rebuilds
        print(
            f"| {run['skin']:.1f} | {1e3 / step_ms:.3f} | {graph_ms:.1f} | "
            f"{step_ms - graph_ms:.0f} | {searches} |"
        )
    fresh, reused = runs
    print(f"\nsteps/s, skin 1.0 / skin 0: {fresh['seconds'] / reused['seconds']:.3f}")
    print(
        f"graph time, skin 0 / skin 1.0: {fresh['graphs'].seconds / reused['graphs'].seconds:.2f}"
    )
    difference = np.abs(fresh["atoms"].positions - reused["atoms"].positions).max()
    print(
        f"max |Δr| between the trajectories after {WARM_UP_STEPS + TIMED_STEPS} steps: "
        f"{difference:.1e} Å (float32: bonds in another order)"
    )


if __name__ == "__main__":
    main()
