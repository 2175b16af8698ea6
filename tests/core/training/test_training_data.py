"""Training data: readers round-trip known structures and labels, VASP/CSV stress units and signs
against hand-computed values, the trajectory-grouped split, bad data, and the reference refit."""

import math

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.db import connect
from pymatgen.core import Lattice, Structure
from training_fixtures import (
    emt_configurations,
    outcar_text,
    vasprun_text,
    write_published_csv,
)

from gptff_core.errors import GPTFFInputError
from gptff_core.training.datasets import (
    fingerprint,
    frames_from_structures,
    read_frames,
    split_frames,
)
from gptff_core.training.references import fit_reference_energies, refit_references

EV_PER_A3_PER_GPA = 1.0 / 160.21766208  # 1 GPa in eV/Å³, written out by hand (e = 1.602e-19 C)


def _steps():
    """Two ionic steps of a 2-atom CuAu cell (VASP units)."""
    return [
        dict(
            cell=np.eye(3) * 4.0,
            positions=[[0.0, 0.0, 0.0], [2.0, 2.0, 0.0]],
            forces=[[0.1, -0.2, 0.3], [-0.1, 0.2, -0.3]],
            stress_kb=[10.0, 20.0, 30.0, 1.0, 2.0, 3.0],  # xx yy zz xy yz zx
            free=-7.5,
            zero=-7.49,
        ),
        dict(
            cell=np.eye(3) * 4.1,
            positions=[[0.0, 0.0, 0.1], [2.05, 2.05, 0.0]],
            forces=[[0.2, -0.2, 0.3], [-0.2, 0.2, -0.3]],
            stress_kb=[-10.0, 5.0, 0.0, 0.0, 0.0, 4.0],
            free=-7.6,
            zero=-7.59,
        ),
    ]


def _vasp_stress_by_hand(xx, yy, zz, xy, yz, zx):
    """kBar, pressure positive → eV/Å³ 3×3, tension positive: −value/10 GPa."""
    tensor = np.array([[xx, xy, zx], [xy, yy, yz], [zx, yz, zz]])
    return -tensor / 10.0 * EV_PER_A3_PER_GPA


def test_outcar_every_ionic_step_with_units_and_signs(tmp_path):
    path = tmp_path / "OUTCAR"
    path.write_text(outcar_text([("Cu", 1), ("Au", 1)], _steps()))
    frames = read_frames(path)
    assert len(frames) == 2
    assert {f.group for f in frames} == {str(path)}  # one run, one trajectory
    for frame, step in zip(frames, _steps(), strict=True):
        assert frame.atoms.get_chemical_symbols() == ["Cu", "Au"]
        np.testing.assert_allclose(frame.atoms.cell.array, step["cell"])
        np.testing.assert_allclose(frame.atoms.positions, step["positions"], atol=1e-5)
        assert frame.energy == pytest.approx(step["free"])  # TOTEN: forces are its derivative
        np.testing.assert_allclose(frame.forces, step["forces"])
        np.testing.assert_allclose(
            frame.stress, _vasp_stress_by_hand(*step["stress_kb"]), rtol=1e-6
        )
    # first step, xx: 10 kBar of pressure = −1 GPa of tension = −0.0062415 eV/Å³
    assert frames[0].stress[0, 0] == pytest.approx(-0.00624150913, rel=1e-6)


def test_vasprun_every_ionic_step_with_units_and_signs(tmp_path):
    steps = _steps()
    for step in steps:
        xx, yy, zz, xy, yz, zx = step["stress_kb"]
        step["stress_kb"] = [[xx, xy, zx], [xy, yy, yz], [zx, yz, zz]]
        step["fractional"] = np.asarray(step["positions"]) @ np.linalg.inv(step["cell"])
    path = tmp_path / "vasprun.xml"
    path.write_text(vasprun_text(["Cu", "Au"], steps))
    frames = read_frames(path)
    assert len(frames) == 2
    for frame, step in zip(frames, _steps(), strict=True):
        np.testing.assert_allclose(frame.atoms.positions, step["positions"], atol=1e-8)
        assert frame.energy == pytest.approx(step["free"])
        np.testing.assert_allclose(frame.forces, step["forces"])
        np.testing.assert_allclose(
            frame.stress, _vasp_stress_by_hand(*step["stress_kb"]), rtol=1e-6
        )


def test_extxyz_round_trip_with_emt_labels(tmp_path):
    configurations = emt_configurations(3, seed=1)
    path = tmp_path / "train.extxyz"
    ase.io.write(path, configurations)
    frames = read_frames(path)
    assert len(frames) == 3
    for frame, atoms in zip(frames, configurations, strict=True):
        np.testing.assert_allclose(frame.atoms.positions, atoms.positions, atol=1e-8)
        assert frame.energy == pytest.approx(atoms.get_potential_energy())
        np.testing.assert_allclose(frame.forces, atoms.get_forces(), atol=1e-8)
        np.testing.assert_allclose(frame.stress, atoms.get_stress(voigt=False), atol=1e-10)


