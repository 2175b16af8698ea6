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
