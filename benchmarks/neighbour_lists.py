"""vesin against matscipy as GPTFF's neighbour list: same pairs? which inputs fail? how fast?

Both are asked for full lists ``(i, j, S, d)`` within 5.0 Å (GPTFF's bond cutoff) on: rattled fcc Cu
(5×5×5 conventional, 500 atoms), a 1-atom primitive Cu cell (cell much smaller than the cutoff),
a 2000-atom rattled triclinic cell, a Cu(111) slab with 20 Å of vacuum and ``pbc=(T, T, F)``, the
same slab with a zero third cell vector, and a molecule without a cell. Where both work, the sets of
``(i, j, S)`` are compared after sorting, and the distances too. Timings are medians of repeats run
interleaved (vesin, matscipy, vesin, …) in one process; ``ratio`` = matscipy time / vesin time.

Run: ``python benchmarks/neighbour_lists.py`` (about half a minute).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import vesin
from ase import Atoms
from ase.build import bulk, fcc111, molecule
from matscipy.neighbours import neighbour_list

CUTOFF = 5.0  # Å
Pairs = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def run_vesin(atoms: Atoms) -> Pairs:
    """Full, sorted list from vesin; the cell is passed as is (zero for a molecule)."""
    search = vesin.NeighborList(cutoff=CUTOFF, full_list=True, sorted=True)
    return search.compute(atoms.positions, atoms.cell.array, atoms.pbc.tolist(), "ijSd")


def run_matscipy(atoms: Atoms) -> Pairs:
    """Full list from matscipy."""
    return neighbour_list("ijSd", atoms, CUTOFF)


def structures() -> dict[str, Atoms]:
    """The test systems, rattled (fixed seeds) so that no distance sits exactly at the cutoff."""
    copper = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(5)
    copper.rattle(0.05, seed=1)
    large = bulk("Cu", "fcc", a=3.61).repeat((10, 10, 20))
    large.rattle(0.05, seed=2)
    slab = fcc111("Cu", size=(4, 4, 4), vacuum=10.0)
    slab.pbc = (True, True, False)
    slab.rattle(0.02, seed=3)
    flat = slab.copy()
    flat.cell[2] = 0.0
    free = molecule("C6H6")
    free.rattle(0.02, seed=4)
    return {
        "fcc Cu 5×5×5 conventional, rattled": copper,
        "Cu 1-atom primitive cell": bulk("Cu", "fcc", a=3.61),
        "Cu 10×10×20 primitive (triclinic), rattled": large,
        "Cu(111) slab, 20 Å vacuum, pbc=(T,T,F)": slab,
        "same slab, zero 3rd cell vector": flat,
        "benzene, no cell, pbc=F": free,
    }


def attempt(function: Callable[[Atoms], Pairs], atoms: Atoms) -> Pairs | str:
    """The pairs, or the error's type and message when the library refuses the input."""
    try:
        return function(atoms)
    except Exception as error:  # report any refusal, whatever the library raises
        return f"{type(error).__name__}: {str(error).splitlines()[0][:60]}"


def canonical(pairs: Pairs) -> tuple[np.ndarray, np.ndarray]:
    """``(i, j, S)`` rows (int64) sorted lexicographically, and the distances in that order."""
    i, j, shifts, d = pairs
    rows = np.column_stack([i, j, shifts]).astype(np.int64)
    order = np.lexsort(rows.T[::-1])
    return rows[order], np.asarray(d)[order]


def same_pairs(first: Pairs, second: Pairs) -> str:
    rows_a, d_a = canonical(first)
    rows_b, d_b = canonical(second)
    if rows_a.shape != rows_b.shape or not np.array_equal(rows_a, rows_b):
        return f"no ({len(rows_a)} vs {len(rows_b)})"
    return f"yes (max Δd {np.abs(d_a - d_b).max():.1e} Å)"


def median_times(atoms: Atoms, functions: list[Callable], budget: float = 1.0) -> list[float]:
    """Median seconds per call of each function, calls interleaved, ≥ 5 rounds or ~budget s."""
    times: list[list[float]] = [[] for _ in functions]
    started = time.perf_counter()
    while len(times[0]) < 5 or (time.perf_counter() - started < budget and len(times[0]) < 200):
        for function, record in zip(functions, times, strict=True):
            tick = time.perf_counter()
            function(atoms)
            record.append(time.perf_counter() - tick)
    return [float(np.median(t)) for t in times]


def main() -> None:
    print(f"vesin {vesin.__version__} vs matscipy, full lists at {CUTOFF} Å\n")
    columns = ["system", "atoms", "pairs (vesin)", "vesin", "matscipy", "same (i,j,S)"]
    columns += ["vesin ms", "matscipy ms", "matscipy / vesin"]
    print("| " + " | ".join(columns) + " |")
    print("|---" * len(columns) + "|")
    libraries = (run_vesin, run_matscipy)
    for name, atoms in structures().items():
        results = [attempt(library, atoms) for library in libraries]
        failed = [isinstance(r, str) for r in results]
        status = [f"fails: {r}" if bad else "ok" for r, bad in zip(results, failed, strict=True)]
        working = [f for f, bad in zip(libraries, failed, strict=True) if not bad]
        seconds = dict(zip(working, median_times(atoms, working), strict=True))
        ms = [f"{1e3 * seconds[f]:.3f}" if f in seconds else "—" for f in libraries]
        both = not any(failed)
        row = [name, str(len(atoms)), "—" if failed[0] else str(len(results[0][0])), *status]
        row.append(same_pairs(*results) if both else "—")
        row += [*ms, f"{seconds[run_matscipy] / seconds[run_vesin]:.2f}" if both else "—"]
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
