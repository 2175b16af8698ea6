"""Physics of the GPTFF implementation, in float64: forces and stress are the derivatives of the
energy (central finite differences), the energy is invariant under rotation, translation and
permutation of atoms, batching changes nothing, the graph is right for supercells, tiny cells and
mixed periodicity, and the ASE calculator relaxes a strained cell.

The published network is discontinuous at its cutoffs (5.0 Å bonds, 3.5 Å triplets), so every
finite-difference structure is first checked to have no bond within ``CUTOFF_CLEARANCE`` of them.
"""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, fcc111, molecule
from ase.calculators.calculator import PropertyNotImplementedError
from ase.filters import FrechetCellFilter
from ase.optimize import FIRE
from finite_differences import numeric_forces, numeric_virial, sheared_tio2

from gptff_core import GPTFFCalculator, predict
from gptff_core import calculator as calculator_module
from gptff_core.evaluate import evaluate
from gptff_core.graph import build_graph, find_bonds

F64 = torch.float64
FD_STEP = 5e-5  # Å, displacement for forces (truncation error ∝ step²)
STRAIN_STEP = 1e-5  # strain for stress (a strain moves atoms 5 Å apart by 5 Å × strain)
FD_TOL = 1e-6  # eV/Å for forces, eV for stress × volume (measured errors ≲ 1e-7)
CUTOFF_CLEARANCE = 0.01  # Å; ≫ any FD change of a bond length (≤ 2e-4 Å): none crosses a cutoff
EXACT = 1e-10  # eV, eV/Å, eV/Å³: invariances and batching in float64


# ------------------------------------------------------------------------------ structures
def triclinic() -> Atoms:
    """Three atoms in a sheared (non-orthogonal) periodic cell, rattled."""
    return sheared_tio2()


def slab() -> Atoms:
    """A 3-layer Cu(111) slab, hexagonal in-plane cell, pbc=(True, True, False), rattled."""
    atoms = fcc111("Cu", size=(1, 1, 3), vacuum=6.0)
    atoms.rattle(0.05, seed=12)
    assert atoms.pbc.tolist() == [True, True, False]
    return atoms


def ammonia() -> Atoms:
    """A molecule: no cell, no periodicity, rattled."""
    atoms = molecule("NH3")
    atoms.rattle(0.05, seed=13)
    return atoms


def no_bonds() -> Atoms:
    """Two atoms 7 Å apart, non-periodic: a graph without a single bond."""
    return Atoms("CuO", positions=[[0, 0, 0], [7.0, 0, 0]])


FD_STRUCTURES = {"triclinic": triclinic, "slab": slab, "molecule": ammonia}


def energy(model, atoms: Atoms) -> float:
    return evaluate(
        model, build_graph([atoms], dtype=F64), forces=False, stress=False
    ).energy.item()


def full(model, atoms: Atoms):
    return evaluate(model, build_graph([atoms], dtype=F64))


def assert_clear_of_cutoffs(atoms: Atoms) -> None:
    _, _, _, lengths = find_bonds(atoms, 5.0 + 2 * CUTOFF_CLEARANCE)
    for cutoff in (5.0, 3.5):
        assert np.abs(lengths - cutoff).min() > CUTOFF_CLEARANCE, f"a bond is close to {cutoff} Å"


def brute_force_counts(atoms: Atoms, cutoff=5.0, short=3.5) -> tuple[int, int]:
    """Bonds and triplets by enumerating image shifts explicitly (independent of vesin)."""
    cell = atoms.cell.array
    reach = [
        int(np.ceil(cutoff * np.linalg.norm(row))) + 1 if periodic else 0
        for row, periodic in zip(np.linalg.pinv(cell).T, atoms.pbc, strict=True)
    ]
    shifts = np.array(np.meshgrid(*[np.arange(-n, n + 1) for n in reach])).reshape(3, -1).T
    pos = atoms.positions
    vectors = pos[None, :, None] + (shifts @ cell)[None, None] - pos[:, None, None]
    d = np.linalg.norm(vectors, axis=-1)  # (centre, neighbour, shift)
    bonds = (d > 0) & (d <= cutoff)
    n_short = ((d > 0) & (d <= short)).sum(axis=(1, 2))
    return int(bonds.sum()), int((n_short * (n_short - 1)).sum())