def test_extxyz_groups_consecutive_equal_atoms_or_info_key(tmp_path):
    cu = [bulk("Cu", "fcc", a=3.6 + 0.01 * k) for k in range(3)]
    ni = [bulk("Ni", "fcc", a=3.5 + 0.01 * k) for k in range(2)]
    for atoms in cu + ni:
        atoms.info["energy"] = -1.0
    path = tmp_path / "two_runs.extxyz"
    ase.io.write(path, cu + ni)
    groups = [f.group for f in read_frames(path)]
    assert groups[0] == groups[1] == groups[2] != groups[3] == groups[4]
    for k, atoms in enumerate(cu + ni):
        atoms.info["group"] = f"g{k % 2}"
    ase.io.write(path, cu + ni)
    groups = [f.group for f in read_frames(path)]
    assert groups[0] == groups[2] == groups[4] != groups[1] == groups[3]


def test_extxyz_virial_becomes_stress(tmp_path):
    """A virial W (eV, as GAP-style extxyz files give it) is the stress −W/V in eV/Å³."""
    atoms = bulk("Cu", "fcc", a=4.0, cubic=True)  # V = 64 Å³
    atoms.info["energy"] = -1.0
    atoms.info["virial"] = np.diag([6.4, -12.8, 0.0])
    path = tmp_path / "virial.extxyz"
    ase.io.write(path, atoms)
    (frame,) = read_frames(path)
    np.testing.assert_allclose(frame.stress, np.diag([-0.1, 0.2, 0.0]), atol=1e-12)


def test_ase_database_round_trip(tmp_path):
    configurations = emt_configurations(2, seed=2)
    path = tmp_path / "data.db"
    with connect(path) as database:
        for atoms in configurations:
            database.write(atoms)
    frames = read_frames(path)
    for frame, atoms in zip(frames, configurations, strict=True):
        assert frame.energy == pytest.approx(atoms.get_potential_energy())
        np.testing.assert_allclose(frame.forces, atoms.get_forces(), atol=1e-10)
        np.testing.assert_allclose(frame.stress, atoms.get_stress(voigt=False), atol=1e-12)


def _nacl() -> Structure:
    return Structure(Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def test_published_csv_units_and_signs(tmp_path):
    forces = [[0.5, 0.0, -0.5], [-0.5, 0.0, 0.5]]
    path = tmp_path / "train.csv"
    write_published_csv(
        path,
        [
            dict(
                struct_id="mp-22862-0",
                energy=-6.5,
                forces=forces,
                stress=[[10.0, 1.0, 0.0], [1.0, -20.0, 0.0], [0.0, 0.0, 5.0]],
                structure=_nacl(),
                fold=3,
                ref_energy=-7.0,
            ),
            # six values in VASP's order xx yy zz xy yz zx; no forces
            dict(
                struct_id="mp-22862-1",
                energy=-6.4,
                forces=None,
                stress=[10.0, -20.0, 5.0, 1.0, 0.0, 0.0],
                structure=_nacl(),
            ),
        ],
    )
    first, second = read_frames(path)
    assert first.atoms.get_chemical_symbols() == ["Na", "Cl"]
    np.testing.assert_allclose(first.atoms.cell.lengths(), [5.64] * 3)
    assert first.energy == -6.5 and second.energy == -6.4
    np.testing.assert_allclose(first.forces, forces)
    assert second.forces is None  # missing label, masked later
    expected = _vasp_stress_by_hand(10.0, -20.0, 5.0, 1.0, 0.0, 0.0)
    np.testing.assert_allclose(first.stress, expected, rtol=1e-6)
    np.testing.assert_allclose(second.stress, expected, rtol=1e-6)
    assert first.stress[1, 1] == pytest.approx(2.0 * EV_PER_A3_PER_GPA)  # −20 kBar → +2 GPa
    assert first.atoms.info["fold"] == 3
    assert first.group != second.group


def test_python_lists_with_explicit_labels():
    structure = _nacl()
    frames = frames_from_structures(
        [structure, structure], energies=[-6.5, None], forces=[np.zeros((2, 3)), None]
    )
    assert frames[0].energy == -6.5 and frames[1].energy is None
    assert frames[1].forces is None and frames[0].stress is None
    assert frames[0].group != frames[1].group


@pytest.mark.parametrize(
    ("writer", "message"),
    [
        (lambda p: p.write_text(""), "empty"),
        (lambda p: p.write_text("struct_id,energy,forces,stress,structure\n"), "no rows"),
        (lambda p: p.write_text("a,b\n1,2\n"), "missing columns"),
    ],
)
def test_bad_files_are_named(tmp_path, writer, message):
    path = tmp_path / "bad.csv"
    writer(path)
    with pytest.raises(GPTFFInputError, match=message) as error:
        read_frames(path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (dict(energy=-1.0, forces=[[0.0, 0.0, 0.0]]), r"frame 1: forces have shape \(1, 3\)"),
        (dict(energy=float("nan")), "frame 1: energy is nan"),
        (dict(energy=-1.0, forces=[[math.nan, 0, 0], [0, 0, 0]]), "frame 1: forces contain NaN"),
        (dict(energy=-1.0, stress=[1.0, 2.0]), "frame 1: stress has shape"),
    ],
)
def test_bad_labels_name_file_and_frame(tmp_path, row, message):
    path = tmp_path / "train.csv"
    good = dict(struct_id="a", energy=-1.0, structure=_nacl())
    write_published_csv(path, [good, dict(struct_id="b", structure=_nacl()) | row])
    with pytest.raises(GPTFFInputError, match=message) as error:
        read_frames(path)
    assert str(path) in str(error.value)


