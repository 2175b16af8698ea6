"""The fine-tune-then-MD flow end to end in a temporary embedded store, with tiny settings:
EMT-labelled Cu–Au frames (tests/training_fixtures.py), one epoch of fine-tuning, MD of a
4-atom Cu3Au cell at two temperatures for 60+20 steps each. The checkpoint travels through the
store's "data" collection: the fine-tune job's scratch directory is gone before the MD jobs run,
the MD jobs write the checkpoint into their own directories, and no MD job opens a file of the
fine-tune job. Also: training data from store documents, and input validation."""

import builtins
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("atomate2")

from ase import units
from ase.build import bulk
from ase.io import write
from jobflow import run_locally
from pymatgen.io.ase import AseAtomsAdaptor
from training_fixtures import emt_configurations

from gptff_core.errors import ExitCode, GPTFFInputError
from gptff_flows.flows.finetune_md import FineTuneMDMaker
from gptff_flows.schemas.finetune_md import CheckpointBlob, load_trajectory
from gptff_flows.stores import local_job_store

TINY = dict(
    species="Au",
    temperatures=[600.0, 1200.0],
    n_steps=60,
    equilibration_steps=20,
    traj_interval=5,
    recipe={"epochs": 1, "learning_rate": 1e-3, "max_structures_per_batch": 8},
)


@pytest.fixture(scope="module")
def cu3au():
    atoms = bulk("Cu", "fcc", a=3.70, cubic=True)
    atoms.set_chemical_symbols(["Au", "Cu", "Cu", "Cu"])
    return AseAtomsAdaptor.get_structure(atoms)


@pytest.fixture(scope="module")
def train_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "emt.extxyz"
    write(path, emt_configurations(24, seed=1))
    return path


def test_flow_end_to_end_checkpoint_through_the_store(tmp_path, cu3au, train_file, monkeypatch):
    store = local_job_store(tmp_path / "store")
    maker = FineTuneMDMaker(**TINY, plot_dir=str(tmp_path / "plots"))
    flow = maker.make(cu3au, train_files=[train_file])
    finetune, *md_jobs, summary = flow.jobs

    scratch_dirs = []
    opened = []
    real_open = builtins.open
    import tempfile

    real_tempdir = tempfile.TemporaryDirectory

    class RecordingTempdir(real_tempdir):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if kwargs.get("prefix") == "gptff-finetune-":
                scratch_dirs.append(self.name)

    def recording_open(file, *args, **kwargs):
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryDirectory", RecordingTempdir)
    monkeypatch.setattr(builtins, "open", recording_open)
    responses = run_locally(  # one directory per job, as on a cluster
        flow,
        store=store,
        ensure_success=True,
        log=False,
        root_dir=tmp_path / "jobs",
        create_folders=True,
    )
    monkeypatch.undo()

    # the fine-tune job trained in a scratch directory that no longer exists
    assert len(scratch_dirs) == 1 and not Path(scratch_dirs[0]).exists()
    # the MD jobs loaded the checkpoint they wrote into their own job directories
    loaded_checkpoints = {f for f in opened if "finetuned-" in Path(f).name}
    assert len(loaded_checkpoints) == len(md_jobs)
    assert len({Path(f).parent for f in loaded_checkpoints}) == len(md_jobs)
    assert all(f.startswith(str(tmp_path / "jobs")) for f in loaded_checkpoints)

    store.connect()
    ft_doc = store.query_one({"uuid": finetune.uuid}, load=False)["output"]
    # the checkpoint is a blob reference in the docs store, its bytes in the data store
    assert "blob_uuid" in ft_doc["checkpoint"]
    blob = store.additional_stores["data"].query_one(
        {"blob_uuid": ft_doc["checkpoint"]["blob_uuid"]}
    )
    assert blob is not None
    loaded = CheckpointBlob.model_validate(store.get_output(finetune.uuid, load=True)["checkpoint"])
    assert loaded.sha256 == ft_doc["checkpoint_sha256"]
    # one epoch: the reference refit alone brings the energies onto EMT's scale
    assert ft_doc["after"]["energy_mae_meV_per_atom"] < ft_doc["before"]["energy_mae_meV_per_atom"]

    for md in md_jobs:
        doc = responses[md.uuid][1].output
        # the MD network is the fine-tuned checkpoint, written into the MD job's own directory
        assert doc.gptff.checkpoint_sha256 == ft_doc["checkpoint_sha256"]
        assert not doc.gptff.checkpoint_path.startswith(scratch_dirs[0])
        assert Path(doc.gptff.checkpoint_path).parent != Path(scratch_dirs[0])
        assert doc.gptff.smooth is True
        stored = store.query_one({"uuid": md.uuid}, load=False)["output"]
        assert "blob_uuid" in stored["trajectory"]  # trajectory in the data store
        frames = load_trajectory(doc)
        assert frames["positions"].shape == (17, 4, 3)  # (20 + 60) / 5 + 1 frames
        assert doc.diffusion is not None and doc.diffusion.n_frames == 13
        # 4 atoms, 160 fs from T: equipartition halves it before the thermostat (tdamp 200 fs) acts
        assert 0.1 * doc.temperature < doc.mean_temperature < 2 * doc.temperature
        assert doc.conserved_max_deviation < 0.05  # eV/atom
    out = responses[summary.uuid][1].output
    assert [row.temperature for row in out.temperatures] == [600.0, 1200.0]
    assert out.finetune["checkpoint_sha256"] == ft_doc["checkpoint_sha256"]
    assert out.inputs["n_steps"] == 60 and out.inputs["train_files"] == [str(train_file)]
    assert out.gptff.job_type == "finetune_md"
    assert Path(out.plots["msd"]).is_file()
    # a 4-atom fcc crystal does not diffuse in 120 fs: flagged and no Ea
    assert all("not_diffusive" in row.flags for row in out.temperatures)
    assert out.activation_energy is None


