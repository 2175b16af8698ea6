"""Effect of the smooth variant, and the cell-size dependence of E/atom (float64, v1 and v2).

1. On the 12 reference structures: |ΔE/atom| (meV/atom), max |ΔF| (eV/Å) and max |Δσ| (GPa) of
   ``smooth=True`` against the published network, for envelope windows of 0.25, 0.5 (default) and
   1.0 Å (the same width at the 5 Å bond and the 3.5 Å triplet cutoff).
2. The energy jump (meV/atom) of conventional fcc Cu where a neighbour shell crosses the 3.5 Å
   triplet cutoff (a = 3.5 Å) and the 5 Å bond cutoff (a = 5/√2 Å), smooth off and on: the change
   of E/atom across a 1e-5 Å step minus the mean of the neighbouring steps.
3. E/atom (eV) of the same crystal in different cells: fcc Cu (a = 3.61 Å) primitive and its
   2×2×2, 3×3×3, 4×4×4 supercells; rocksalt NaCl (a = 5.64 Å) primitive, conventional and 2×2×2
   conventional.

Run: ``GPTFF_MODEL_DIR=/path/to/models python benchmarks/smooth_effect.py`` (about a minute).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.build import bulk
from ase.units import GPa

from gptff_core import load_model
from gptff_core.evaluate import evaluate
from gptff_core.graph import build_graph

REFERENCE_FILE = (
    Path(__file__).resolve().parents[2] / "shared" / "reference" / "gptff_reference_shared.json"
)
VERSIONS = ["v2", "v1"]
WINDOWS = [0.25, 0.5, 1.0]  # Å
CROSSINGS = {"a·1 shell at 3.5 Å (triplets)": 3.5, "a·√2 shell at 5 Å (bonds)": 5 / math.sqrt(2)}
SCAN_STEP = 1e-5  # Å


def model(version: str, window: float | None):
    """The float64 network; ``window=None`` is the published (non-smooth) network."""
    if window is None:
        return load_model(f"gptff-{version}", dtype="float64", smooth=False)
    return load_model(
        f"gptff-{version}",
        dtype="float64",
        smooth=True,
        bond_window=window,
        three_body_window=window,
    )


def predict(network, structures: list[Atoms]) -> list[dict[str, np.ndarray | float]]:
    """E/atom (eV), forces (eV/Å) and stress (GPa) of each structure, evaluated as one batch."""
    graph = build_graph(structures, dtype=torch.float64)
    result = evaluate(network, graph)
    forces = np.split(result.forces.numpy(), np.cumsum([len(a) for a in structures])[:-1])
    return [
        {"e": float(result.energy[k]) / len(a), "f": forces[k], "s": result.stress[k].numpy() / GPa}
        for k, a in enumerate(structures)
    ]


def energies_per_atom(network, structures: list[Atoms]) -> np.ndarray:
    """E/atom (eV) of each structure, evaluated as one batch without forces."""
    graph = build_graph(structures, dtype=torch.float64)
    energy = evaluate(network, graph, forces=False, stress=False).energy.numpy()
    return energy / np.array([len(a) for a in structures])


def reference_structures() -> dict[str, Atoms]:
    data = json.loads(REFERENCE_FILE.read_text())["structures"]
    return {
        name: Atoms(numbers=s["numbers"], positions=s["positions"], cell=s["cell"], pbc=s["pbc"])
        for name, s in data.items()
    }


def smooth_effect_table(version: str, structures: dict[str, Atoms]) -> None:
    """Print the differences smooth − published on the reference structures, per window."""
    names, atoms = list(structures), list(structures.values())
    plain = predict(model(version, None), atoms)
    header = " | ".join(f"ΔE w={w} | ΔF w={w} | Δσ w={w}" for w in WINDOWS)
    print(f"\n### {version}: smooth − published (ΔE meV/atom, max|ΔF| eV/Å, max|Δσ| GPa)\n")
    print(f"| structure | {header} |")
    print("|---" * (1 + 3 * len(WINDOWS)) + "|")
    rows = {name: [] for name in names}
    worst = {}
    for window in WINDOWS:
        smooth = predict(model(version, window), atoms)
        deltas = [
            (
                1e3 * abs(s["e"] - p["e"]),
                float(np.abs(s["f"] - p["f"]).max()),
                float(np.abs(s["s"] - p["s"]).max()),
            )
            for s, p in zip(smooth, plain, strict=True)
        ]
        for name, (de, df, ds) in zip(names, deltas, strict=True):
            rows[name] += [f"{de:.3f}", f"{df:.4f}", f"{ds:.3f}"]
        worst[window] = [max(column) for column in zip(*deltas, strict=True)]
        worst[window].append(sum(d == (0.0, 0.0, 0.0) for d in deltas))
    for name in names:
        print(f"| {name} | " + " | ".join(rows[name]) + " |")
    print()
    for window, (de, df, ds, unchanged) in worst.items():
        print(
            f"Summary {version}, window {window} Å: max |ΔE| {de:.3f} meV/atom, "
            f"max |ΔF| {df:.4f} eV/Å, max |Δσ| {ds:.3f} GPa; "
            f"{unchanged}/{len(names)} structures bit-identical"
        )


def crossing_scan(crossing: float) -> list[Atoms]:
    """Conventional fcc Cu at ``crossing + (k + ½)·SCAN_STEP``, k = −3 … 2 (crossing mid-scan)."""
    return [bulk("Cu", "fcc", a=crossing + (k + 0.5) * SCAN_STEP, cubic=True) for k in range(-3, 3)]


def discontinuity(energy: np.ndarray) -> float:
    """Change of E across the middle step minus the mean of the two neighbouring steps (eV)."""
    steps = np.diff(energy)
    middle = len(steps) // 2
    return float(steps[middle] - 0.5 * (steps[middle - 1] + steps[middle + 1]))


def jump_table() -> None:
    """Print the jumps of E/atom (meV/atom) at the two cutoff crossings of fcc Cu."""
    settings = [None, *WINDOWS]
    labels = ["published"] + [f"smooth w={w}" for w in WINDOWS]
    print("\n### fcc Cu jump of E/atom across a 1e-5 Å step at a cutoff crossing (meV/atom)\n")
    print("| crossing | model | " + " | ".join(labels) + " |")
    print("|---|---|" + "---|" * len(labels))
    scans = {name: crossing_scan(a) for name, a in CROSSINGS.items()}
    for version in ["v1", "v2"]:
        networks = [model(version, window) for window in settings]
        for name, structures in scans.items():
            jumps = [1e3 * discontinuity(energies_per_atom(n, structures)) for n in networks]
            print(f"| {name} | {version} | " + " | ".join(f"{j:.3g}" for j in jumps) + " |")


def cell_size_table() -> None:
    """Print E/atom (eV) of fcc Cu and rocksalt NaCl in different cells of the same crystal."""
    copper = bulk("Cu", "fcc", a=3.61)
    salt = bulk("NaCl", "rocksalt", a=5.64)
    cells = {
        "Cu primitive": copper,
        "Cu 2×2×2 primitive": copper.repeat(2),
        "Cu 3×3×3 primitive": copper.repeat(3),
        "Cu 4×4×4 primitive": copper.repeat(4),
        "NaCl primitive": salt,
        "NaCl conventional": bulk("NaCl", "rocksalt", a=5.64, cubic=True),
        "NaCl 2×2×2 conventional": bulk("NaCl", "rocksalt", a=5.64, cubic=True).repeat(2),
    }
    energies = {v: energies_per_atom(model(v, None), list(cells.values())) for v in ["v1", "v2"]}
    print("\n### E/atom of one crystal in different cells (published network, eV/atom)\n")
    print("| cell | atoms | v1 | v1 − smallest cell (meV) | v2 | v2 − smallest cell (meV) |")
    print("|---|---|---|---|---|---|")
    for k, (name, atoms) in enumerate(cells.items()):
        first = 0 if name.startswith("Cu") else 4
        values = []
        for version in ["v1", "v2"]:
            e = energies[version]
            values += [f"{e[k]:.4f}", f"{1e3 * (e[k] - e[first]):+.1f}"]
        print(f"| {name} | {len(atoms)} | " + " | ".join(values) + " |")


def main() -> None:
    # The graphs are small: one thread avoids OpenMP spin-waiting on a shared machine.
    torch.set_num_threads(1)
    structures = reference_structures()
    for version in VERSIONS:
        smooth_effect_table(version, structures)
    jump_table()
    cell_size_table()


if __name__ == "__main__":
    main()
