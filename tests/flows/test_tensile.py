"""The tensile-strain MD flow end to end in a temporary embedded store with tiny settings (16 Ti
atoms, strains 0 and 4 %, ~25 MD steps each), the oriented hcp cell, the strained cell, the
query and the CLI, and input validation."""

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("atomate2")

from ase.build import bulk

from gptff_core.cli import main as cli_main
from gptff_core.errors import GPTFFInputError
from gptff_flows.flows.tensile import TI_A, TI_C, TensileMDMaker, oriented_hcp_cell
from gptff_flows.jobs.tensile import strained_cell
from gptff_flows.queries.tensile import tensile_results
from gptff_flows.run import run_flow
from gptff_flows.stores import local_job_store

TINY = dict(
    strain_step=0.04,
    max_strain=0.04,
    steps_per_strain=10,
    equilibration_steps=5,
    initial_equilibration_steps=10,
    snapshot_interval=5,
    poisson=0.3,
)


def test_oriented_cell_b_is_along_10m10_with_length_root3_a():
    structure = oriented_hcp_cell(repeat=(1, 1, 1))
    a1 = np.array([TI_A, 0, 0])  # hexagonal cell as ASE builds it: a2 at 120° from a1
    a2 = np.array([-TI_A / 2, TI_A * np.sqrt(3) / 2, 0])
    direction_01m10 = a1 + 2 * a2  # [0 1 -1 0] in four-index notation = [1 2 0] in three-index
    hexagonal = bulk("Ti", "hcp", a=TI_A, c=TI_C).cell.array
    np.testing.assert_allclose(hexagonal[:2], [a1, a2], atol=1e-9)
    b = structure.lattice.matrix[1]
    assert np.linalg.norm(b) == pytest.approx(np.sqrt(3) * TI_A)
    np.testing.assert_allclose(b, direction_01m10, atol=1e-9)
    np.testing.assert_allclose(structure.lattice.abc, [TI_A, np.sqrt(3) * TI_A, TI_C])
    assert len(oriented_hcp_cell(repeat=(2, 1, 2))) == 16


def test_strained_cell_scales_the_axis_and_contracts_the_others():
    reference = np.diag([3.0, 5.0, 4.0])
    cell = strained_cell(reference, 0.1, axis=1, poisson=0.25)
    np.testing.assert_allclose(np.diag(cell), [3 * 1.1**-0.25, 5 * 1.1, 4 * 1.1**-0.25])
    np.testing.assert_allclose(strained_cell(reference, 0.1, 1, 0.0), np.diag([3.0, 5.5, 4.0]))