def test_training_data_from_store_documents(cu3au):
    from gptff_flows.jobs.finetune_md import frames_from_documents

    documents = []
    for atoms in emt_configurations(3, seed=2):
        structure = AseAtomsAdaptor.get_structure(atoms)
        stress_kbar = (-atoms.get_stress(voigt=False) / (0.1 * units.GPa)).tolist()  # VASP sign
        documents.append(
            {
                "uuid": "abc",
                "output": {
                    "output": {
                        "ionic_steps": [
                            {
                                "structure": structure.as_dict(),
                                "energy": atoms.get_potential_energy(),
                                "forces": atoms.get_forces().tolist(),
                                "stress": stress_kbar,
                            }
                        ]
                    }
                },
            }
        )
    frames = frames_from_documents(documents)
    assert len(frames) == 3 and frames[0].forces.shape == (len(frames[0].atoms), 3)
    reference = emt_configurations(3, seed=2)[0].get_stress(voigt=False)
    assert np.allclose(frames[0].stress, reference, atol=1e-8)


def test_bad_settings_are_rejected(cu3au, train_file):
    with pytest.raises(GPTFFInputError, match="species"):
        FineTuneMDMaker(species="Li").make(cu3au, train_files=[train_file])
    with pytest.raises(GPTFFInputError, match="ensemble"):
        FineTuneMDMaker(species="Au", ensemble="nph").make(cu3au, train_files=[train_file])
    with pytest.raises(GPTFFInputError, match="temperatures"):
        FineTuneMDMaker(species="Au", temperatures=[-5]).make(cu3au, train_files=[train_file])
    with pytest.raises(GPTFFInputError, match="training data"):
        FineTuneMDMaker(species="Au").make(cu3au)
    with pytest.raises(GPTFFInputError, match="time_step"):
        FineTuneMDMaker(species="Au", time_step=20).make(cu3au, train_files=[train_file])
    with pytest.raises(GPTFFInputError, match="finetune=False, but training"):
        FineTuneMDMaker(species="Au", finetune=False).make(cu3au, train_files=[train_file])


