"""The paper's EOS demonstration (workflows/paper_eos.py): crystal data build the right cells,
the statistics are right, and one compound runs end to end into a temporary store."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Composition

from gptff_core.errors import ExitCode

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
sys.path.insert(0, str(WORKFLOWS))
paper_eos = pytest.importorskip("paper_eos")

ENTRIES = json.loads(paper_eos.DATA.read_text())["compounds"]
ATOMS_PER_CELL = {"rocksalt": 8, "CsCl": 2, "zincblende": 8, "fluorite": 12, "perovskite": 5,
                  "wurtzite": 4, "rutile": 6, "B2 alloy": 2, "L1_2 alloy": 4}  # fmt: skip


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["name"] for e in ENTRIES])
def test_published_cells_have_the_formula_and_volume_of_their_data(entry):
    structure = paper_eos.published_structure(entry)
    assert structure.composition.reduced_composition.almost_equals(Composition(entry["name"]))
    assert len(structure) == ATOMS_PER_CELL[entry["type"]]
    a, c = entry["a"], entry.get("c")
    volume = {"wurtzite": np.sqrt(3) / 2 * a * a * c if c else None, "rutile": a * a * c
              if c else None}.get(entry["type"], a**3)  # fmt: skip
    assert structure.volume == pytest.approx(volume, rel=1e-9)


def test_there_are_39_compounds():
    assert len(ENTRIES) == 39 == len({e["name"] for e in ENTRIES})


def test_parity_statistics_by_hand():
    fitted, reference = np.array([11.0, 19.0, 30.0]), np.array([10.0, 20.0, 30.0])
    r2, mape = paper_eos.parity_statistics(fitted, reference)
    assert r2 == pytest.approx(1 - 2 / 200)
    assert mape == pytest.approx(100 * (0.1 + 0.05 + 0) / 3)
    assert paper_eos.parity_statistics(np.array([]), np.array([])) == (None, None)
    assert paper_eos.parity_statistics(np.array([11.0]), np.array([10.0])) == (
        None,
        pytest.approx(10.0),
    )


def test_lif_is_refused_with_its_reason_and_no_crash(tmp_path, capsys):
    """Issue 13: `--compounds LiF` crashed with `min() arg is an empty sequence` and never said
    why the fit failed. The published network's LiF points drop by ~56 meV/atom where F–F pairs
    cross 5 Å: no EOS minimum; the table, the summary and the exit code say so."""
    args = ["--compounds", "LiF", "--store", str(tmp_path / "store"), "--out", str(tmp_path)]
    assert paper_eos.main(args) == ExitCode.FAILED
    (row,) = json.loads((tmp_path / "summary.json").read_text())["compounds"]
    assert row["verdict"] == "refused" and row["v0_gptff"] is None
    assert row["flags"] in ("no_minimum", "fit_failed") and "5 Å bond cutoff" in row["reason"]
    out = capsys.readouterr().out
    assert f"| LiF | rocksalt | – | {row['v0_reference']:.3f} | – | – | refused: " in out
    assert f"LiF: refused ({row['flags']}): " in out
    assert not (tmp_path / "v0_parity.png").exists()  # nothing to plot, and no crash


def test_a_failed_job_is_a_row_with_its_reason(tmp_path, capsys, monkeypatch):
    """A job that raises (here the fit job, injected) fails that compound only; the job and its
    error are named; exit code 4."""

    def broken(structures):
        raise RuntimeError("injected failure")

    monkeypatch.setattr("gptff_flows.jobs.eos.cutoff_crossings", broken)
    args = ["--compounds", "LiF", "--store", str(tmp_path / "store"), "--out", str(tmp_path)]
    assert paper_eos.main(args) == ExitCode.FAILED
    (row,) = json.loads((tmp_path / "summary.json").read_text())["compounds"]
    assert row["verdict"] == "failed" and "RuntimeError: injected failure" in row["reason"]
    assert "LiF: failed: " in capsys.readouterr().out


EXIT_CODES = {"ok": ExitCode.OK, "flagged": ExitCode.FLAGGED, "refused": ExitCode.FAILED}


def test_one_compound_end_to_end_and_rerun_from_the_store(tmp_path):
    """NaCl's fit is flagged with the published network (its third shell crosses 5 Å inside
    ±2 %); the exit code says so, and V0 is still near the experimental one."""
    args = ["--compounds", "NaCl", "--store", str(tmp_path / "store"), "--out", str(tmp_path)]
    code = paper_eos.main(args)
    summary = json.loads((tmp_path / "summary.json").read_text())
    (row,) = summary["compounds"]
    assert code == EXIT_CODES[row["verdict"]]
    assert (row["verdict"] == "ok") == (row["flags"] == "") == (row["reason"] is None)
    assert row["v0_gptff"] == pytest.approx(row["v0_reference"], rel=0.05)
    assert (tmp_path / "v0_parity.png").stat().st_size > 0
    assert paper_eos.main(args) == code  # found in the store, not recomputed
    rerun = json.loads((tmp_path / "summary.json").read_text())
    assert rerun["compounds"] == summary["compounds"]
    assert rerun["seconds"] < summary["seconds"]


def test_submit_sends_one_flow_per_compound(tmp_path, monkeypatch, capsys):
    submitted = []

    def fake_submit(flow, worker, project=None):
        submitted.append((flow.name, worker, project))
        return list(range(len(flow.jobs)))

    monkeypatch.setattr("gptff_flows.run.submit_flow", fake_submit)
    args = ["--compounds", "NaCl", "MgO", "--submit", "cluster", "--out", str(tmp_path)]
    assert paper_eos.main(args) == 0
    assert [name for name, *_ in submitted] == [
        "paper-eos NaCl gptff-v2 float32 fmax=0.02",
        "paper-eos MgO gptff-v2 float32 fmax=0.02",
    ]
    assert all(worker == "cluster" for _, worker, _ in submitted)
    assert "run this again without --submit" in capsys.readouterr().out
