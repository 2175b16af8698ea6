"""What the checksums of the embedded store cost: ``GPTFFMontyStore`` against maggma's plain
``MontyStore`` (same montydb on SQLite, no checksum, no verification).

N jobflow-like documents (an 8-site structure, forces, a 200-number array: ~4.5 kB of BSON each)
are written one by one, as jobs write them; then all are read back; then 50 of them are looked up
by uuid. Each store gets its own new directory. montydb decodes every document of a collection for
each query and its upsert scans the collection, so absolute times grow with N (writing N documents
~N²). Reads are repeated 5 times, interleaved, and the medians kept; ``ratio`` =
GPTFFMontyStore time / MontyStore time, both measured in this run.

Run: ``python benchmarks/store_checksums.py [N]`` (N = 1000: about two minutes on 2 cores).
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from maggma.stores import MontyStore

from gptff_flows.stores import GPTFFMontyStore, prepare_store_dir


def document(i: int) -> dict:
    sites = [
        {"species": [{"element": "Na", "occu": 1}], "abc": [0.1 * k, 0.2, 0.3 + i * 1e-3],
         "xyz": [0.5 * k, 1.0, 1.5], "label": "Na", "properties": {}}
        for k in range(8)
    ]  # fmt: skip
    lattice = {"matrix": [[5.6, 0, 0], [0, 5.6, 0], [0, 0, 5.6]]}
    output = {"structure": {"lattice": lattice, "sites": sites}, "energy": -3.1 * i,
              "forces": [[0.01 * k, 0.0, -0.01] for k in range(8)],
              "trajectory": [j / 7 for j in range(200)]}  # fmt: skip
    return {"uuid": f"job-{i}", "index": 1, "name": f"relax {i}", "output": output,
            "completed_at": "2026-01-01T00:00:00", "metadata": {"flow_name": "bench"}}  # fmt: skip


def write(store, n: int) -> float:
    """s to write ``n`` documents one by one."""
    store.connect()
    start = time.perf_counter()
    for i in range(n):
        store.update(document(i), key=["uuid", "index"])
    return time.perf_counter() - start


def read(store, n: int) -> tuple[float, float]:
    """s to read all documents, and to look 50 of them up by uuid."""
    start = time.perf_counter()
    assert len(list(store.query({}))) == n
    middle = time.perf_counter()
    for i in range(0, n, max(1, n // 50)):
        store.query_one({"uuid": f"job-{i}"})
    return middle - start, time.perf_counter() - middle


def main(n: int, repeats: int = 5) -> None:
    root = Path(tempfile.mkdtemp(prefix="gptff-bench-"))
    try:
        prepare_store_dir(root / "plain", "gptff", ["outputs"])  # then plain MontyStore reads it
        plain = MontyStore("outputs", database_path=str(root / "plain"), database_name="gptff")
        checked = GPTFFMontyStore("outputs", database_path=str(root / "checked"),
                                  database_name="gptff")  # fmt: skip
        times = {"write": (write(plain, n), write(checked, n))}
        reads = [(read(plain, n), read(checked, n)) for _ in range(repeats)]  # interleaved
    finally:
        shutil.rmtree(root)
    for k, label in enumerate(["read all", "50 lookups"]):
        times[label] = tuple(statistics.median(r[side][k] for r in reads) for side in (0, 1))
    for label, (a, b) in times.items():
        print(f"{n} documents, {label:10s}: MontyStore {a:7.2f} s, GPTFFMontyStore {b:7.2f} s, "
              f"ratio {b / a:.2f}")  # fmt: skip


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