def random_rotation(seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


# ------------------------------------------------------------------- finite differences
@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize("name", list(FD_STRUCTURES))
def test_forces_are_minus_the_energy_gradient(models, version, name):
    model = models(f"gptff-{version}", "float64")
    atoms = FD_STRUCTURES[name]()
    assert_clear_of_cutoffs(atoms)
    forces = full(model, atoms).forces.numpy()
    numeric = numeric_forces(lambda moved: energy(model, moved), atoms, FD_STEP)
    assert np.abs(forces).max() > 0.05  # rattled: the comparison is not trivially 0 == 0
    np.testing.assert_allclose(forces, numeric, rtol=0, atol=FD_TOL)


@pytest.mark.parametrize("version,name", [("v1", "triclinic"), ("v2", "triclinic"), ("v2", "slab")])
def test_stress_is_the_strain_derivative_over_volume(models, version, name):
    model = models(f"gptff-{version}", "float64")
    atoms = FD_STRUCTURES[name]()
    assert_clear_of_cutoffs(atoms)
    virial = full(model, atoms).stress[0].numpy() * atoms.get_volume()  # σ·V = ∂E/∂ε, eV
    numeric = numeric_virial(lambda strained: energy(model, strained), atoms, STRAIN_STEP)
    np.testing.assert_allclose(virial, numeric, rtol=0, atol=FD_TOL)
    np.testing.assert_allclose(virial, virial.T, rtol=0, atol=1e-10)
    assert np.abs(virial).max() > 0.05


# ----------------------------------------------------------------------------- invariances
@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize("name", ["triclinic", "slab", "molecule"])
def test_rotation_invariance(models, version, name):
    model = models(f"gptff-{version}", "float64")
    atoms = FD_STRUCTURES[name]()
    rotation = random_rotation(seed=len(name))
    rotated = atoms.copy()
    rotated.positions = atoms.positions @ rotation.T
    rotated.cell = atoms.cell.array @ rotation.T
    before, after = full(model, atoms), full(model, rotated)
    assert abs(before.energy.item() - after.energy.item()) < EXACT
    np.testing.assert_allclose(after.forces, before.forces.numpy() @ rotation.T, rtol=0, atol=EXACT)
    expected_stress = rotation @ before.stress[0].numpy() @ rotation.T
    np.testing.assert_allclose(after.stress[0], expected_stress, rtol=0, atol=EXACT)


@pytest.mark.parametrize("name", ["triclinic", "slab", "molecule"])
def test_translation_invariance(models, name):
    model = models("gptff-v2", "float64")
    atoms = FD_STRUCTURES[name]()
    moved = atoms.copy()
    moved.positions += [1.7, -2.3, 0.9]
    before, after = full(model, atoms), full(model, moved)
    assert abs(before.energy.item() - after.energy.item()) < EXACT
    np.testing.assert_allclose(after.forces, before.forces, rtol=0, atol=EXACT)
    np.testing.assert_allclose(after.stress, before.stress, rtol=0, atol=EXACT)
    if atoms.pbc.all():  # wrapping atoms back into the cell changes nothing either
        moved.wrap()
        assert abs(energy(model, moved) - before.energy.item()) < EXACT


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_permutation_invariance(models, version):
    model = models(f"gptff-{version}", "float64")
    atoms = bulk("NaCl", "rocksalt", a=5.64, cubic=True)  # 8 atoms, two elements
    atoms.rattle(0.05, seed=14)
    order = np.random.default_rng(15).permutation(len(atoms))
    before, after = full(model, atoms), full(model, atoms[order])
    assert abs(before.energy.item() - after.energy.item()) < EXACT
    np.testing.assert_allclose(after.forces, before.forces[order], rtol=0, atol=EXACT)
    np.testing.assert_allclose(after.stress, before.stress, rtol=0, atol=EXACT)


# ------------------------------------------------------------------------------- batching
def batch_members() -> list[Atoms]:
    """Different sizes (3, 8, 4, 2 atoms: v2 pads attention), pbc, mixed pbc, none, no bonds."""
    silicon = bulk("Si", "diamond", a=5.43, cubic=True)
    silicon.rattle(0.05, seed=16)
    return [triclinic(), silicon, ammonia(), no_bonds(), slab()]


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_batched_graph_equals_one_by_one(models, version):
    model = models(f"gptff-{version}", "float64")
    members = batch_members()
    graph = build_graph(members, dtype=F64)
    batched = evaluate(model, graph)
    singles = [full(model, atoms) for atoms in members]
    assert graph.n_bonds == sum(build_graph([a]).n_bonds for a in members)
    expected = torch.cat([s.energy for s in singles])
    np.testing.assert_allclose(batched.energy, expected, rtol=0, atol=EXACT)
    np.testing.assert_allclose(batched.forces, torch.cat([s.forces for s in singles]), 0, EXACT)
    np.testing.assert_allclose(batched.stress, torch.cat([s.stress for s in singles]), 0, EXACT)
    assert batched.has_stress.tolist() == [True, True, False, False, True]


def test_batch_without_any_bond(models):
    lonely = [no_bonds(), Atoms("Fe"), Atoms("Cu", cell=np.eye(3) * 11.0, pbc=True)]
    graph = build_graph(lonely, dtype=F64)
    assert graph.n_bonds == graph.n_triplets == 0
    result = evaluate(models("gptff-v2", "float64"), graph)
    singles = torch.cat([full(models("gptff-v2", "float64"), a).energy for a in lonely])
    np.testing.assert_allclose(result.energy, singles, rtol=0, atol=EXACT)
    assert torch.equal(result.forces, torch.zeros(4, 3, dtype=F64))
    assert torch.equal(result.stress, torch.zeros(3, 3, 3, dtype=F64))


def test_predict_batched_equals_one_by_one(models):
    model = models("gptff-v2", "float64")
    members = batch_members()
    together = predict(members, model, dtype="float64")
    split = predict(members, model, dtype="float64", max_atoms_per_batch=5)  # several batches
    for index, atoms in enumerate(members):
        alone = predict([atoms], model, dtype="float64")
        for result in (together, split):
            assert abs(result.energies[index] - alone.energies[0]) < EXACT
            np.testing.assert_allclose(result.forces[index], alone.forces[0], rtol=0, atol=EXACT)
            if alone.stresses[0] is None:
                assert result.stresses[index] is None
            else:
                np.testing.assert_allclose(result.stresses[index], alone.stresses[0], 0, EXACT)
    assert together.stresses[2] is None and together.stresses[3] is None  # molecule, no cell


# ----------------------------------------------------------------------------------- graph
@pytest.mark.parametrize("name", ["triclinic", "slab"])
def test_supercell_has_proportionally_many_bonds_and_triplets(name):
    atoms = FD_STRUCTURES[name]()
    repeat = (2, 2, 2) if atoms.pbc.all() else (2, 2, 1)
    small, big = build_graph([atoms]), build_graph([atoms.repeat(repeat)])
    factor = int(np.prod(repeat))
    assert small.n_triplets > 0
    assert (big.n_bonds, big.n_triplets) == (factor * small.n_bonds, factor * small.n_triplets)
    assert (small.n_bonds, small.n_triplets) == brute_force_counts(atoms)


def test_mixed_pbc_slab_gets_no_images_along_z(models):
    thin = fcc111("Cu", size=(2, 2, 3), vacuum=1.0)  # only 2 Å of vacuum between periodic images
    assert thin.pbc.tolist() == [True, True, False]
    isolated = thin.copy()
    isolated.center(vacuum=20.0, axis=2)
    isolated.pbc = True
    periodic_thin = thin.copy()
    periodic_thin.pbc = True
    counts = build_graph([thin]).n_bonds, build_graph([isolated]).n_bonds
    assert counts[0] == counts[1] == brute_force_counts(thin)[0]
    assert build_graph([periodic_thin]).n_bonds > counts[0]  # the comparison has teeth
    model = models("gptff-v2", "float64")
    assert abs(energy(model, thin) - energy(model, isolated)) < EXACT


# ------------------------------------------------------------------------ tiny and empty
@pytest.mark.parametrize(
    "atoms",
    [
        bulk("Cu", "fcc", a=3.61),  # primitive, 1 atom: 12 + 6 + 24 bonds
        Atoms("Cu", cell=np.eye(3) * 2.6, pbc=True),  # simple cubic, 1 atom: 6 + 12 + 8 bonds
    ],
    ids=["fcc-primitive", "sc-2.6"],
)
def test_one_atom_cubic_cells(models, atoms):
    graph = build_graph([atoms], dtype=F64)
    assert (graph.n_bonds, graph.n_triplets) == brute_force_counts(atoms)
    calc = GPTFFCalculator(models("gptff-v2", "float64"), dtype="float64")
    atoms.calc = calc
    assert np.isfinite(atoms.get_potential_energy())
    np.testing.assert_allclose(atoms.get_forces(), 0.0, atol=1e-12)
    stress = atoms.get_stress(voigt=False)
    assert abs(stress[0, 0]) > 1e-4  # far from equilibrium or not, a cubic cell's stress is
    np.testing.assert_allclose(np.diag(stress), stress[0, 0], rtol=0, atol=1e-10)  # isotropic
    np.testing.assert_allclose(stress - np.diag(np.diag(stress)), 0.0, atol=1e-10)


def test_isolated_atom_and_atom_in_a_big_box(models):
    calc = GPTFFCalculator(models("gptff-v2", "float64"), dtype="float64")
    alone = Atoms("Fe", positions=[[0.3, 0.2, 0.1]])  # no cell, pbc False
    alone.calc = calc
    isolated_energy = alone.get_potential_energy()
    assert np.isfinite(isolated_energy)
    np.testing.assert_array_equal(alone.get_forces(), np.zeros((1, 3)))
    with pytest.raises(PropertyNotImplementedError):
        alone.get_stress()
    boxed = Atoms("Fe", positions=[[0.3, 0.2, 0.1]], cell=np.eye(3) * 12.0, pbc=True)
    boxed.calc = calc
    assert build_graph([boxed]).n_bonds == 0
    assert abs(boxed.get_potential_energy() - isolated_energy) < EXACT
    np.testing.assert_allclose(boxed.get_stress(), 0.0, atol=EXACT)


def test_slab_with_20_angstrom_vacuum(models):
    atoms = fcc111("Al", size=(2, 2, 3), vacuum=10.0, periodic=True)  # 20 Å between images
    atoms.rattle(0.02, seed=17)
    atoms.calc = GPTFFCalculator(models("gptff-v2", "float64"), dtype="float64")
    assert np.isfinite(atoms.get_potential_energy())
    assert np.isfinite(atoms.get_forces()).all() and np.isfinite(atoms.get_stress()).all()
    assert abs(atoms.get_forces().sum(axis=0)).max() < 1e-10  # Newton's third law
    open_z = atoms.copy()
    open_z.pbc = (True, True, False)
    assert build_graph([atoms]).n_bonds == build_graph([open_z]).n_bonds


# ----------------------------------------------------------------------------- calculator
def test_stress_first_computes_everything_once(models, monkeypatch):
    calls = []

    def counting(*args, **kwargs):
        calls.append(kwargs)
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(calculator_module, "evaluate", counting)
    atoms = triclinic()
    atoms.calc = GPTFFCalculator(models("gptff-v2", "float64"), dtype="float64")
    stress = atoms.get_stress()
    assert {"energy", "free_energy", "forces", "stress"} <= set(atoms.calc.results)
    forces, e = atoms.get_forces(), atoms.get_potential_energy()
    assert atoms.get_potential_energy(force_consistent=True) == e  # free_energy == energy
    assert len(calls) == 1
    expected = full(models("gptff-v2", "float64"), atoms)
    assert abs(e - expected.energy.item()) < EXACT
    np.testing.assert_allclose(forces, expected.forces, rtol=0, atol=EXACT)
    np.testing.assert_allclose(stress[:3], np.diag(expected.stress[0]), rtol=0, atol=EXACT)
    atoms.positions[0, 0] += 0.01
    atoms.get_forces()
    assert len(calls) == 2  # a real change does recompute


def test_strained_cell_relaxes_with_frechet_cell_filter(models):
    atoms = bulk("Cu", "fcc", a=3.75)
    shear = np.array([[1.0, 0.03, 0.0], [0.0, 1.0, 0.0], [0.02, 0.0, 0.98]])
    atoms.set_cell(atoms.cell.array @ shear, scale_atoms=True)
    atoms.calc = GPTFFCalculator(models("gptff-v2", "float64"), dtype="float64")
    start_energy = atoms.get_potential_energy()
    start_stress = np.abs(atoms.get_stress()).max()
    fmax = 0.01  # eV/Å; on the cell: eV per atom and unit strain
    converged = FIRE(FrechetCellFilter(atoms), logfile=None).run(fmax=fmax, steps=300)
    assert converged
    assert atoms.get_potential_energy() < start_energy - 0.01
    assert np.abs(atoms.get_forces()).max() < fmax
    stress = np.abs(atoms.get_stress()).max()
    assert stress < fmax * len(atoms) / atoms.get_volume() < start_stress


def test_a_loaded_network_keeps_its_dtype_and_is_not_changed(models):
    network = models("gptff-v2", "float64")
    calculator = GPTFFCalculator(network)
    assert next(calculator.model.parameters()).dtype == torch.float64
    assert calculator.model is not network  # the caller's network is never cast or moved
    assert next(GPTFFCalculator(network, dtype="float32").model.parameters()).dtype == torch.float32
    assert next(network.parameters()).dtype == torch.float64


# ----------------------------------------------------------------- far-away (unwrapped) atoms
@pytest.mark.parametrize("distance", [1e7, 5.6e8])
def test_unwrapped_coordinates_keep_float32_precision(models, distance):
    """MD writes unwrapped coordinates. An atom one lattice translation ``n·a`` away (1e7 Å) is
    the same crystal, but in float32 its bond vectors lost ~0.9 eV/Å of force, and at 5.6e8 Å
    gave NaN; positions are moved into the cell in float64 before the cast."""
    model = models("gptff-v2", "float32")
    salt = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    salt.rattle(0.05, seed=4)
    translated = salt.copy()
    n = np.rint(distance / salt.cell.lengths()[0])
    translated.positions[3] += n * salt.cell[0]
    translated.positions[5] -= n * salt.cell[2]
    molecule_far = molecule("H2O")
    molecule_far.positions += distance
    want = predict([salt, molecule("H2O")], model, dtype="float32")
    got = predict([translated, molecule_far], model, dtype="float32")
    assert np.all(np.isfinite(got.energies))
    np.testing.assert_allclose(got.energies, want.energies, rtol=0, atol=1e-4)
    for got_forces, want_forces in zip(got.forces, want.forces, strict=True):
        np.testing.assert_allclose(got_forces, want_forces, rtol=0, atol=1e-4)
    np.testing.assert_allclose(got.stresses[0], want.stresses[0], rtol=0, atol=1e-6)
