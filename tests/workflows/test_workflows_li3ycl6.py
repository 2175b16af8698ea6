"""workflows/paper_li3ycl6.py: the cell built from the crystal data, the two-regime Arrhenius
fit, and the demo end to end (tiny MD, published network without training data) into a store,
then again from the store."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("atomate2")

from gptff_core.errors import ExitCode

SCRIPT = Path(__file__).parents[2] / "workflows" / "paper_li3ycl6.py"


@pytest.fixture(scope="module")
def demo():
    spec = importlib.util.spec_from_file_location("paper_li3ycl6", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["paper_li3ycl6"] = module
    spec.loader.exec_module(module)
    return module


def test_the_ordered_cell_follows_the_crystal_data(demo):
    data = json.loads(demo.DATA.read_text())
    disordered = demo.published_structure()
    cell = demo.ordered_cell(disordered)
    assert cell.composition.reduced_formula == "Li3YCl6" and len(cell) == 30
    # hexagonal cell volume a²c·√3/2 of the published lattice
    assert cell.volume == pytest.approx(data["a"] ** 2 * data["c"] * np.sqrt(3) / 2, rel=1e-6)
    # Cl on ideal hcp sites (in-plane spacing d = a/3, layers c/2 apart): Cl–Cl distances are
    # d in a layer and sqrt(d²/3 + (c/2)²) between layers
    d, c = data["a"] / 3, data["c"]
    cl = [i for i, site in enumerate(cell) if site.specie.symbol == "Cl"]
    distances = cell.distance_matrix[np.ix_(cl, cl)]
    between_layers = np.sqrt(d**2 / 3 + (c / 2) ** 2)
    assert distances[distances > 0].min() == pytest.approx(min(d, between_layers), rel=1e-4)
    # every cation sits in a regular Cl octahedron: 6 Cl at sqrt(d²/3 + (c/4)²)
    octahedral = np.sqrt(d**2 / 3 + (c / 4) ** 2)
    for index, site in enumerate(cell):
        if site.specie.symbol != "Cl":
            near = [n.nn_distance for n in cell.get_neighbors(site, 2.9)]
            assert np.allclose(near, octahedral, rtol=1e-4) and len(near) == 6, index
    # the Ewald ordering puts +9 e in each cation layer (z = 0 and z = 1/2)
    charge = {"Li": 1, "Y": 3}
    layers = {0.0: 0, 0.5: 0}
    for site in cell:
        if site.specie.symbol in charge:
            layers[round(site.frac_coords[2] % 1, 3)] += charge[site.specie.symbol]
    assert layers == {0.0: 9, 0.5: 9}


def test_regime_fits_recover_two_activation_energies(demo):
    from types import SimpleNamespace

    k_b = 8.617333262e-5  # eV/K
    rows = []
    for t in (300.0, 350.0, 400.0, 450.0, 550.0, 700.0):
        ea = 0.5 if t < 425 else 0.2
        prefactor = 1e-2 if t < 425 else 1e-2 * np.exp(-(0.5 - 0.2) / (k_b * 425))
        rows.append(SimpleNamespace(temperature=t, diffusivity=prefactor * np.exp(-ea / (k_b * t)),
                                    flags=[]))  # fmt: skip
    rows.append(SimpleNamespace(temperature=800.0, diffusivity=1.0, flags=["framework_mobile"]))
    rows.append(SimpleNamespace(temperature=650.0, diffusivity=1.0,
                                flags=["temperature_not_reached"]))  # fmt: skip
    fits = demo.regime_fits(rows, 425.0)
    assert fits["below"] == pytest.approx(0.5, abs=1e-6)
    assert fits["above"] == pytest.approx(0.2, abs=1e-6)
    assert demo.regime_fits(rows[:1], 425.0) == {}


def test_demo_without_training_data_runs_and_is_read_back(demo, tmp_path, capsys, monkeypatch):
    from gptff_flows.queries.finetune_md import finetune_md_results
    from gptff_flows.stores import local_job_store

    argv = ["--temperatures", "700,900", "--steps", "30", "--equilibration", "10"]
    argv += ["--store", str(tmp_path / "store"), "--out", str(tmp_path / "out")]
    assert demo.main(argv) == ExitCode.FLAGGED  # 60 fs of production: too short to trust
    captured = capsys.readouterr()
    assert "NO TRAINING DATA" in captured.err and "as published" in captured.err
    assert "not fine-tuned: MD with gptff-v2 as it is, smooth off" in captured.out
    assert "60 atoms" in captured.out
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["finetuned"] is False and summary["n_atoms"] == 60
    # without training data the published network runs as published (issue 13: it ran smooth)
    assert summary["smooth"] is False and "smooth=off" in summary["flow_name"]
    assert summary["flags"] and "too_short" in summary["flags"]
    assert sorted(summary["volume_ratios"]) == ["700.0", "900.0"]  # JSON keys
    assert all(0.8 < ratio < 1.5 for ratio in summary["volume_ratios"].values())
    assert [row["temperature"] for row in summary["temperatures"]] == [700.0, 900.0]
    assert Path(summary["plots"]["msd"]).is_file()
    (record,) = finetune_md_results(local_job_store(tmp_path / "store"))
    assert record["finetuned"] is False and record["n_atoms"] == 60

    def no_rerun(*_, **__):
        raise AssertionError("the stored run was recomputed")

    monkeypatch.setattr("gptff_flows.run.run_flow", no_rerun)
    assert demo.main(argv) == ExitCode.FLAGGED  # the stored verdict, again
    assert "already in the store" in capsys.readouterr().err


def test_submit_hands_the_flow_to_jobflow_remote(demo, tmp_path, capsys, monkeypatch):
    submitted = {}

    def fake_submit(flow, worker, project=None):
        submitted.update(flow=flow, worker=worker, project=project)
        return list(range(len(flow.jobs)))

    monkeypatch.setattr("gptff_flows.run.submit_flow", fake_submit)
    argv = ["--paper", "--submit", "cluster", "--project", "gptff", "--out", str(tmp_path)]
    assert demo.main(argv) == 0
    flow = submitted["flow"]
    assert submitted["worker"] == "cluster" and submitted["project"] == "gptff"
    # --paper: seven temperatures from 300 to 700 K, no fine-tune job without --train
    assert len(flow.jobs) == 7 + 1
    assert "npt T=300,350,400,450,500,600,700 sc=2x2x2" in flow.name
    assert "submitted 8 jobs" in capsys.readouterr().out


def test_bad_input_is_refused_with_a_message(demo, tmp_path, monkeypatch):
    from gptff_core.errors import GPTFFInputError

    with pytest.raises(GPTFFInputError, match="kelvins separated by commas"):
        demo.main(["--temperatures", "hot", "--out", str(tmp_path)])

    def no_work(*_, **__):
        raise AssertionError("work started before the output directory was checked")

    monkeypatch.setattr(demo, "relaxed", no_work)
    taken = tmp_path / "taken"
    taken.write_text("a file")
    with pytest.raises(GPTFFInputError, match="--out"):
        demo.main(["--out", str(taken), "--store", str(tmp_path / "store")])
    molecule = tmp_path / "water.xyz"
    molecule.write_text("3\n\nO 0 0 0\nH 0.96 0 0\nH -0.24 0.93 0\n")
    with pytest.raises(GPTFFInputError, match="no 3D periodic cell"):
        demo.main(["--structure", str(molecule), "--out", str(tmp_path / "out")])


# ------------------------------------------------------------------ --label: the loop first

TINY_LOOP = ["--label", "emt", "--iterations", "2", "--frames", "2", "--committee", "2",
             "--sample-steps", "10", "--sample-interval", "5", "--learn-epochs", "1",
             "--temperatures", "700,900", "--steps", "30", "--equilibration", "10"]  # fmt: skip


@pytest.fixture
def stand_in_labels(monkeypatch):
    """EMT has no Li, Y or Cl parameters: the "emt" labeller computes with gptff-v1 in float64
    instead (real, different from the v2 being corrected, with stress), and EMT's element check
    lets Li, Y and Cl through. Returns the list of structures labelled."""
    from ase.calculators.emt import parameters

    from gptff_core.calculator import GPTFFCalculator

    for symbol in ("Li", "Y", "Cl"):
        monkeypatch.setitem(parameters, symbol, parameters["Cu"])
    labelled = []

    def stand_in(labeller, settings, log):
        assert labeller == "emt" and settings == {}
        labelled.append(log)
        return GPTFFCalculator(model="gptff-v1", dtype="float64")

    monkeypatch.setattr("gptff_flows.jobs.labels._calculator", stand_in)
    return labelled


def _held_out(store, learning):
    """The held-out label documents of the run (LabelDocument dicts)."""
    return [store.get_output(r["uuid"], which="last", load=True)
            for r in learning["labels"] if r["holdout"]]  # fmt: skip


def test_label_path_learns_then_runs_md_and_resumes(demo, tmp_path, capsys, monkeypatch,
                                                     stand_in_labels):  # fmt: skip
    from ase import units
    from pymatgen.core import Structure

    from gptff_core.calculator import GPTFFCalculator
    from gptff_core.committee import CommitteeCalculator
    from gptff_flows.jobs import finetune_md
    from gptff_flows.schemas.learn import LearningDocument
    from gptff_flows.stores import local_job_store

    argv = [*TINY_LOOP, "--store", str(tmp_path / "store"), "--out", str(tmp_path / "out")]
    real_md_maker, calls = finetune_md._md_maker, []

    def crash_first_md(*args, **kwargs):  # the run is killed during the final MD
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("killed")
        return real_md_maker(*args, **kwargs)

    monkeypatch.setattr(finetune_md, "_md_maker", crash_first_md)
    monkeypatch.setattr(demo, "relaxed", lambda cell, *_: (cell, 0))  # tested above; seconds
    with pytest.raises(Exception, match="killed"):
        demo.main(argv)
    assert len(stand_in_labels) == 4  # 2 iterations × 2 frames labelled before the kill
    capsys.readouterr()
    before_resume = len(calls)
    assert demo.main(argv) == ExitCode.FLAGGED  # resumed: too short, threshold not reached
    assert len(stand_in_labels) == 4  # the labels were found in the store, not recomputed
    out = capsys.readouterr().out
    assert "emt labels: 4" in out and "MD with the learned model, smooth on" in out
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    learning = summary["learning"]
    assert summary["finetuned"] is True and summary["smooth"] is True
    assert learning["n_labels"] == 4 and learning["n_failed"] == 0
    assert [row["iteration"] for row in learning["iterations"]] == [0, 1]
    assert "learning_threshold_not_reached" in summary["flags"]
    assert "learned emt" in summary["flow_name"] and "it=2x2 committee=2" in summary["flow_name"]

    store = local_job_store(tmp_path / "store")
    store.connect()
    *_, newest = store.query({"output.@class": "LearningDocument"}, load=True,
                             sort={"completed_at": 1})  # fmt: skip
    doc = LearningDocument.model_validate(newest["output"])
    assert doc.inputs["ensemble"] == "npt" and doc.inputs["temperatures"] == [700.0, 900.0]
    held = _held_out(store, doc.model_dump())
    assert len(held) == 2  # one per iteration
    # each label is what the stand-in code computes for its structure; the report's cell volume
    # (over the relaxed cell's) and label pressure (GPa, positive = compressed) follow from it
    cells = [c for c in learning["labelled_cells"] if c["holdout"]]
    volume = demo.ordered_cell(demo.published_structure()).volume  # relax is patched out
    for label, cell in zip(held, cells, strict=True):
        atoms = Structure.from_dict(label["structure"]).to_ase_atoms()
        atoms.calc = GPTFFCalculator(model="gptff-v1", dtype="float64")
        assert label["energy"] == pytest.approx(atoms.get_potential_energy(), abs=1e-8)
        assert cell["volume_ratio"] == pytest.approx(atoms.get_volume() / volume, rel=1e-9)
        pressure = -np.trace(atoms.get_stress(voigt=False)) / 3 / units.GPa
        assert cell["pressure"] == pytest.approx(pressure, abs=1e-6)
    # the held-out force MAE of the final committee, recomputed from its checkpoints
    paths = [str(p) for p in doc.write_committee(tmp_path / "committee")]
    errors, base_errors = [], []
    for label in held:
        atoms = Structure.from_dict(label["structure"]).to_ase_atoms()
        atoms.calc = CommitteeCalculator(paths, smooth=True)
        errors.append(np.abs(atoms.get_forces() - np.array(label["forces"])).ravel())
        atoms.calc = GPTFFCalculator(model="gptff-v2", smooth=True)
        base_errors.append(np.abs(atoms.get_forces() - np.array(label["forces"])).ravel())
    last = learning["iterations"][-1]
    assert last["force_mae"] == pytest.approx(np.concatenate(errors).mean(), rel=1e-4)
    assert learning["base_force_mae"] == pytest.approx(np.concatenate(base_errors).mean(), rel=1e-4)
    # the MD ran with member 0 of the final committee
    md = list(store.query({"output.@class": "MDTemperatureDocument"}, ["output.gptff"]))
    assert md and {d["output"]["gptff"]["checkpoint_sha256"] for d in md} == {
        doc.committee_sha256[0]
    }

    def no_rerun(*_, **__):
        raise AssertionError("the stored run was recomputed")

    monkeypatch.setattr("gptff_flows.run.run_flow", no_rerun)
    assert demo.main(argv) == ExitCode.FLAGGED  # printed from the store
    captured = capsys.readouterr()
    assert "already in the store" in captured.err and "emt labels: 4" in captured.out
    assert len(stand_in_labels) == 4
    assert len(calls) - before_resume == 1  # the resumed run reran only the MD it lost


def test_paper_label_submits_the_full_size_loop(demo, tmp_path, capsys, monkeypatch):
    submitted = {}

    def fake_submit(flow, worker, project=None):
        submitted.update(flow=flow, worker=worker)
        return [1]

    monkeypatch.setattr("gptff_flows.run.submit_flow", fake_submit)
    argv = ["--paper", "--label", "vasp", "--submit", "hpc", "--out", str(tmp_path)]
    assert demo.main(argv) == 0
    learn, md = submitted["flow"].jobs
    options = learn.jobs[0].function_args[2]  # the loop's settings, given to its first job
    size = demo.learning().LEARN_PAPER
    assert options["labeller"] == "vasp" and options["labeller_settings"]["vdw"] == "optB88"
    assert options["iterations"] == size["iterations"] and options["ensemble"] == "npt"
    assert options["frames_per_iteration"] * options["iterations"] == 2000
    assert options["temperatures"] == demo.PAPER_SIZE["temperatures"]
    assert options["supercell"] == [1, 1, 2] and options["smooth"] is True
    assert len(md.jobs) == 7 + 1  # MD at the seven temperatures and the summary, no fine-tune
    assert "learned vasp" in md.name and "sc=2x2x2" in md.name


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--label", "emt"], "EMT has no parameters for"),
        (["--label", "gpaw", "--train", "frames.extxyz"], "drop --train"),
        (["--paper", "--label", "vasp"], "submit it"),
        (["--iterations", "3"], "need.*--label"),
        (["--label", "vasp", "--label-settings", "{oops"], "not JSON"),
        (["--label", "vasp", "--frames", "0"], "frames_per_iteration"),
    ],
)
def test_label_options_are_refused_before_any_work(demo, tmp_path, monkeypatch, argv, message):
    from gptff_core.errors import GPTFFInputError

    def no_work(*_, **__):
        raise AssertionError("work started before the options were checked")

    monkeypatch.setattr(demo, "relaxed", no_work)
    with pytest.raises(GPTFFInputError, match=message):
        demo.main([*argv, "--out", str(tmp_path / "out"), "--store", str(tmp_path / "s")])


def test_label_gpaw_without_gpaw_is_one_line_exit_1(demo, tmp_path, capsys, monkeypatch):
    import importlib.util

    from gptff_core.cli import report_input_errors

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "gpaw" else real(name, *a))  # fmt: skip
    monkeypatch.setattr(demo, "relaxed", lambda *_: pytest.fail("work started"))
    argv = ["--label", "gpaw", "--out", str(tmp_path / "out"), "--store", str(tmp_path / "s")]
    assert report_input_errors("paper_li3ycl6.py", lambda: demo.main(argv)) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("paper_li3ycl6.py: error: ")
    assert "make gpaw" in err[0]
