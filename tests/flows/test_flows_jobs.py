"""gptff_flows.jobs: each Maker runs with run_locally into a temporary embedded store and its
document carries the provenance; the force-field helper drives atomate2's own Makers."""

import numpy as np
import pytest

pytest.importorskip("atomate2")

from ase.build import bulk
from jobflow import run_locally
from monty.json import MontyDecoder
from pymatgen.io.ase import AseAtomsAdaptor

from gptff_core import GPTFFCalculator
from gptff_core.pretrained import PRETRAINED_MODELS
from gptff_flows.jobs import (
    GPTFF_CALCULATOR,
    GPTFFMDMaker,
    GPTFFRelaxMaker,
    GPTFFStaticMaker,
    gptff_force_field,
)
from gptff_flows.stores import local_job_store

PROVENANCE_FIELDS = {"model_name", "checkpoint_sha256", "dtype", "smooth", "gptff_version"}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return local_job_store(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def copper():
    """fcc Cu, primitive cell, 2 % off its equilibrium lattice constant and rattled."""
    atoms = bulk("Cu", "fcc", a=3.55)
    atoms = atoms.repeat((2, 1, 1))
    atoms.rattle(0.03, seed=3)
    return AseAtomsAdaptor.get_structure(atoms)


def _run(job, store):
    """Run ``job`` into ``store`` in the store's directory (scratch files stay out of the cwd)."""
    root = store.docs_store.database_path
    responses = run_locally(job, store=store, ensure_success=True, log=False, root_dir=root)
    return responses[job.uuid][1].output


def _stored(store, job):
    store.connect()
    return store.query_one({"uuid": job.uuid}, load=False)


def test_static_maker_energy_and_provenance(store, copper):
    maker = GPTFFStaticMaker(model="gptff-v1", dtype="float64")
    job = maker.make(copper)
    doc = _run(job, store)
    reference = GPTFFCalculator(model="gptff-v1", dtype="float64")
    atoms = AseAtomsAdaptor.get_atoms(copper)
    atoms.calc = reference
    assert doc.output.energy == pytest.approx(atoms.get_potential_energy(), abs=1e-9)
    stored = _stored(store, job)["output"]["gptff"]
    assert PROVENANCE_FIELDS <= set(stored)
    assert stored["model_name"] == "gptff-v1"
    assert stored["checkpoint_sha256"] == PRETRAINED_MODELS["gptff-v1"].sha256
    assert (stored["dtype"], stored["smooth"], stored["job_type"]) == ("float64", False, "static")


def test_relax_maker_lowers_the_energy(store, copper):
    static = _run(GPTFFStaticMaker().make(copper), store)
    job = GPTFFRelaxMaker(relax_kwargs={"fmax": 0.05}, steps=200).make(copper)
    doc = _run(job, store)
    assert doc.is_force_converged
    assert doc.output.energy < static.output.energy
    stored = _stored(store, job)["output"]
    assert stored["gptff"]["job_type"] == "relax"
    assert stored["gptff"]["checkpoint_sha256"] == PRETRAINED_MODELS["gptff-v2"].sha256


@pytest.mark.parametrize("ensemble", ["nve", "nvt", "npt"])
def test_md_maker_ensembles(store, copper, ensemble):
    maker = GPTFFMDMaker(
        ensemble=ensemble,
        n_steps=4,
        time_step=1.0,
        temperature=300,
        pressure=0.0 if ensemble == "npt" else None,
        mb_velocity_seed=1,
        calculator_kwargs={"skin": 1.0},
        smooth=True,
    )
    job = maker.make(copper)
    doc = _run(job, store)
    stored = _stored(store, job)
    assert stored["output"]["gptff"]["job_type"] == "md"
    assert stored["output"]["gptff"]["smooth"] is True
    assert doc.output.n_steps == 5  # the initial state and 4 steps
    frames = doc.objects["trajectory"].frame_properties  # atomate2's, plus GPTFF's energies
    assert [frame["step"] for frame in frames] == [0, 1, 2, 3, 4]
    assert ("conserved_energy" in frames[0]) is (ensemble != "nvt")  # Langevin conserves none
    # the trajectory went to the "data" store; the document keeps a reference to it
    reference = stored["output"]["objects"]["trajectory"]
    assert reference["store"] == "data"
    assert store.additional_stores["data"].query_one({"blob_uuid": reference["blob_uuid"]})


def test_nose_hoover_chain_nvt_runs_through_atomate2(copper):
    """atomate2 calls ``set_temperature`` every step and ASE's NoseHooverChainNVT has none (the
    run failed with AttributeError). It runs now, atomate2's trajectory observer recording the
    frames and GPTFF adding the thermostat's conserved energy to each."""
    from ase import units
    from ase.md.nose_hoover_chain import NoseHooverChainNVT
    from pymatgen.core.trajectory import Trajectory

    maker = GPTFFMDMaker(
        ensemble="nvt", dynamics=NoseHooverChainNVT, n_steps=6, time_step=1.0, temperature=300,
        ase_md_kwargs={"tdamp": 100 * units.fs}, traj_interval=2, mb_velocity_seed=1,
        dtype="float64",
    )  # fmt: skip
    trajectory = maker.run_ase(copper).trajectory
    assert isinstance(trajectory, Trajectory) and len(trajectory) == 4  # steps 0, 2, 4, 6
    assert trajectory.time_step == 1.0
    assert [frame["step"] for frame in trajectory.frame_properties] == [0, 2, 4, 6]
    conserved = [frame["conserved_energy"] for frame in trajectory.frame_properties]
    total = [f["energy"] + f["kinetic_energy"] for f in trajectory.frame_properties]
    assert not np.allclose(conserved, total, atol=0, rtol=0)  # the thermostat's energy counts
    assert np.ptp(conserved) < 1e-3 * len(copper)  # eV: conserved over 6 fs


@pytest.mark.parametrize(
    ("ensemble", "dynamics"), [("nvt", "NoseHooverChainNVT"), ("npt", "nose-hoover-chain")]
)
def test_a_temperature_ramp_is_refused_where_the_integrator_cannot_follow_it(
    copper, ensemble, dynamics
):
    """ASE's Nosé–Hoover-chain integrators keep the target they start with: MTKNPT (atomate2's
    default NPT) silently ignored atomate2's ramp; NoseHooverChainNVT failed. Both refuse it."""
    from ase.md import nose_hoover_chain

    from gptff_core.errors import GPTFFInputError

    dynamics = getattr(nose_hoover_chain, dynamics, dynamics)
    maker = GPTFFMDMaker(
        ensemble=ensemble, dynamics=dynamics, n_steps=4, time_step=1.0,
        temperature=[300, 600], pressure=0.0 if ensemble == "npt" else None,
        ase_md_kwargs={"tdamp": 100.0} if ensemble == "nvt" else None,
    )  # fmt: skip
    with pytest.raises(GPTFFInputError, match="temperature must be one value"):
        maker.run_ase(copper)


def test_helper_drives_atomate2_makers(store, copper):
    """atomate2's own static Maker with the helper's pair computes GPTFF's energy."""
    from atomate2.forcefields.jobs import ForceFieldStaticMaker

    spec = gptff_force_field(model="gptff-v2", dtype="float64", skin=0.5)
    assert spec.force_field_name == GPTFF_CALCULATOR
    assert spec.calculator_kwargs["skin"] == 0.5
    job = ForceFieldStaticMaker(**spec._asdict()).make(copper)
    doc = _run(job, store)
    atoms = AseAtomsAdaptor.get_atoms(copper)
    atoms.calc = GPTFFCalculator(dtype="float64")
    assert doc.output.energy == pytest.approx(atoms.get_potential_energy(), abs=1e-9)


def test_makers_round_trip_through_json():
    maker = GPTFFRelaxMaker(model="gptff-v1", dtype="float64", smooth=True, relax_cell=False)
    again = MontyDecoder().process_decoded(maker.as_dict())
    assert isinstance(again, GPTFFRelaxMaker)
    assert (again.model, again.dtype, again.smooth, again.relax_cell) == (
        "gptff-v1",
        "float64",
        True,
        False,
    )
    assert again.calculator_kwargs == maker.calculator_kwargs


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"dtype": "float16"}, "dtype"),
        ({"smooth": "yes"}, "smooth"),
        ({"model": ""}, "model"),
        ({"calculator_kwargs": {"dtype": "float64"}}, "dtype"),
    ],
)
def test_bad_fields_are_named(kwargs, field):
    with pytest.raises(ValueError, match=field):
        GPTFFStaticMaker(**kwargs)