def test_flow_end_to_end_in_a_store(tmp_path, capsys, monkeypatch):
    structure = oriented_hcp_cell(repeat=(2, 1, 2))
    b0, a0, c0 = (structure.lattice.abc[i] for i in (1, 0, 2))
    store = local_job_store(tmp_path / "store")
    # a relative plot directory names the caller's directory, not run_flow's temporary one
    # (issue 13: the plots were written there and deleted)
    monkeypatch.chdir(tmp_path)
    maker = TensileMDMaker(name="tiny tensile", plot_dir="plots", **TINY)
    flow = maker.make(structure)
    assert len(flow.jobs) == 3  # two strains + summary
    responses = run_flow(flow, store)

    steps = [responses[job.uuid][1].output for job in flow.jobs[:-1]]
    assert [s.strain for s in steps] == [0.0, 0.04]
    for step in steps:
        eps = step.strain
        assert step.cell_lengths[1] == pytest.approx(b0 * (1 + eps), rel=1e-12)
        assert step.cell_lengths[0] == pytest.approx(a0 * (1 + eps) ** -0.3, rel=1e-12)
        assert step.cell_lengths[2] == pytest.approx(c0 * (1 + eps) ** -0.3, rel=1e-12)
        assert sum(step.fractions.values()) == pytest.approx(1.0)
        assert sum(step.fractions_last.values()) == pytest.approx(1.0)
        assert step.n_snapshots == 2
        assert len(step.xrd_two_theta) == len(step.xrd_intensity) == 1001
        assert max(step.xrd_intensity) == pytest.approx(100, abs=1e-3)
        assert np.asarray(step.structure.site_properties["velocities"]).shape == (16, 3)
        assert step.gptff.smooth is False  # the published network by default
        # mean T of production checked against the target (16 atoms, 20 fs: a wide tolerance)
        check = step.temperature_check
        assert check.mean == pytest.approx(step.mean_temperature) and check.tolerance > 0
        assert step.flags == ([] if check.reached else ["temperature_not_reached"])
    # the first step equilibrates from Maxwell–Boltzmann velocities, the second continues
    assert steps[0].equilibration_steps == 15 and steps[1].equilibration_steps == 5
    # 4 % tension raises the axial stress by several GPa (elastic, ~100 GPa modulus)
    assert steps[1].stress > steps[0].stress + 1.0

    store.connect()
    stored = store.query_one({"uuid": flow.jobs[0].uuid}, load=True)["output"]
    assert stored["strain"] == 0.0
    records = tensile_results(store, flow_name="tiny tensile")
    assert len(records) == 1
    record = records[0]
    assert record["n_atoms"] == 16 and record["temperature"] == 100.0
    summary = store.query_one({"uuid": flow.jobs[-1].uuid}, load=False)["output"]
    assert summary["gptff"]["job_type"] == "tensile"
    assert [row["strain"] for row in record["rows"]] == [0.0, 0.04]
    assert record["rows"][1]["stress"] == pytest.approx(steps[1].stress)
    assert record["fcc_onset_strain"] is None or record["fcc_onset_strain"] in (0.0, 0.04)
    for path in record["plots"].values():
        assert Path(path).parent == tmp_path / "plots" and Path(path).stat().st_size > 1000
    assert sorted(record["plots"]) == ["fractions", "stress_strain", "xrd"]

    code = cli_main(["results", "--store", str(tmp_path / "store"), "--kind", "tensile", "--json"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed[0]["rows"][0]["strain"] == 0.0
    cli_main(["results", "--store", str(tmp_path / "store"), "--kind", "tensile"])
    assert "tensile strain MD (1)" in capsys.readouterr().out


def test_a_strain_whose_temperature_is_not_reached_is_flagged(tmp_path, monkeypatch):
    """With no tolerance every measured mean misses the target: each step, the summary and
    the query carry ``temperature_not_reached``."""
    import gptff_core.md as md_rules  # the temperature rule of gptff md and the workflows

    monkeypatch.setattr(md_rules, "TEMPERATURE_RELATIVE_TOLERANCE", 0.0)
    monkeypatch.setattr(md_rules, "TEMPERATURE_SIGMAS", 0.0)
    store = local_job_store(tmp_path / "store")
    flow = TensileMDMaker(name="flagged tensile", **TINY).make(oriented_hcp_cell(repeat=(2, 1, 2)))
    summary = run_flow(flow, store)[flow.output.uuid][1].output
    assert summary.flags == ["temperature_not_reached"]
    assert all(row.flags == ["temperature_not_reached"] for row in summary.rows)
    (record,) = tensile_results(store)
    assert record["verdict"] == "temperature_not_reached"
    assert record["rows"][0]["flags"] == ["temperature_not_reached"]


def test_a_structure_without_a_periodic_cell_is_refused():
    from pymatgen.core import Lattice, Structure

    slab = Structure(
        Lattice.cubic(8.0, pbc=(True, True, False)), ["Ti", "Ti"], [[0] * 3, [0.5] * 3]
    )
    with pytest.raises(GPTFFInputError, match="no 3D periodic cell"):
        TensileMDMaker().make(slab)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"temperature": -5}, "temperature must be a number > 0 \\(K\\)"),
        ({"strain_step": 0}, "strain_step"),
        ({"max_strain": 0.01}, "max_strain"),
        ({"max_strain": 0.8}, "max_strain"),
        ({"axis": 3}, "axis"),
        ({"poisson": 0.5}, "poisson"),
        ({"time_step": 20}, "fs"),
        ({"snapshot_interval": 300}, "snapshot_interval"),
        ({"equilibration_steps": -1}, "equilibration_steps"),
        ({"dtype": "float16"}, "dtype"),
        ({"two_theta_range": (50, 30)}, "two_theta_range"),
    ],
)
def test_input_validation(change, message):
    with pytest.raises(GPTFFInputError, match=message):
        TensileMDMaker(**change).make(oriented_hcp_cell(repeat=(1, 1, 1)))


def test_structure_must_be_a_structure():
    with pytest.raises(GPTFFInputError, match="pymatgen Structure"):
        TensileMDMaker().make(bulk("Ti", "hcp"))


def test_strains_include_the_maximum():
    assert TensileMDMaker(strain_step=0.02, max_strain=0.16).strains()[-1] == 0.16
    assert len(TensileMDMaker(strain_step=0.02, max_strain=0.2).strains()) == 11


