"""atomate2's own force-field flows run with GPTFF (float64, small cells): the physics they report
against the calculator called directly, and the provenance every task document carries."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest

pytest.importorskip("atomate2")
pytest.importorskip("phonopy")
pytest.importorskip("seekpath")

from ase import units
from ase.build import bulk
from ase.eos import EquationOfState
from atomate2.forcefields.flows.elastic import ElasticMaker
from atomate2.forcefields.flows.phonons import PhononMaker
from atomate2.forcefields.jobs import ForceFieldStaticMaker
from jobflow import JobStore, run_locally
from maggma.stores import MemoryStore
from pymatgen.io.ase import AseAtomsAdaptor

from gptff_core import GPTFFCalculator
from gptff_core.errors import GPTFFInputError
from gptff_core.pretrained import cached_sha256, resolve_checkpoint
from gptff_flows.flows.force_field import gptff_flow_maker
from gptff_flows.jobs import GPTFFMDMaker, GPTFFRelaxMaker, GPTFFStaticMaker, gptff_force_field
from gptff_flows.schemas import GPTFFTaskDocument

THZ_PER_ASE_FREQUENCY = units.s / 1e12  # angular frequency: 1/(ASE time) -> rad/ps


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path, monkeypatch):
    """atomate2 writes phonopy.yaml, band-structure PDFs and final_atoms_object.xyz to the cwd."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def calc():
    return GPTFFCalculator(dtype="float64")


def _run(flow):
    store = JobStore(MemoryStore(), additional_stores={"data": MemoryStore()})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return run_locally(flow, store=store, ensure_success=True)


def _task_docs(responses):
    return [r[1].output for r in responses.values() if isinstance(r[1].output, GPTFFTaskDocument)]


def _assert_provenance(docs, calc):
    sha = cached_sha256(resolve_checkpoint("gptff-v2"))
    assert docs
    for doc in docs:
        assert doc.gptff.model == "gptff-v2" and doc.gptff.checkpoint_sha256 == sha
        assert doc.gptff.dtype == "float64" and doc.gptff.smooth is False
        assert doc.gptff.checkpoint_sha256 == calc.parameters["checkpoint_sha256"]


def test_calculator_records_its_settings(calc):
    sha = cached_sha256(resolve_checkpoint("gptff-v2"))
    expected = dict(model="gptff-v2", model_name="gptff-v2", checkpoint_sha256=sha,
                    model_version="v2", dtype="float64", smooth=False, skin=0.0,
                    device="cpu", dispersion=False)  # fmt: skip
    assert {k: calc.parameters[k] for k in expected} == expected
    assert calc.todict() == dict(calc.parameters)
    v1 = GPTFFCalculator("gptff-v1", smooth=True, skin=1.0)
    assert v1.todict()["model_version"] == "v1" and v1.todict()["smooth"] is True
    assert v1.todict()["skin"] == 1.0 and v1.todict()["dtype"] == "float32"
    assert v1.todict()["checkpoint_sha256"] == cached_sha256(resolve_checkpoint("gptff-v1"))
    assert pickle.loads(pickle.dumps(calc)).todict() == calc.todict()
    with pytest.raises(GPTFFInputError, match="dtype"):
        calc.set(dtype="float32")  # would record a setting the network does not have


def test_recorded_settings_leave_ase_cache_alone(calc):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.calc = calc
    energy = atoms.get_potential_energy()
    assert calc.get_property("energy", atoms) == energy and not calc.check_state(atoms)
    atoms.positions[0, 0] += 0.05
    assert calc.check_state(atoms) == ["positions"]
    assert atoms.get_potential_energy() != energy
    calc.reset()
    assert calc.results == {} and calc.parameters["dtype"] == "float64"