def test_helper_builds_other_atomate2_flows():
    """An atomate2 elastic flow built from the helper's pair uses GPTFF in every job."""
    from atomate2.forcefields.flows.elastic import ElasticMaker

    spec = gptff_force_field(model="gptff-v1", dtype="float64")
    maker = ElasticMaker.from_force_field_name(*spec)
    for inner in (maker.bulk_relax_maker, maker.elastic_relax_maker):
        assert inner.calculator_meta == "gptff_core.calculator.GPTFFCalculator"
        assert inner.calculator_kwargs["model"] == "gptff-v1"


# ------------------------------------------------------- issue 13: a failed MD keeps its frames


def _fail_after(monkeypatch, calls: int, error=None, nan=False):
    """Make GPTFFCalculator fail on evaluation number ``calls`` + 1 and after: raise ``error``,
    or (``nan``) return a NaN energy as a damaged network would."""
    real = GPTFFCalculator.calculate
    count = [0]

    def calculate(self, *args, **kwargs):
        count[0] += 1
        if count[0] > calls and error is not None:
            raise error
        real(self, *args, **kwargs)
        if count[0] > calls and nan:
            self.results["energy"] = float("nan")

    monkeypatch.setattr(GPTFFCalculator, "calculate", calculate)


@pytest.mark.parametrize("ensemble", ["nvt", "npt"])
def test_a_collapsing_md_keeps_its_trajectory_and_names_the_cause(
    tmp_path, copper, monkeypatch, ensemble
):
    """Issue 13: an MD run through GPTFFMDMaker + run_flow that collapsed kept no trajectory and
    reported only "Flow did not finish running successfully". Now the error names the job and
    the cause, and the store holds the cause, the steps completed and every frame so far."""
    from gptff_core.errors import ComputationError, StructureError
    from gptff_flows.run import run_flow
    from gptff_flows.schemas.finetune_md import load_trajectory

    store = local_job_store(tmp_path / "store")
    maker = GPTFFMDMaker(
        ensemble=ensemble, n_steps=20, time_step=1.0, temperature=300, traj_interval=1,
        pressure=0.0 if ensemble == "npt" else None, mb_velocity_seed=1,
    )  # fmt: skip
    job = maker.make(copper)
    # evaluation 1 is step 0 (the observer), evaluations 2..6 steps 1..5; step 6 fails
    _fail_after(monkeypatch, 6, StructureError("atoms 0 and 1 are 0.31 Å apart"))
    with pytest.raises(ComputationError) as caught:
        run_flow(job, store)
    message = str(caught.value)
    assert "job 'GPTFF MD' failed" in message
    assert "atoms 0 and 1 are 0.31 Å apart" in message and "after 5 of 20 steps" in message
    store.connect()
    assert store.query_one({"uuid": job.uuid}) is None  # no result: a resume reruns it
    (failed,) = store.query({"metadata.gptff_status": "failed"}, load=True)
    assert failed["name"] == "GPTFF MD (failed)" and failed["metadata"]["failed_job"] == job.uuid
    doc = failed["output"]
    assert doc["status"] == "failed" and doc["steps_completed"] == 5 and doc["n_frames"] == 6
    assert doc["error"] == "StructureError: atoms 0 and 1 are 0.31 Å apart"
    assert doc["gptff"]["checkpoint_sha256"] == PRETRAINED_MODELS["gptff-v2"].sha256
    assert doc["gptff"]["smooth"] is False  # smooth=None: the published network's own setting
    raw = store.query_one({"uuid": failed["uuid"]}, load=False)["output"]["trajectory"]
    assert raw["store"] == "data"  # the frames went to the data store
    frames = load_trajectory(doc["trajectory"])
    assert frames["positions"].shape == (6, len(copper), 3)
    assert list(frames["steps"]) == [0, 1, 2, 3, 4, 5]
    start = AseAtomsAdaptor.get_atoms(copper)
    if ensemble == "nvt":  # NPT's MTK integrator may rotate the cell into its standard form
        assert np.allclose(frames["positions"][0], start.positions, atol=1e-5)
    assert np.isfinite(frames["potential_energy"]).all()


def test_a_nan_energy_stops_the_md_and_keeps_the_finite_frames(tmp_path, copper, monkeypatch):
    from gptff_core.errors import ComputationError
    from gptff_flows.run import run_flow

    store = local_job_store(tmp_path / "store")
    job = GPTFFMDMaker(ensemble="nve", n_steps=10, time_step=1.0, traj_interval=1).make(copper)
    _fail_after(monkeypatch, 4, nan=True)
    with pytest.raises(ComputationError, match="non-finite energy at MD step 4"):
        run_flow(job, store)
    store.connect()
    (failed,) = store.query({"metadata.gptff_status": "failed"}, load=True)
    assert failed["output"]["n_frames"] == 4  # steps 0-3; the NaN frame is not kept
    assert failed["output"]["last_structure"] is not None