def test_demo_script_submits_the_flow_to_jobflow_remote(tmp_path, monkeypatch, capsys):
    import importlib.util
    import sys

    script = Path(__file__).parents[2] / "workflows" / "paper_ti_strain.py"
    spec = importlib.util.spec_from_file_location("paper_ti_strain", script)
    demo = importlib.util.module_from_spec(spec)
    sys.modules["paper_ti_strain"] = demo
    spec.loader.exec_module(demo)
    submitted = {}

    def fake_submit(flow, worker, project=None):
        submitted.update(flow=flow, worker=worker)
        return list(range(len(flow.jobs)))

    monkeypatch.setattr("gptff_flows.run.submit_flow", fake_submit)
    argv = ["--paper", "--experimental-cell", "--submit", "cluster", "--out", str(tmp_path)]
    assert demo.main(argv) == 0
    flow = submitted["flow"]
    assert submitted["worker"] == "cluster"
    assert len(flow.jobs) == 11 + 1  # strains 0, 2, …, 20 % and the summary
    first = flow.jobs[0].function_args[0]
    assert len(first) == 960 and first.lattice.b == pytest.approx(5 * np.sqrt(3) * TI_A)
    assert "submitted 12 jobs" in capsys.readouterr().out


def test_a_crashed_run_resumes_from_the_stored_steps(tmp_path, monkeypatch):
    """The second strain fails on the first run; run_flow(resume=True) on a new flow of the
    same name runs only that strain and the summary, and ends exactly where an uninterrupted
    run ends (the MD continues from the stored structure and velocities)."""
    import gptff_flows.jobs.tensile as tensile_jobs

    structure = oriented_hcp_cell(repeat=(2, 1, 2))
    maker = TensileMDMaker(name="resumable tensile", **TINY)
    clean = run_flow(flow := maker.make(structure), local_job_store(tmp_path / "clean"))
    expected = clean[flow.output.uuid][1].output

    store = local_job_store(tmp_path / "crashed")
    real = tensile_jobs.broadened_average
    calls = []

    def crash_on_second_strain(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("node lost")
        return real(*args, **kwargs)

    monkeypatch.setattr(tensile_jobs, "broadened_average", crash_on_second_strain)
    with pytest.raises(RuntimeError):
        run_flow(maker.make(structure), store)
    monkeypatch.undo()
    assert tensile_results(store) == []  # no summary: the run did not finish

    again = maker.make(structure)
    responses = run_flow(again, store, resume=True)
    ran = {again_job.name for again_job in again.jobs if again_job.uuid in responses}
    assert ran == {"resumable tensile ε=4%", "resumable tensile summary"}
    resumed = responses[again.output.uuid][1].output
    assert [row.strain for row in resumed.rows] == [0.0, 0.04]
    for got, want in zip(resumed.rows, expected.rows, strict=True):
        assert got.stress == pytest.approx(want.stress, rel=1e-6, abs=1e-6)
        assert got.mean_temperature == pytest.approx(want.mean_temperature, rel=1e-6)


def test_demo_script_checks_its_output_directory_before_any_work(tmp_path, monkeypatch):
    import importlib.util

    script = Path(__file__).parents[2] / "workflows" / "paper_ti_strain.py"
    spec = importlib.util.spec_from_file_location("paper_ti_strain_out", script)
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)

    def no_work(*_, **__):
        raise AssertionError("work started before the output directory was checked")

    monkeypatch.setattr(demo, "relaxed_constants", no_work)
    taken = tmp_path / "taken"
    taken.write_text("a file")
    with pytest.raises(GPTFFInputError, match="--out"):
        demo.main(["--out", str(taken), "--store", str(tmp_path / "store")])
    assert not (tmp_path / "store").exists()


def test_demo_script_refuses_a_bad_repeat():
    import importlib.util

    script = Path(__file__).parents[2] / "workflows" / "paper_ti_strain.py"
    spec = importlib.util.spec_from_file_location("paper_ti_strain_repeat", script)
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    assert demo._repeat("6,3,4") == (6, 3, 4)
    for bad in ("4,2", "a,b,c", "4,2,3,1"):
        with pytest.raises(GPTFFInputError, match="three integers NX,NY,NZ"):
            demo._repeat(bad)


def test_calculator_kwargs_reach_the_calculator_and_may_not_repeat_a_field():
    """``calculator_kwargs`` (from GPTFFOptions) reach the step's calculator next to ``skin``;
    the settings of a run without them are those of earlier versions (same input hash); a key
    that repeats a Maker field is refused rather than silently overridden."""
    import gptff_flows.jobs.tensile as tensile_jobs

    structure = oriented_hcp_cell(repeat=(1, 1, 1))
    settings = TensileMDMaker(calculator_kwargs={"bond_window": 0.7}).settings(structure)
    assert settings["calculator_kwargs"] == {"bond_window": 0.7}
    assert "calculator_kwargs" not in TensileMDMaker().settings(structure)
    calculator = tensile_jobs._calculator(settings)
    assert calculator.model.config.bond_window == 0.7
    assert calculator.graph_builder is not None  # skin 1 Å: neighbour lists reused
    with pytest.raises(GPTFFInputError, match="calculator_kwargs sets skin"):
        TensileMDMaker(calculator_kwargs={"skin": 2.0}).make(structure)