def test_plain_atomate2_document_records_only_class_name():
    """What atomate2 0.1.5 keeps of the calculator without the GPTFF Makers (documents the gap
    gptff_flow_maker closes)."""
    atoms = bulk("Cu", "fcc", a=3.6)
    job = ForceFieldStaticMaker(**gptff_force_field(dtype="float64")._asdict()).make(
        AseAtomsAdaptor.get_structure(atoms)
    )
    doc = _run(job)[job.uuid][1].output
    assert doc.forcefield_name == "GPTFFCalculator" and not hasattr(doc, "gptff")


def test_phonons_match_direct_finite_differences(calc):
    si = AseAtomsAdaptor.get_structure(bulk("Si", "diamond", a=5.43))
    maker = gptff_flow_maker(PhononMaker, dtype="float64", min_length=7.0,
                             relax_initial_structure=False, create_thermal_displacements=False,
                             use_symmetrized_structure="primitive")  # fmt: skip
    assert isinstance(maker.phonon_displacement_maker, GPTFFStaticMaker)
    flow = maker.make(si)
    responses = _run(flow)
    doc = responses[flow.output.uuid][1].output
    _assert_provenance(_task_docs(responses), calc)
    bands = doc.phonon_bandstructure
    gamma = [i for i, q in enumerate(bands.qpoints) if np.allclose(q.frac_coords, 0)]
    frequencies = np.sort(bands.bands[:, gamma[0]])  # THz
    expected = _gamma_frequencies(doc.structure, np.array(doc.supercell_matrix), calc)
    assert np.abs(frequencies[:3]).max() < 0.05
    np.testing.assert_allclose(frequencies[3:], expected[3:], rtol=0.02)


def _gamma_frequencies(structure, supercell_matrix, calc, h=0.01):
    """Γ frequencies (THz) from central differences of the forces in the supercell (Å)."""
    prim = AseAtomsAdaptor.get_atoms(structure)
    cell = AseAtomsAdaptor.get_atoms(structure * supercell_matrix)
    n_prim = len(prim)
    image_of = [int(np.argmin([np.linalg.norm(((p - q) @ np.linalg.inv(prim.cell) + 0.5) % 1
                                              - 0.5) for q in prim.positions]))
                for p in cell.positions]  # fmt: skip
    rows = {i: next(j for j, k in enumerate(image_of) if k == i) for i in range(n_prim)}
    force_constants = np.zeros((3 * n_prim, 3 * n_prim))
    for i, row in rows.items():
        for a in range(3):
            diff = []
            for sign in (1, -1):
                displaced = cell.copy()
                displaced.positions[row, a] += sign * h
                displaced.calc = calc
                diff.append(displaced.get_forces())
            derivative = -(diff[0] - diff[1]) / (2 * h)  # eV/Å² per atom of the supercell
            for j in range(n_prim):
                mask = np.array(image_of) == j
                force_constants[3 * i + a, 3 * j : 3 * j + 3] = derivative[mask].sum(axis=0)
    masses = np.repeat(prim.get_masses(), 3)
    dynamical = force_constants / np.sqrt(np.outer(masses, masses))
    dynamical = (dynamical + dynamical.T) / 2
    omega2 = np.linalg.eigvalsh(dynamical)  # (eV/Å²/amu) = ASE's frequency unit squared
    return np.sign(omega2) * np.sqrt(np.abs(omega2)) * THZ_PER_ASE_FREQUENCY / (2 * np.pi)


def test_elastic_bulk_modulus_matches_eos(calc):
    cu = AseAtomsAdaptor.get_structure(bulk("Cu", "fcc", a=3.6))
    maker = gptff_flow_maker(ElasticMaker, dtype="float64")
    assert isinstance(maker.elastic_relax_maker, GPTFFRelaxMaker)
    flow = maker.make(cu)
    responses = _run(flow)
    doc = responses[flow.output.uuid][1].output
    _assert_provenance(_task_docs(responses), calc)
    c = np.array(doc.elastic_tensor.ieee_format)  # GPa
    b_elastic = (c[0, 0] + 2 * c[0, 1]) / 3
    atoms = AseAtomsAdaptor.get_atoms(doc.structure)
    volumes, energies = [], []
    for scale in np.linspace(0.99, 1.01, 7):  # ±1 % linear
        strained = atoms.copy()
        strained.set_cell(atoms.cell * scale, scale_atoms=True)
        strained.calc = calc
        volumes.append(strained.get_volume())
        energies.append(strained.get_potential_energy())
    _, _, b_eos = EquationOfState(volumes, energies, eos="birchmurnaghan").fit()
    assert b_elastic == pytest.approx(b_eos / units.GPa, rel=0.02)


