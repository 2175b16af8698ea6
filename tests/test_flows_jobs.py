"""gptff_flows.jobs: each Maker runs with run_locally into a temporary embedded store and its
document carries the provenance; the force-field helper drives atomate2's own Makers."""

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
    # the trajectory went to the "data" store; the document keeps a reference to it
    reference = stored["output"]["objects"]["trajectory"]
    assert reference["store"] == "data"
    assert store.additional_stores["data"].query_one({"blob_uuid": reference["blob_uuid"]})


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
