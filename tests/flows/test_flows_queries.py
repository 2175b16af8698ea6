"""gptff_flows.queries: what the flows stored comes back, filtered by formula, chemical system,
flow and job name and date, as plain records."""

import json
from datetime import datetime, timedelta

import pytest

pytest.importorskip("atomate2")

from ase.build import bulk
from pymatgen.io.ase import AseAtomsAdaptor

from gptff_core import GPTFFCalculator
from gptff_flows import queries
from gptff_flows.flows.eos import GPTFFEosMaker
from gptff_flows.jobs import GPTFFRelaxMaker
from gptff_flows.run import record_relaxation, run_flow
from gptff_flows.stores import local_job_store

EOS_POINTS = 4


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    """A store holding a Cu EOS flow, a NaCl relaxation flow and a recorded Si relaxation."""
    store = local_job_store(tmp_path_factory.mktemp("queries_store"))
    copper = AseAtomsAdaptor.get_structure(bulk("Cu", "fcc", a=3.65))
    eos = GPTFFEosMaker(
        name="copper eos", linear_strain=(-0.02, 0.02), number_of_frames=EOS_POINTS
    ).make(copper)
    eos_doc = run_flow(eos, store)[eos.output.uuid][1].output

    salt = bulk("NaCl", "rocksalt", a=5.7, cubic=True)
    relax = GPTFFRelaxMaker(relax_kwargs={"fmax": 0.1}).make(AseAtomsAdaptor.get_structure(salt))
    relax.name = "salt relaxation"
    relax_doc = run_flow(relax, store)[relax.uuid][1].output

    silicon = bulk("Si", "diamond", a=5.45)
    calculator = GPTFFCalculator()
    silicon.calc = calculator
    energy = silicon.get_potential_energy()
    si_uuid = record_relaxation(store, silicon, energy, True, 0, calculator, "gptff-v2")
    return dict(store=store, eos=eos_doc, relax=relax_doc, si_energy=energy, si_uuid=si_uuid)


def test_eos_records_are_what_was_stored(filled):
    (record,) = queries.eos_results(filled["store"])
    fit = filled["eos"].fit
    assert record["formula"] == "Cu" and record["chemsys"] == "Cu" and record["n_atoms"] == 1
    assert record["v0_per_atom"] == fit.v0_per_atom
    assert record["b0"] == fit.b0 and record["e0_per_atom"] == fit.e0_per_atom
    assert record["n_points"] == EOS_POINTS + 1
    assert record["flow_name"] == "copper eos"
    assert record["checkpoint_sha256"] == filled["eos"].gptff.checkpoint_sha256
    json.dumps(record)  # plain values only


def test_relaxation_records(filled):
    records = {r["formula"]: r for r in queries.relaxations(filled["store"])}
    assert set(records) == {"Cu", "NaCl", "Si"}  # the EOS's own relaxation, and the two others
    salt = records["NaCl"]
    assert salt["energy_eV"] == filled["relax"].output.energy
    assert salt["n_atoms"] == 8
    assert salt["energy_per_atom_eV"] == pytest.approx(filled["relax"].output.energy / 8)
    assert salt["job_name"] == "salt relaxation" and salt["flow_name"] == "salt relaxation"
    assert records["Si"]["energy_eV"] == pytest.approx(filled["si_energy"])
    assert records["Si"]["uuid"] == filled["si_uuid"]
    with_points = queries.relaxations(filled["store"], include_eos_points=True)
    assert len(with_points) == len(records) + EOS_POINTS


@pytest.mark.parametrize(
    ("filters", "formulas"),
    [
        ({"formula": "Na4Cl4"}, {"NaCl"}),
        ({"chemsys": "Na-Cl"}, {"NaCl"}),
        ({"chemsys": "Cl-Na"}, {"NaCl"}),
        ({"flow_name": "COPPER"}, {"Cu"}),
        ({"job_name": "salt"}, {"NaCl"}),
        ({"since": "2000-01-01"}, {"Cu", "NaCl", "Si"}),
        ({"since": (datetime.now() + timedelta(days=2)).date().isoformat()}, set()),
        ({"until": datetime.now().date().isoformat()}, {"Cu", "NaCl", "Si"}),
        ({"until": "2000-01-01"}, set()),
    ],
)
def test_filters(filled, filters, formulas):
    assert {r["formula"] for r in queries.relaxations(filled["store"], **filters)} == formulas


def test_jobs_lists_every_gptff_job(filled):
    kinds = [r["job_type"] for r in queries.gptff_jobs(filled["store"])]
    assert kinds.count("eos") == 1
    assert kinds.count("relax") == 3 + EOS_POINTS


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"formula": "Xx2"}, "formula"),
        ({"chemsys": "Na-Qq"}, "chemsys"),
        ({"since": "May"}, "date"),
    ],
)
def test_bad_filters_say_what_is_wrong(filled, filters, message):
    with pytest.raises(ValueError, match=message):
        queries.relaxations(filled["store"], **filters)
