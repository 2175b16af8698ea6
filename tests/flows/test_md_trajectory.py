"""MD trajectories in the store (gptff_flows.schemas.md_trajectory): since document version 2 a
pymatgen Trajectory as atomate2's TrajectoryObserver makes it (plus the step, kinetic and
conserved energy of each frame); documents of version 1 (base64 npz) still read."""

import base64
import io

import numpy as np
import pytest

pytest.importorskip("atomate2")

from ase.build import bulk
from pymatgen.core import Lattice, Structure
from pymatgen.core.trajectory import Trajectory
from pymatgen.io.ase import AseAtomsAdaptor

from gptff_flows.jobs.md import conserved_drift
from gptff_flows.schemas import GPTFFProvenance
from gptff_flows.schemas.finetune_md import MDTemperatureDocument, load_trajectory
from gptff_flows.stores import local_job_store


def pack_npz_version_1(**arrays: np.ndarray) -> dict:
    """The trajectory format of document version 1 (MD documents without ``document_version``),
    as the MD jobs wrote it: numpy arrays, ``np.savez_compressed``, base64. Kept here as that
    format's definition."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return {
        "format": "npz-base64",
        "keys": sorted(arrays),
        "data": base64.b64encode(buffer.getvalue()).decode("ascii"),
    }


def _version_1_document() -> tuple[dict, dict]:
    """(an MD document as version 1 stored it, the arrays of its trajectory)."""
    rng = np.random.default_rng(0)
    n = 5
    steps = np.arange(n) * 10
    arrays = dict(
        steps=steps,
        time_fs=steps * 2.0,
        positions=rng.random((n, 2, 3)).astype(np.float32),
        cells=np.repeat(np.eye(3)[None] * 4.0, n, axis=0),
        numbers=np.array([3, 17]),
        potential_energy=rng.random(n),
        kinetic_energy=rng.random(n),
        conserved_energy=rng.random(n),
        temperature=600 + rng.random(n),
        pressure=rng.random(n),
    )
    provenance = GPTFFProvenance(
        job_type="md", model="gptff-v2", model_name="gptff-v2", checkpoint_path="-",
        checkpoint_sha256="0" * 64, checkpoint_format="published", dtype="float32",
        smooth=False, bond_window=0.5, three_body_window=0.5, device="cpu",
        gptff_version="0.1",
    )  # fmt: skip
    document = dict(
        formula_pretty="LiCl", chemsys="Cl-Li", nsites=2, temperature=600.0, ensemble="nvt",
        dynamics="NoseHooverChainNVT", time_step=2.0, n_steps=40, equilibration_steps=0,
        traj_interval=10, supercell=[1, 1, 1], seed=0, mean_temperature=600.5,
        std_temperature=0.3, mean_pressure=0.5, mean_volume=64.0,
        conserved_quantity="NoseHooverChainNVT conserved energy", elapsed_s=1.0,
        ms_per_step=25.0, flags=["not_diffusive"], gptff=provenance.model_dump(),
        trajectory=pack_npz_version_1(**arrays),
    )  # fmt: skip
    return document, arrays


def test_version_1_documents_still_read(tmp_path):
    """A store written before document version 2 holds npz trajectories: the document
    validates as version 1 (as the summary job reads it), and load_trajectory gives the same
    arrays from the document and from its trajectory as the store returns it."""
    document, arrays = _version_1_document()
    store = local_job_store(tmp_path / "store")
    store.connect()
    entry = {"uuid": "v1", "index": 1, "output": document}
    store.update(entry, key=["uuid", "index"], save={"data": ["trajectory"]})
    raw = store.query_one({"uuid": "v1"}, load=False)["output"]
    assert "blob_uuid" in raw["trajectory"]  # in the data store, as the MD job put it
    stored = store.query_one({"uuid": "v1"}, load=True)["output"]
    doc = MDTemperatureDocument.model_validate(stored)
    assert doc.document_version == 1
    for source in (doc, stored["trajectory"]):
        frames = load_trajectory(source)
        assert set(frames) == set(arrays)
        for key, values in arrays.items():
            np.testing.assert_array_equal(frames[key], values)


def test_md_job_stores_a_pymatgen_trajectory(tmp_path, monkeypatch):
    """Version 2: the MD job's trajectory is atomate2's pymatgen Trajectory (fractional
    coordinates, a lattice per frame, energy, forces, stress, velocities, temperature) with
    each frame's step, kinetic and conserved energy; what load_trajectory reads from it (in
    memory or as the store returns it) gives the document's drift again."""
    from gptff_flows.jobs.finetune_md import md_job

    atoms = bulk("Cu", "fcc", a=3.70, cubic=True)
    atoms.set_chemical_symbols(["Au", "Cu", "Cu", "Cu"])
    settings = dict(
        ensemble="nvt", time_step=2.0, n_steps=12, equilibration_steps=4, traj_interval=2,
        supercell=[1, 1, 1], pressure=0.0, tdamp=200.0, pdamp=2000.0, seed=0, species="Au",
        charge=None, dtype="float64", smooth=True, device="cpu", skin=1.0, n_blocks=2,
    )  # fmt: skip
    monkeypatch.chdir(tmp_path)
    structure = AseAtomsAdaptor.get_structure(atoms)
    doc = md_job.original(None, structure, 600.0, settings, model="gptff-v2")
    assert doc.document_version == 2
    trajectory = doc.trajectory
    assert isinstance(trajectory, Trajectory) and len(trajectory) == 9  # steps 0, 2, ..., 16
    assert trajectory.time_step == 2.0 and not trajectory.constant_lattice
    frame = trajectory.frame_properties[-1]
    expected = {"energy", "forces", "stress", "velocities", "temperature", "step"}
    assert expected | {"kinetic_energy", "conserved_energy"} <= set(frame)
    assert frame["step"] == 16
    assert isinstance(trajectory.get_structure(0), Structure)
    again = Trajectory.from_dict(trajectory.as_dict())
    frames, stored = load_trajectory(doc), load_trajectory(again.as_dict())
    for key in frames:
        np.testing.assert_allclose(stored[key], frames[key], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(frames["time_fs"], 4.0 * np.arange(9))
    production = frames["steps"] >= 4
    drift, deviation = conserved_drift(
        frames["time_fs"][production], frames["conserved_energy"][production], 4
    )
    assert (drift, deviation) == (doc.conserved_drift, doc.conserved_max_deviation)
    lattice = Lattice(frames["cells"][0])
    assert np.allclose(lattice.get_cartesian_coords(trajectory.coords[0]), frames["positions"][0])


def test_an_unknown_trajectory_format_is_refused():
    from gptff_core.errors import GPTFFInputError

    with pytest.raises(GPTFFInputError, match="unknown trajectory format 'hdf5'"):
        load_trajectory({"format": "hdf5"})
