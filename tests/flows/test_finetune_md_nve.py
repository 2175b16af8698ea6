"""MD sanity of the fine-tune-then-MD MD job: NVE (velocity Verlet) with GPTFF v2 in float64 on
an 8-atom Li3N cell (1×1×2), 300 steps of 1 fs from 600 K, through the same job the flow runs
(the checkpoint handed over as a store blob).

Bound: with ``smooth=True`` the total energy stays within ``NVE_BOUND`` = 2e-4 eV/atom of its
start. Measured (this test's cell and steps): smooth on 3.0e-5 eV/atom, smooth off 1.6e-2 eV/atom.
Also measured with a 32-atom Li3N 2×2×2 cell, 300 steps of 1 fs from 600 K: smooth on 2.5e-5
eV/atom (drift 1.2e-5 eV/atom/ps), smooth off 2.4e-2 eV/atom (drift −2.6e-2 eV/atom/ps) — without
the envelopes the energy jumps whenever a bond or triplet crosses its cutoff."""

import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("atomate2")

from pymatgen.core import Lattice, Structure

from gptff_flows.jobs.finetune_md import md_job
from gptff_flows.schemas.finetune_md import CheckpointBlob, load_trajectory

NVE_BOUND = 2e-4  # eV/atom


def li3n() -> Structure:
    lattice = Lattice.hexagonal(3.648, 3.875)
    frac = [[0, 0, 0], [0, 0, 0.5], [1 / 3, 2 / 3, 0], [2 / 3, 1 / 3, 0]]
    return Structure(lattice, ["N", "Li", "Li", "Li"], frac)


def _nve(smooth: bool, tmp_path: Path, monkeypatch) -> tuple[float, object]:
    checkpoint = Path(os.environ["GPTFF_MODEL_DIR"]) / "gptff_v2.pth"
    blob = CheckpointBlob.from_file(checkpoint)
    settings = dict(
        ensemble="nve",
        time_step=1.0,
        n_steps=300,
        equilibration_steps=0,
        traj_interval=1,
        supercell=[1, 1, 2],
        pressure=0.0,
        tdamp=100.0,
        pdamp=1000.0,
        seed=0,
        species="Li",
        charge=None,
        dtype="float64",
        smooth=smooth,
        device="cpu",
        skin=1.0,
        n_blocks=5,
    )
    work = tmp_path / f"smooth_{smooth}"
    work.mkdir()
    monkeypatch.chdir(work)
    doc = md_job.original(blob, li3n(), 600.0, settings)
    return doc.conserved_max_deviation, doc


def test_nve_energy_is_conserved_with_smooth_envelopes(tmp_path, monkeypatch):
    deviation, doc = _nve(True, tmp_path, monkeypatch)
    print(f"smooth=True NVE deviation {deviation:.2e} eV/atom")
    frames = load_trajectory(doc)
    assert doc.nsites == 8 and len(frames["steps"]) == 301
    assert doc.gptff.smooth is True and doc.conserved_quantity == "total energy"
    assert np.abs(frames["positions"][-1] - frames["positions"][0]).max() > 0.05  # atoms moved
    assert deviation < NVE_BOUND, f"NVE deviation {deviation:.2e} eV/atom with smooth=True"


@pytest.mark.slow
def test_nve_without_envelopes_for_comparison(tmp_path, monkeypatch):
    """Measures smooth=False on the same run (reported, loosely bounded: 0.1 eV/atom)."""
    deviation, _ = _nve(False, tmp_path, monkeypatch)
    print(f"smooth=False NVE deviation {deviation:.2e} eV/atom")
    assert deviation < 0.1