@pytest.mark.parametrize("dynamics", [None, "berendsen", "nose-hoover-chain", "IsotropicMTKNPT"])
def test_npt_runs_with_only_the_ensemble_named(dynamics):
    """ASE 3.29's NPT integrators need a pressure, MTK damping times and a Berendsen
    compressibility; atomate2 0.1.5 supplies none (TypeError on pressure None before)."""
    from ase.md import nose_hoover_chain

    from gptff_flows.jobs.force_field import NPT_COMPRESSIBILITY_AU

    cu = AseAtomsAdaptor.get_structure(bulk("Cu", "fcc", a=3.7, cubic=True))  # under tension
    chosen = getattr(nose_hoover_chain, dynamics) if dynamics == "IsotropicMTKNPT" else dynamics
    maker = GPTFFMDMaker(ensemble="npt", n_steps=5, temperature=300,
                         **({"dynamics": chosen} if chosen else {}))  # fmt: skip
    result = maker.run_ase(cu)
    assert result.final_mol_or_struct.volume < cu.volume  # the barostat acted (0 kbar target)
    kwargs = maker.ase_md_kwargs
    if dynamics == "berendsen":
        assert kwargs["compressibility_au"] == NPT_COMPRESSIBILITY_AU
        assert NPT_COMPRESSIBILITY_AU == pytest.approx(1 / (100 * units.GPa))
    else:
        assert kwargs["tdamp"] == pytest.approx(100 * maker.time_step * units.fs)
        assert kwargs["pdamp"] == pytest.approx(1000 * maker.time_step * units.fs)


def test_neb_of_a_vacancy_hop_records_gptff_energies_and_a_symmetric_barrier(calc):
    """atomate2's NEB from images with GPTFF: a nearest-neighbour vacancy hop in fcc Cu, whose
    path is symmetric, so the forward and reverse barriers agree; every recorded energy is the
    calculator's own on the recorded image."""
    from atomate2.forcefields.neb import ForceFieldNebFromImagesMaker

    crystal = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)
    start, end = crystal.copy(), crystal.copy()
    hop = int(np.argsort(np.linalg.norm(crystal.positions - crystal.positions[0], axis=1))[1])
    end.positions[hop] = crystal.positions[0]  # the neighbour moves into the vacancy at site 0
    del start[0], end[0]
    images = [start.copy() for _ in range(5)]
    for k, image in enumerate(images):
        image.positions = start.positions + (end.positions - start.positions) * k / 4
    adaptor = AseAtomsAdaptor()
    # no from_force_field_name on this Maker: atomate2's own way of naming a force field
    maker = ForceFieldNebFromImagesMaker(**gptff_force_field(dtype="float64")._asdict(), steps=300)
    job = maker.make([adaptor.get_structure(image) for image in images])
    result = _run(job)[job.uuid][1].output
    assert len(result.images) == len(result.energies) == 5
    for structure, energy in zip(result.images, result.energies, strict=True):
        atoms = adaptor.get_atoms(structure)
        atoms.calc = calc
        assert energy == pytest.approx(atoms.get_potential_energy(), abs=1e-6)
    assert result.forward_barrier > 0.1  # eV: a vacancy hop in Cu is not free
    assert result.forward_barrier == pytest.approx(result.reverse_barrier, abs=5e-3)