def test_unknown_element_names_file_and_frame(tmp_path):
    path = tmp_path / "heavy.extxyz"
    atoms = Atoms("Cu2", positions=[[0, 0, 0], [1.8, 1.8, 0]], cell=[4, 4, 4], pbc=True)
    atoms.info["energy"] = -1.0
    atoms.numbers[1] = 95  # americium: outside H–Pu
    ase.io.write(path, atoms)
    with pytest.raises(GPTFFInputError, match="frame 0") as error:
        read_frames(path)
    assert str(path) in str(error.value)


def test_file_without_labels_is_refused(tmp_path):
    path = tmp_path / "plain.cif"
    ase.io.write(path, bulk("Cu"))
    with pytest.raises(GPTFFInputError, match="no energies, forces or stresses"):
        read_frames(path)


def test_split_keeps_trajectories_on_one_side():
    atoms = bulk("Cu", "fcc", a=3.6)
    groups = [f"traj{k // 4}" for k in range(40)]  # 10 trajectories of 4 frames
    frames = frames_from_structures([atoms] * 40, energies=[-1.0] * 40, groups=groups)
    train, valid = split_frames(frames, 0.25, seed=3)
    assert len(train) + len(valid) == 40
    assert not {f.group for f in train} & {f.group for f in valid}
    assert len(valid) == 12 or len(valid) == 8  # whole trajectories near 10 frames
    single = frames_from_structures([atoms] * 10, energies=[-1.0] * 10, groups=["run"] * 10)
    train, valid = split_frames(single, 0.2)
    assert [f.index for f in valid] == [8, 9]  # the end of the one trajectory


def test_fingerprint_changes_with_labels():
    atoms = bulk("Cu")
    a = frames_from_structures([atoms], energies=[-1.0])
    b = frames_from_structures([atoms], energies=[-1.0 + 1e-9])
    assert fingerprint(a) == fingerprint(frames_from_structures([atoms], energies=[-1.0]))
    assert fingerprint(a) != fingerprint(b)


def test_reference_fit_recovers_known_offsets():
    """Energies built from chosen per-element references plus a 'network' part: the residual
    fit recovers the references exactly; the composition fit recovers them when the network
    part is zero."""
    rng = np.random.default_rng(0)
    chosen = {29: -3.7, 79: -3.2, 28: -5.5}
    structures, network_part = [], []
    for k in range(12):
        n = 2 + k % 3
        numbers = rng.choice(list(chosen), size=n)
        structures.append(
            Atoms(
                numbers=numbers,
                positions=np.arange(3 * n).reshape(n, 3) * 1.1,
                cell=[30, 30, 30],
                pbc=True,
            )
        )
        network_part.append(rng.normal(0.0, 0.3))
    offsets = np.array([sum(chosen[z] for z in s.numbers) for s in structures])
    current = np.zeros(95)
    current[1] = 9.0  # an absent element keeps its value
    frames = frames_from_structures(structures, energies=offsets + network_part)
    fitted = fit_reference_energies(frames, np.array(network_part), current)
    for z, value in chosen.items():
        assert fitted[z] == pytest.approx(value, abs=1e-10)
    assert fitted[1] == 9.0
    frames = frames_from_structures(structures, energies=offsets)
    fitted = fit_reference_energies(frames, None, current)
    for z, value in chosen.items():
        assert fitted[z] == pytest.approx(value, abs=1e-10)


def test_refit_references_sets_the_model_buffer(models):
    import copy

    model = copy.deepcopy(models("gptff-v2", "float64"))
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    frames = frames_from_structures([atoms], energies=[0.0])
    record = refit_references(model, frames, "composition")
    assert record["mode"] == "composition" and set(record["elements"]) == {"Cu"}
    assert float(model.reference_energies[29]) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(GPTFFInputError, match="needs the network's energies"):
        refit_references(model, frames, "residual")
