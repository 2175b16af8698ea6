"""`gptff eos`, `gptff results` and `gptff relax --store` with an embedded store and no server."""

import csv
import io
import json

import pytest

pytest.importorskip("atomate2")

import ase.io
from ase.build import bulk

from gptff_core.cli import main


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def cif(tmp_path_factory):
    path = tmp_path_factory.mktemp("inputs") / "Cu.cif"
    atoms = bulk("Cu", "fcc", a=3.61)
    atoms.set_cell(atoms.cell * 1.05 ** (1 / 3), scale_atoms=True)  # +5 % volume
    ase.io.write(path, atoms)
    return path


def test_eos_then_results_find_it(capsys, tmp_path, cif):
    store = tmp_path / "store"
    code, out, _ = _run(
        capsys, "eos", cif, "--store", store, "--strain", 0.02, "--points", 4, "--json"
    )
    assert code == 0
    (row,) = json.loads(out)
    assert {"formula", "v0_per_atom", "b0", "e0_per_atom"} <= set(row)
    assert row["formula"] == "Cu" and 10 < row["v0_per_atom"] < 14 and row["b0"] > 0
    assert (store / "plots").is_dir() and row["plot"].startswith(str(store / "plots"))

    code, out, _ = _run(capsys, "results", "--store", store, "--kind", "eos", "--json")
    assert code == 0
    (found,) = json.loads(out)
    assert found["v0_per_atom"] == row["v0_per_atom"] and found["b0"] == row["b0"]
    assert found["uuid"] == row["uuid"]

    code, out, _ = _run(capsys, "results", "--store", store, "--formula", "Cu")
    assert code == 0 and "EOS fits (1)" in out and "relaxations (1)" in out

    code, out, _ = _run(capsys, "results", "--store", store, "--kind", "eos", "--csv")
    (line,) = list(csv.DictReader(io.StringIO(out)))
    assert float(line["b0"]) == pytest.approx(row["b0"])


def test_eos_human_summary(capsys, tmp_path, cif, monkeypatch):
    monkeypatch.delenv("GPTFF_STORE", raising=False)
    monkeypatch.setenv("GPTFF_STORE_DIR", str(tmp_path / "default"))
    code, out, err = _run(capsys, "eos", cif, "--strain", 0.02, "--points", 4, "--no-plot")
    assert code == 0
    assert "V0 (Å³/atom)" in out and "B0 (GPa)" in out
    assert f"embedded store {tmp_path / 'default'}" in out
    assert "[1/1]" in err  # progress
    assert not (tmp_path / "default" / "plots").exists()


def test_relax_store_records_the_result(capsys, tmp_path):
    structure = tmp_path / "NaCl.cif"
    atoms = bulk("NaCl", "rocksalt", a=5.7)
    atoms.rattle(0.02, seed=2)
    ase.io.write(structure, atoms)
    store = tmp_path / "store"
    out_file = tmp_path / "relaxed.cif"
    code, out, _ = _run(
        capsys, "relax", structure, "--output", out_file, "--store", store, "--json"
    )
    assert code == 0
    summary = json.loads(out)
    code, out, _ = _run(capsys, "results", "--store", store, "--kind", "relax", "--json")
    (record,) = json.loads(out)
    assert record["uuid"] == summary["store_uuid"]
    assert record["energy_eV"] == pytest.approx(summary["final_energy_eV"])
    assert record["formula"] == "NaCl" and record["converged"] is True


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["results", "--csv"], "--kind"),
        (["results", "--chemsys", "Na-Qq"], "chemsys"),
        (["eos", "missing.cif"], "no such file"),
        (["eos", "FILE", "--strain", "0.5"], "--strain"),
    ],
)
def test_bad_input_exits_1(capsys, tmp_path, cif, argv, message):
    argv = [str(cif) if a == "FILE" else a for a in argv]
    code, _, err = _run(capsys, *argv, "--store", tmp_path / "store")
    assert code == 1
    assert err.startswith("gptff: error:") and message in err


def test_results_never_creates_a_store(capsys, tmp_path):
    """`gptff results --store /typo/dir` created an empty store there and printed '(none)'."""
    typo = tmp_path / "typo" / "dir"
    code, out, err = _run(capsys, "results", "--store", typo)
    assert code == 1 and out == ""
    assert err.startswith(f"gptff: error: no store at {typo}") and err.count("\n") == 1
    assert not (tmp_path / "typo").exists()


def _stored_relaxation(capsys, tmp_path):
    path = tmp_path / "NaCl.cif"
    ase.io.write(path, bulk("NaCl", "rocksalt", a=5.64))
    store = tmp_path / "store"
    code, _, err = _run(capsys, "relax", path, "--store", store, "--fmax", "0.5")
    assert code == 0, err
    return store


@pytest.mark.parametrize("damage", ["deleted outputs", "not a database"])
def test_a_damaged_store_is_one_line_and_exit_1(capsys, tmp_path, monkeypatch, damage):
    """A deleted collection read as an empty store; a damaged one gave a 47-line traceback."""
    monkeypatch.chdir(tmp_path)  # gptff relax writes ./NaCl_relaxed.cif
    store = _stored_relaxation(capsys, tmp_path)
    assert _run(capsys, "results", "--kind", "relax", "--store", store)[1].count("NaCl") == 1
    outputs = store / "gptff" / "outputs.collection"
    if damage == "deleted outputs":
        outputs.unlink()
    else:
        outputs.write_bytes(b"garbage!" * 512)
    for argv in (["results"], ["relax", tmp_path / "NaCl.cif"]):  # readers and writers
        code, out, err = _run(capsys, *argv, "--store", store)
        assert code == 1 and out == ""
        assert err.startswith(f"gptff: error: the store at {store}") and err.count("\n") == 1
        assert "is damaged" in err and "restore it from a backup" in err


def test_an_unreachable_mongodb_is_one_line_before_any_work(capsys, cif, tmp_path, monkeypatch):
    """It failed only after the work, with a 72-line traceback."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GPTFF_STORE_TIMEOUT", "0.3")
    uri = "mongodb://me:hunter2@127.0.0.1:1/gptff"
    for argv in (["results"], ["eos", cif], ["relax", cif]):
        code, out, err = _run(capsys, *argv, "--store", uri)
        assert code == 1 and out == ""
        assert err.startswith("gptff: error: cannot reach MongoDB mongodb://me:***@127.0.0.1:1")
        assert err.count("\n") == 1 and "hunter2" not in err
