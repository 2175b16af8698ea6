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

from gptff_core.errors import GPTFFInputError
from gptff_flows.finetune_md_schemas import CheckpointBlob, load_trajectory
from gptff_flows.flows.finetune_md import FineTuneMDMaker
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
    from gptff_flows.finetune_md_jobs import frames_from_documents

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


def test_without_training_data_the_md_runs_with_the_model_as_it_is(tmp_path, cu3au, capsys):
    """``--no-finetune``: no fine-tune job; each MD job loads the published v2 checkpoint and the
    summary says the model was not fine-tuned."""
    import json

    from gptff_core.cli import main
    from gptff_core.pretrained import resolve_checkpoint, sha256_of
    from gptff_flows import queries
    from gptff_flows.finetune_md_queries import finetune_md_results

    structure_file = tmp_path / "cu3au.cif"
    cu3au.to(filename=str(structure_file))
    store_dir = tmp_path / "store"
    argv = ["finetune-md", "--no-finetune", "--structure", str(structure_file), "--species"]
    argv += ["Au", "--temperatures", "700,900", "--steps", "30", "--equilibration", "10"]
    argv += ["--interval", "5", "--store", str(store_dir)]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "NOT fine-tuned" in captured.err and "not fine-tuned: MD with gptff-v2" in captured.out
    store = local_job_store(store_dir)
    kinds = sorted(record["job_type"] for record in queries.gptff_jobs(store))
    assert kinds == ["finetune_md", "md", "md"]  # no fine-tune job
    published = sha256_of(resolve_checkpoint("gptff-v2"))
    store.connect()
    md_docs = list(store.query({"output.@class": "MDTemperatureDocument"}))
    assert len(md_docs) == 2
    assert all(d["output"]["gptff"]["checkpoint_sha256"] == published for d in md_docs)
    (record,) = finetune_md_results(store, formula="AuCu3")
    assert record["finetuned"] is False and record["finetune_checkpoint_sha256"] is None
    assert main(argv[:1] + argv[2:]) == 1  # neither --train nor --no-finetune
    assert "give --train FILE... to fine-tune, or --no-finetune" in capsys.readouterr().err
    assert main(["results", "--store", str(store_dir), "--kind", "finetune-md", "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert listed["finetuned"] is False


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
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert [row["temperature"] for row in summary["temperatures"]] == [700.0, 900.0]
    assert summary["inputs"]["n_steps"] == 30 and summary["inputs"]["species"] == "Au"
    assert Path(summary["plots"]["arrhenius"]).is_file()
    # `gptff results --kind jobs` finds the fine-tune, MD and summary jobs
    jobs = queries.gptff_jobs(local_job_store(store_dir))
    kinds = sorted(record["job_type"] for record in jobs)
    assert kinds == ["finetune", "finetune_md", "md", "md"]
    from gptff_flows.finetune_md_queries import finetune_md_results

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
    from gptff_flows.cli_finetune_md import _supercell, _temperatures

    with pytest.raises(GPTFFInputError, match="temperatures"):
        _temperatures("hot,cold")
    assert _supercell("2") == [2, 2, 2] and _supercell("2x2x1") == [2, 2, 1]
