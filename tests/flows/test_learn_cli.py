"""``gptff learn`` and ``gptff results --kind learn`` on a 4-atom Cu–Au cell with EMT labels:
the table per iteration, the committee written where asked and loadable, the exit code saying
whether the committee's disagreement fell below the threshold, and bad input refused before any
work (exit 1, one line)."""

import json

import numpy as np
import pytest
from ase.build import bulk

pytest.importorskip("jobflow")

from gptff_core.cli import main

TINY_LOOP = [
    "--labeller", "emt", "--temperatures", "900", "--md-steps", "80", "--sample-interval", "10",
    "--iterations", "1", "--frames-per-iteration", "4", "--committee", "2", "--epochs", "1",
    "--holdout", "0.25", "--dtype", "float32",
]  # fmt: skip


@pytest.fixture
def cuau(tmp_path):
    atoms = bulk("Cu", "fcc", a=3.7, cubic=True)
    atoms.symbols[[1, 2]] = "Au"
    path = tmp_path / "CuAu.extxyz"
    atoms.write(path)
    return path


def test_learn_prints_iterations_writes_the_committee_and_is_queryable(tmp_path, cuau, capsys):
    store, out = tmp_path / "store", tmp_path / "learned"
    args = ["learn", str(cuau), *TINY_LOOP, "--store", str(store), "--output", str(out)]
    code = main([*args, "--json"])
    report = json.loads(capsys.readouterr().out)
    # one iteration cannot show the disagreement falling: flagged, not claimed (exit 3)
    assert code == 3 and report["threshold_reached"] is False
    assert [row["iteration"] for row in report["iterations"]] == [0]
    assert report["n_labels"] == 4 and report["n_failed_labels"] == 0
    paths = report["committee_paths"]
    assert len(paths) == 2 and all(p.startswith(str(out)) for p in paths)

    from gptff_core.committee import CommitteeCalculator

    atoms = bulk("Cu", "fcc", a=3.7, cubic=True)
    atoms.symbols[[1, 2]] = "Au"
    atoms.calc = CommitteeCalculator(paths)
    assert np.isfinite(atoms.get_potential_energy())
    assert atoms.calc.results["uncertainty"] >= 0

    assert main(["results", "--kind", "learn", "--store", str(store), "--json"]) == 0
    (record,) = json.loads(capsys.readouterr().out)
    assert record["labeller"] == "emt" and record["n_labels"] == 4
    assert record["final_model_sha256"].split(",")[0] == report["committee_sha256"][0]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--labeller-settings", "{not json"], "--labeller-settings is not JSON"),
        (["--labeller-settings", "[1, 2]"], "must be a JSON object"),
        (["--temperatures", "hot"], "--temperatures 'hot'"),
        (["--committee", "1"], "committee_size must be an integer ≥ 2"),
    ],
)
def test_bad_input_is_one_line_before_any_work(tmp_path, cuau, capsys, monkeypatch, extra, message):
    monkeypatch.chdir(tmp_path)
    store = tmp_path / "store"
    code = main(["learn", str(cuau), *TINY_LOOP, *extra, "--store", str(store)])
    err = capsys.readouterr().err
    assert code == 1 and message in err and "Traceback" not in err
    assert not store.exists()  # refused before the store was even opened
    assert not list(tmp_path.glob("learned_*"))  # nor the output directory made


def test_finetune_md_with_learn_runs_the_md_with_the_loops_final_model(tmp_path, cuau, capsys):
    """``gptff finetune-md --learn emt``: the paper's pipeline as one command. The MD of every
    temperature runs with the loop's final model (its first committee member), not the base."""
    from gptff_flows.queries.learn import learn_results
    from gptff_flows.stores import local_job_store

    store = tmp_path / "store"
    argv = ["finetune-md", "--learn", "emt", "--structure", str(cuau), "--species", "Au"]
    argv += ["--temperatures", "700,900", "--steps", "30", "--equilibration", "10"]
    argv += ["--interval", "5", "--learn-iterations", "1", "--learn-frames", "4"]
    argv += ["--store", str(store), "--json"]
    assert main(argv) == 3  # 4 atoms, 60 fs: not diffusive, too short (flagged)
    summary = json.loads(capsys.readouterr().out)
    (run,) = learn_results(local_job_store(store))
    final = run["final_model_sha256"].split(",")[0]
    docs = local_job_store(store)
    docs.connect()
    md = list(docs.query({"output.@class": "MDTemperatureDocument"}))
    assert len(md) == 2
    assert all(d["output"]["gptff"]["checkpoint_sha256"] == final for d in md)
    assert summary["inputs"]["given_checkpoint"] is True and summary["finetune"] is None
    assert main([*argv[:1], "--learn", "emt", "--no-finetune", *argv[3:]]) == 1
    assert "--learn fine-tunes by itself" in capsys.readouterr().err


def test_finetune_md_learn_says_what_it_runs(cuau, monkeypatch):
    """The human output of ``finetune-md --learn`` names the loop, not a fine-tuning on files
    (it crashed on ``len(None)`` before) nor a model "as it is"."""
    import argparse

    from ase.io import read
    from pymatgen.io.ase import AseAtomsAdaptor

    import gptff_flows.cli.finetune_md as cli
    from gptff_flows.flows.finetune_md import FineTuneMDMaker

    structure = AseAtomsAdaptor.get_structure(read(cuau))
    args = argparse.Namespace(no_finetune=False, learn="emt", train=None, model="gptff-v2",
                              ensemble="nvt")  # fmt: skip
    maker = FineTuneMDMaker(species="Au", finetune=False)
    text = cli._announce(args, maker, structure, [1, 1, 1], [700.0])
    assert text.startswith("active learning with emt labels from gptff-v2")
    provenance = argparse.Namespace(smooth=True, checkpoint_sha256="ab" * 32, model_name="x")
    doc = argparse.Namespace(finetune=None, inputs={"given_checkpoint": True}, gptff=provenance)
    monkeypatch.setattr(cli, "_md_report", lambda doc: "table")
    assert cli._report(doc).startswith("MD with the active-learning loop's final model (abab")