def test_calculator_kwargs_reach_the_md_and_repeat_no_field(cu3au, train_file):
    """FineTuneMDMaker takes GPTFFOptions' calculator_kwargs: passed to the MD calculator
    (with ``skin``), and refused when they set one of the Maker's fields."""
    from gptff_flows.jobs.finetune_md import _md_maker

    with pytest.raises(GPTFFInputError, match="calculator_kwargs sets skin"):
        FineTuneMDMaker(**TINY, calculator_kwargs={"skin": 0.5}).make(cu3au, [train_file])
    with pytest.raises(GPTFFInputError, match="dtype"):
        FineTuneMDMaker(**TINY, dtype="float16").make(cu3au, [train_file])
    assert "calculator_kwargs" not in FineTuneMDMaker(**TINY).settings()
    settings = FineTuneMDMaker(**TINY, calculator_kwargs={"bond_window": 0.4}).settings()
    maker = _md_maker("gptff-v2", 600.0, settings)
    assert maker.calculator_kwargs["bond_window"] == 0.4
    assert maker.calculator_kwargs["skin"] == 1.0 and maker.traj_interval == 5


def test_without_training_data_the_md_runs_with_the_model_as_it_is(tmp_path, cu3au, capsys):
    """``--no-finetune``: no fine-tune job; each MD job loads the published v2 checkpoint,
    exactly as published (smooth off: issue 13 ran smooth while printing "as published"), and
    the summary says the model was not fine-tuned. ``--smooth`` turns the envelopes on, and
    what is printed, run and stored says so."""
    import json

    from gptff_core.cli import main
    from gptff_core.pretrained import resolve_checkpoint, sha256_of
    from gptff_flows import queries
    from gptff_flows.queries.finetune_md import finetune_md_results

    structure_file = tmp_path / "cu3au.cif"
    cu3au.to(filename=str(structure_file))
    store_dir = tmp_path / "store"
    argv = ["finetune-md", "--no-finetune", "--structure", str(structure_file), "--species"]
    argv += ["Au", "--temperatures", "700,900", "--steps", "30", "--equilibration", "10"]
    argv += ["--interval", "5", "--store", str(store_dir)]
    assert main(argv) == ExitCode.FLAGGED  # 4 atoms, 60 fs: not diffusive, too short
    captured = capsys.readouterr()
    assert "gptff-v2 as published, NOT fine-tuned" in captured.err
    assert "without smooth envelopes" in captured.err
    assert "not fine-tuned: MD with gptff-v2 as it is, smooth off" in captured.out
    store = local_job_store(store_dir)
    kinds = sorted(record["job_type"] for record in queries.gptff_jobs(store))
    assert kinds == ["finetune_md", "md", "md"]  # no fine-tune job
    published = sha256_of(resolve_checkpoint("gptff-v2"))
    store.connect()
    md_docs = list(store.query({"output.@class": "MDTemperatureDocument"}))
    assert len(md_docs) == 2
    assert all(d["output"]["gptff"]["checkpoint_sha256"] == published for d in md_docs)
    assert all(d["output"]["gptff"]["smooth"] is False for d in md_docs)
    (summary,) = store.query({"output.@class": "FineTuneMDDocument"})
    assert summary["output"]["inputs"]["smooth"] is False
    assert summary["output"]["gptff"]["smooth"] is False
    (record,) = finetune_md_results(store, formula="AuCu3")
    assert record["finetuned"] is False and record["finetune_checkpoint_sha256"] is None
    assert record["smooth"] is False
    assert main(argv[:1] + argv[2:]) == 1  # neither --train nor --no-finetune
    assert "give --train FILE... to fine-tune, or --no-finetune" in capsys.readouterr().err
    assert main(["results", "--store", str(store_dir), "--kind", "finetune-md", "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert listed["finetuned"] is False

    # --smooth: the envelopes are on, and the output, the MD and the documents agree
    smooth_store = tmp_path / "smooth"
    argv[-1] = str(smooth_store)
    assert main([*argv, "--smooth", "--json"]) == ExitCode.FLAGGED
    printed = json.loads(capsys.readouterr().out)
    assert printed["gptff"]["smooth"] is True and printed["inputs"]["smooth"] is True
    store = local_job_store(smooth_store)
    store.connect()
    md_docs = list(store.query({"output.@class": "MDTemperatureDocument"}))
    assert [d["output"]["gptff"]["smooth"] for d in md_docs] == [True, True]
    assert main([*argv, "--smooth", "--no-smooth"]) == ExitCode.BAD_INPUT
    assert "choose one of --smooth and --no-smooth" in capsys.readouterr().err


def test_cli_runs_the_flow_into_a_store(tmp_path, cu3au, train_file, capsys):
    import json

    from gptff_core.cli import main
    from gptff_flows import queries

    structure_file = tmp_path / "cu3au.cif"
    cu3au.to(filename=str(structure_file))
    store_dir = tmp_path / "store"
    argv = ["finetune-md", "--train", str(train_file), "--structure", str(structure_file)]
    argv += ["--species", "Au", "--temperatures", "700,900", "--steps", "30"]
    argv += ["--equilibration", "10", "--interval", "5", "--epochs", "1"]
    argv += ["--store", str(store_dir), "--json"]
    assert main(argv) == ExitCode.FLAGGED  # 4 atoms, 60 fs: not diffusive, too short
    summary = json.loads(capsys.readouterr().out)
    assert "not_diffusive" in summary["flags"] and summary["activation_energy"] is None
    # fine-tuning: smooth envelopes in training and MD unless told otherwise
    assert summary["inputs"]["smooth"] is True and summary["gptff"]["smooth"] is True
    assert [row["temperature"] for row in summary["temperatures"]] == [700.0, 900.0]
    assert summary["inputs"]["n_steps"] == 30 and summary["inputs"]["species"] == "Au"
    assert Path(summary["plots"]["arrhenius"]).is_file()
    # `gptff results --kind jobs` finds the fine-tune, MD and summary jobs
    jobs = queries.gptff_jobs(local_job_store(store_dir))
    kinds = sorted(record["job_type"] for record in jobs)
    assert kinds == ["finetune", "finetune_md", "md", "md"]
    from gptff_flows.queries.finetune_md import finetune_md_results

    (record,) = finetune_md_results(local_job_store(store_dir), formula="AuCu3")
    assert record["species"] == "Au" and record["temperatures"] == "700,900"
    assert record["finetune_checkpoint_sha256"] == summary["finetune"]["checkpoint_sha256"]
    capsys.readouterr()
    results = ["results", "--store", str(store_dir), "--kind", "finetune-md"]
    assert main([*results, "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert listed["activation_energy"] == record["activation_energy"]
    assert main(results) == 0
    assert "700,900" in capsys.readouterr().out
    from gptff_flows.cli.finetune_md import _supercell, _temperatures

    with pytest.raises(GPTFFInputError, match="temperatures"):
        _temperatures("hot,cold")
    assert _supercell("2") == [2, 2, 2] and _supercell("2x2x1") == [2, 2, 1]


# ---------------------------------------------------------------- issue 13: verdicts, refusals


def _provenance():
    from gptff_flows.schemas import GPTFFProvenance

    return GPTFFProvenance(
        job_type="md", model="gptff-v2", model_name="gptff-v2", checkpoint_path="-",
        checkpoint_sha256="0" * 64, checkpoint_format="published", dtype="float32",
        smooth=False, bond_window=0.5, three_body_window=0.5, device="cpu",
        gptff_version="test",
    )  # fmt: skip


SETTINGS = dict(
    ensemble="nvt", time_step=2.0, n_steps=10_000, equilibration_steps=0, traj_interval=10,
    supercell=[1, 1, 1], pressure=0.0, tdamp=200.0, pdamp=2000.0, seed=0, species="Li",
    charge=None, n_blocks=5,
)  # fmt: skip


def _synthetic_md(target, measured, diffusivity, seed, ensemble="nvt", swell=1.0):
    """An MD document at ``target`` K from a synthetic trajectory: Li random walk of
    ``diffusivity`` cm²/s in a fixed Cl framework (64 atoms, 20 ps, frames every 20 fs) whose
    kinetic temperatures are canonical around ``measured`` K; the MD cell (and the atoms with
    it) has ``swell`` times the starting volume."""
    from pymatgen.core import Lattice, Structure

    from gptff_flows.jobs.md_temperature import temperature_document as _temperature_document

    rng = np.random.default_rng(seed)
    cell = Structure(Lattice.cubic(10.0), ["Li"] * 32 + ["Cl"] * 32, rng.random((64, 3)))
    n_frames, interval = 1001, 20.0
    steps = rng.normal(0.0, np.sqrt(2 * diffusivity * 10.0 * interval), (n_frames - 1, 64, 3))
    steps[:, 32:] = 0.0
    positions = cell.cart_coords + np.concatenate([np.zeros((1, 64, 3)), steps]).cumsum(0)
    positions = positions * swell ** (1 / 3)
    dof = 3 * 64 - 3
    arrays = dict(
        steps=np.arange(n_frames) * 10,
        time_fs=np.arange(n_frames) * interval,
        positions=positions,
        cells=np.repeat(cell.lattice.matrix[None], n_frames, axis=0) * swell ** (1 / 3),
        potential_energy=np.zeros(n_frames),
        kinetic_energy=np.zeros(n_frames),
        conserved_energy=np.zeros(n_frames),
        temperature=measured * rng.gamma(dof / 2, 2.0 / dof, n_frames),
        pressure=np.zeros(n_frames),
    )
    settings = dict(SETTINGS, dtype="float32", smooth=False, device="cpu", skin=1.0)
    settings["ensemble"] = ensemble
    return cell, _temperature_document(cell, target, settings, arrays, 1.0, _provenance())


def test_an_npt_run_that_swells_is_flagged_and_left_out_of_the_fit():
    """The published v2 swells Li₃YCl₆ by 80–180 % in NPT at 500–700 K (measured with
    workflows/paper_li3ycl6.py); D of such a run describes another material. A mean volume
    more than 15 % from the start is flagged ``volume_unstable`` and excluded from the fit;
    ordinary thermal expansion (3 %) is not, nor is any volume in NVT."""
    from gptff_flows.analysis.diffusion import EXCLUDING_FLAGS

    d = 1e-5
    _, swollen = _synthetic_md(600.0, 600.0, d, 0, ensemble="npt", swell=1.8)
    assert "volume_unstable" in swollen.flags and "volume_unstable" in swollen.diffusion.flags
    assert swollen.mean_volume == pytest.approx(1.8 * 1000.0)
    assert "volume_unstable" in EXCLUDING_FLAGS
    _, expanded = _synthetic_md(600.0, 600.0, d, 0, ensemble="npt", swell=1.03)
    assert "volume_unstable" not in expanded.flags
    _, fixed = _synthetic_md(600.0, 600.0, d, 0, ensemble="nvt", swell=1.8)
    assert "volume_unstable" not in fixed.flags


def test_temperatures_not_reached_are_flagged_and_give_no_activation_energy(tmp_path):
    """Issue 13: Eₐ = 0.219 eV was reported from two temperatures whose mean T was 351 and
    472 K against targets of 600 and 800 K. Now each is flagged in its MD document and in the
    summary row (measured mean and tolerance stored), both are left out of the fit, there is no
    Eₐ and the reason says why; the run's verdict makes the CLI exit 3."""
    from gptff_flows.cli.finetune_md import _report
    from gptff_flows.jobs.finetune_md import summary_job

    k_b, ea, d0 = units.kB, 0.3, 1e-3
    docs = []
    for seed, (target, measured) in enumerate(((600.0, 351.0), (800.0, 472.0))):
        cell, doc = _synthetic_md(target, measured, d0 * np.exp(-ea / (k_b * target)), seed)
        assert "temperature_not_reached" in doc.flags
        assert "temperature_not_reached" in doc.diffusion.flags
        assert doc.mean_temperature == pytest.approx(measured, rel=0.02)
        assert abs(doc.mean_temperature - target) > doc.temperature_check.tolerance
        docs.append(doc)
    inputs = {"species": "Li"}
    summary = summary_job.original(None, docs, cell, inputs, plot_dir=str(tmp_path))
    assert summary.activation_energy is None and summary.conductivity_300K is None
    assert summary.arrhenius.excluded_temperatures == [600.0, 800.0]
    assert "temperature_not_reached" in summary.flags
    assert "fewer_than_two_usable_temperatures" in summary.flags
    for row, measured in zip(summary.temperatures, (351.0, 472.0), strict=True):
        assert row.mean_temperature == pytest.approx(measured, rel=0.02)
        assert row.temperature_tolerance is not None and "misses" in row.temperature_reason
    report = _report(summary)
    assert "no Arrhenius fit" in report and "temperature_not_reached" in report
    assert "FLAGGED" in report

    # the same walks at the temperatures they were meant to have: reached, and Eₐ comes back
    reached = [_synthetic_md(t, t, d0 * np.exp(-ea / (k_b * t)), s)[1]
               for s, t in enumerate((600.0, 800.0))]  # fmt: skip
    assert all(doc.flags == [] for doc in reached)
    summary = summary_job.original(None, reached, cell, inputs, plot_dir=None)
    assert summary.activation_energy == pytest.approx(ea, abs=0.1)
    assert "temperature_not_reached" not in summary.flags


def test_cli_flags_a_temperature_not_reached(tmp_path, cu3au, capsys, monkeypatch):
    """With no tolerance at all every measured mean misses its target: the CLI stores and
    prints the flag, leaves the temperatures out of the fit and exits 3 (FLAGGED);
    ``gptff results --kind finetune-md`` shows the measured means and the flags."""
    import json

    import gptff_core.md as md_rules  # the rule of gptff md and the workflows alike
    from gptff_core.cli import main

    monkeypatch.setattr(md_rules, "TEMPERATURE_RELATIVE_TOLERANCE", 0.0)
    monkeypatch.setattr(md_rules, "TEMPERATURE_SIGMAS", 0.0)
    structure_file = tmp_path / "cu3au.cif"
    cu3au.to(filename=str(structure_file))
    store_dir = tmp_path / "store"
    argv = ["finetune-md", "--no-finetune", "--structure", str(structure_file), "--species"]
    argv += ["Au", "--temperatures", "700,900", "--steps", "30", "--equilibration", "10"]
    argv += ["--interval", "5", "--store", str(store_dir), "--json"]
    assert main(argv) == ExitCode.FLAGGED
    summary = json.loads(capsys.readouterr().out)
    for row in summary["temperatures"]:
        assert "temperature_not_reached" in row["flags"]
        assert row["temperature_tolerance"] == 0.0
    assert summary["arrhenius"]["excluded_temperatures"] == [700.0, 900.0]
    assert "temperature_not_reached" in summary["arrhenius"]["reason"]
    assert main(["results", "--store", str(store_dir), "--kind", "finetune-md"]) == 0
    table = capsys.readouterr().out
    assert "<T> (K)" in table and "700:" in table and "temperature_not_reached" in table


def test_a_molecule_is_refused_before_any_work(tmp_path, capsys):
    """Issue 13: a molecule without a cell gave a LinAlgError traceback. Now one line, exit 1,
    and no store is created."""
    from ase import Atoms

    from gptff_core.cli import main

    molecule = tmp_path / "water.xyz"
    write(molecule, Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]]))
    store_dir = tmp_path / "store"
    argv = ["finetune-md", "--no-finetune", "--structure", str(molecule), "--species", "H"]
    argv += ["--temperatures", "600", "--store", str(store_dir)]
    assert main(argv) == ExitCode.BAD_INPUT
    err = capsys.readouterr().err
    assert "has no 3D periodic cell" in err and len(err.strip().splitlines()) == 1
    assert not store_dir.exists()
    # the Maker refuses a structure without a periodic cell too
    from pymatgen.core import Lattice, Structure

    slab = Structure(
        Lattice.cubic(8.0, pbc=(True, True, False)), ["Li", "Cl"], [[0] * 3, [0.3] * 3]
    )
    with pytest.raises(GPTFFInputError, match="no 3D periodic cell"):
        FineTuneMDMaker(species="Li", finetune=False).make(slab)


def test_an_unwritable_plot_directory_is_refused_before_any_work(tmp_path, cu3au, capsys):
    from gptff_core.cli import main

    structure_file = tmp_path / "cu3au.cif"
    cu3au.to(filename=str(structure_file))
    not_a_dir = tmp_path / "plots"
    not_a_dir.write_text("a file")
    store_dir = tmp_path / "store"
    argv = ["finetune-md", "--no-finetune", "--structure", str(structure_file), "--species"]
    argv += ["Au", "--temperatures", "700", "--store", str(store_dir)]
    assert main([*argv, "--plot-dir", str(not_a_dir)]) == ExitCode.BAD_INPUT
    assert "--plot-dir" in capsys.readouterr().err and not store_dir.exists()


def test_relative_plot_dir_resolves_against_the_callers_directory(tmp_path, monkeypatch):
    """Issue 13: a relative plot_dir was resolved in run_flow's temporary directory, deleted
    afterwards; it is resolved when the Maker is built."""
    monkeypatch.chdir(tmp_path)
    maker = FineTuneMDMaker(species="Au", plot_dir="plots")
    assert maker.plot_dir == str(tmp_path / "plots")
    monkeypatch.chdir("/")
    assert FineTuneMDMaker.from_dict(maker.as_dict()).plot_dir == str(tmp_path / "plots")


def test_smooth_defaults_follow_fine_tuning(tmp_path, train_file):
    """smooth None: on when fine-tuning, the model's own setting without (off for the published
    networks); an explicit value wins."""
    assert FineTuneMDMaker().resolved_smooth() is True
    assert FineTuneMDMaker(finetune=False).resolved_smooth() is False
    assert FineTuneMDMaker(finetune=False, smooth=True).resolved_smooth() is True
    assert FineTuneMDMaker(smooth=False).resolved_smooth() is False
    with pytest.raises(GPTFFInputError, match="smooth"):
        FineTuneMDMaker(smooth="yes").resolved_smooth()
    # a checkpoint path keeps its own setting (e.g. a network fine-tuned in smooth mode)
    from gptff_core.checkpoint import load_model, save_checkpoint

    smooth_file = save_checkpoint(load_model("gptff-v2", smooth=True), tmp_path / "smooth.pt")
    plain_file = save_checkpoint(load_model("gptff-v2"), tmp_path / "plain.pt")
    assert FineTuneMDMaker(finetune=False, model=str(smooth_file)).resolved_smooth() is True
    assert FineTuneMDMaker(finetune=False, model=str(plain_file)).resolved_smooth() is False


def test_a_failed_temperature_keeps_its_trajectory_and_the_cli_names_the_cause(
    tmp_path, cu3au, capsys, monkeypatch
):
    """An MD job of the flow that fails part-way stores its frames so far and the cause; the
    CLI prints one line naming the job and the cause and exits 4 (FAILED)."""
    from gptff_core.calculator import GPTFFCalculator
    from gptff_core.cli import main
    from gptff_core.errors import StructureError

    real, count = GPTFFCalculator.calculate, [0]

    def collapsing(self, *args, **kwargs):
        count[0] += 1
        if count[0] > 12:  # step 0 and 11 steps of the first temperature, then a collapse
            raise StructureError("atoms 0 and 3 are 0.42 Å apart")
        real(self, *args, **kwargs)

    monkeypatch.setattr(GPTFFCalculator, "calculate", collapsing)
    structure_file = tmp_path / "cu3au.cif"
    cu3au.to(filename=str(structure_file))
    store_dir = tmp_path / "store"
    argv = ["finetune-md", "--no-finetune", "--structure", str(structure_file), "--species"]
    argv += ["Au", "--temperatures", "700", "--steps", "30", "--equilibration", "10"]
    argv += ["--interval", "5", "--store", str(store_dir)]
    assert main(argv) == ExitCode.FAILED
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("gptff: error: job 'GPTFF fine-tune MD NVT 700 K' failed")
    assert "atoms 0 and 3 are 0.42 Å apart" in err and "after 11 of 40 steps" in err
    store = local_job_store(store_dir)
    store.connect()
    (failed,) = store.query({"metadata.gptff_status": "failed"}, load=True)
    doc = failed["output"]
    assert doc["steps_completed"] == 11 and doc["temperature"] == 700.0
    frames = load_trajectory(doc["trajectory"])
    assert list(frames["steps"]) == [0, 5, 10]  # the recorder's frames up to the failure
    assert frames["positions"].shape == (3, 4, 3) and "conserved_energy" in frames


def test_jobs_that_read_or_write_the_store_are_given_it():
    """jobflow exposes the store in CURRENT_JOB only to jobs configured so: ``train_query``
    (fine-tune) and the failure documents of the MD jobs need it (it was None before)."""
    from gptff_flows.jobs import GPTFFMDMaker
    from gptff_flows.jobs.finetune_md import finetune_job, md_job

    assert finetune_job(train_query={"name": "x"}).config.expose_store is True
    assert md_job(None, None, 600.0, {}, model="gptff-v2").config.expose_store is True
    assert GPTFFMDMaker().make(None).config.expose_store is True
