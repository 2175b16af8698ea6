"""GPTFF as a TorchSim model (the optional ``torchsim`` extra), in float64: a batched state gives
the ASE calculator's energies, forces and stresses, TorchSim's FIRE with its Fréchet cell filter
relaxes strained cells, and its velocity-Verlet NVE conserves energy."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk

from gptff_core import GPTFFCalculator

ts = pytest.importorskip("torch_sim")
from torch_sim.models.interface import validate_model_outputs  # noqa: E402
from torch_sim.units import MetalUnits  # noqa: E402

from gptff_core.torchsim import GPTFFTorchSimModel  # noqa: E402

F64 = torch.float64
EXACT = 1e-10  # eV, eV/Å, eV/Å³: same network, same float64 arithmetic up to summation order


@pytest.fixture(scope="module")
def ts_model(models):
    return GPTFFTorchSimModel(models("gptff-v2", "float64"), dtype="float64")


def three_structures() -> list[Atoms]:
    """2, 3 and 8 atoms; the first two cells are not orthogonal; all rattled."""
    silicon = bulk("Si", "diamond", a=5.43)  # fcc primitive cell
    titania = Atoms(
        "TiO2",
        scaled_positions=[[0.0, 0.0, 0.0], [0.3, 0.3, 0.1], [0.7, 0.6, 0.55]],
        cell=[[4.2, 0.1, 0.0], [1.3, 3.9, 0.2], [0.4, 0.8, 4.4]],
        pbc=True,
    )
    salt = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    for seed, atoms in enumerate([silicon, titania, salt]):
        atoms.rattle(0.05, seed=seed)
    return [silicon, titania, salt]


def test_model_passes_torchsims_interface_checks(ts_model):
    validate_model_outputs(ts_model, torch.device("cpu"), F64)
    assert ts_model.device == torch.device("cpu")
    assert ts_model.dtype == F64


def test_batched_state_matches_the_ase_calculator(ts_model):
    structures = three_structures()
    state = ts.io.atoms_to_state(structures, torch.device("cpu"), F64)
    # TorchSim stores lattice vectors as columns
    assert torch.equal(state.cell[1].T, torch.tensor(structures[1].cell.array))
    output = ts_model(state)
    assert output["energy"].shape == (3,)
    assert output["forces"].shape == (state.n_atoms, 3)
    assert output["stress"].shape == (3, 3, 3)

    calculator = GPTFFCalculator(ts_model.model, dtype="float64")
    start = 0
    for index, atoms in enumerate(structures):
        atoms.calc = calculator
        end = start + len(atoms)
        # both use ASE's stress sign (positive = tensile): no conversion
        stress = atoms.get_stress(voigt=False)
        assert np.abs(stress).max() > 1e-3  # rattled, off equilibrium: not trivially 0 == 0
        energy = atoms.get_potential_energy()
        np.testing.assert_allclose(output["energy"][index], energy, atol=EXACT)
        np.testing.assert_allclose(output["forces"][start:end], atoms.get_forces(), atol=EXACT)
        np.testing.assert_allclose(output["stress"][index], stress, atol=EXACT)
        start = end


def test_batched_fire_with_cell_filter_relaxes_strained_cells(ts_model):
    stretched = bulk("Si", "diamond", a=5.43 * 1.03, cubic=True)  # 8 atoms
    squeezed = bulk("Cu", "fcc", a=3.63 * 0.97)  # 1 atom
    squeezed.set_cell(squeezed.cell.array @ np.diag([1.0, 1.02, 0.99]), scale_atoms=True)
    stretched.rattle(0.03, seed=4)
    state = ts.io.atoms_to_state([stretched, squeezed], torch.device("cpu"), F64)
    start = ts_model(state)
    pressure = -start["stress"].diagonal(dim1=1, dim2=2).mean(dim=1)  # eV/Å³, ASE sign
    start_stress = start["stress"].abs().amax(dim=(1, 2))

    relaxed = ts.optimize(
        state,
        ts_model,
        optimizer=ts.frechet_cell_fire,
        convergence_fn=ts.generate_force_convergence_fn(force_tol=0.02),
        max_steps=200,
    )
    end = ts_model(relaxed)
    assert (end["energy"] < start["energy"] - 1e-3).all()
    assert end["forces"].abs().max() < 0.02
    # the cell moved the way its stress pushed it: stretched (P < 0) shrinks, squeezed grows
    assert pressure[0] < 0 < pressure[1]
    volume_change = relaxed.volume.abs() - state.volume.abs()
    assert volume_change[0] < 0 < volume_change[1]
    assert (end["stress"].abs().amax(dim=(1, 2)) < 0.1 * start_stress).all()


def test_batched_nve_conserves_energy(models):
    """10 velocity-Verlet steps of 1 fs from 300 K; smooth envelopes, so no bond's energy jumps
    at a cutoff. The total energy per atom stays within ``drift_bound`` of its start (measured:
    2e-6 eV for Si, 6e-7 eV for Cu; the kinetic energy per atom starts at ~0.04 eV)."""
    drift_bound = 2e-5  # eV/atom
    model = GPTFFTorchSimModel(models("gptff-v2", "float64"), dtype="float64", smooth=True)
    silicon = bulk("Si", "diamond", a=5.43, cubic=True)
    copper = bulk("Cu", "fcc", a=3.63, cubic=True).repeat((2, 1, 1))
    state = ts.io.atoms_to_state([silicon, copper], torch.device("cpu"), F64)
    kT = torch.tensor(300.0 * MetalUnits.temperature, dtype=F64)
    dt = torch.tensor(0.001 * MetalUnits.time, dtype=F64)  # 1 fs
    init, step = ts.nve(model=model, dt=dt, kT=kT, seed=7)

    def total_energy(md_state) -> torch.Tensor:
        kinetic = ts.calc_kinetic_energy(
            masses=md_state.masses, momenta=md_state.momenta, system_idx=md_state.system_idx
        )
        return md_state.energy + kinetic

    md_state = init(state)
    start_positions = md_state.positions.clone()
    energies = [total_energy(md_state)]
    for _ in range(10):
        md_state = step(md_state)
        energies.append(total_energy(md_state))
    assert (md_state.positions - start_positions).abs().max() > 1e-3  # the atoms moved
    per_atom = torch.stack(energies) / md_state.n_atoms_per_system
    assert (per_atom - per_atom[0]).abs().max() < drift_bound


@pytest.mark.parametrize("relax_cell", [True, False], ids=["cell", "positions"])
def test_relax_batch_follows_ase_fire_structure_by_structure(models, ts_model, relax_cell):
    """Batched FIRE (TorchSim's ASE flavour) takes the same steps as ASE's FIRE on each structure
    alone (with the cell, through FrechetCellFilter), though the structures leave the batch at
    different steps."""
    from gptff_core.relax import relax
    from gptff_core.torchsim import relax_batch

    structures = [bulk("NaCl", "rocksalt", a=5.9, cubic=True), bulk("Cu", "fcc", a=3.7, cubic=True),
                  bulk("Si", "diamond", a=5.5)]  # fmt: skip
    for seed, atoms in enumerate(structures):
        atoms.rattle(0.05, seed=seed)
    calculator = GPTFFCalculator(models("gptff-v2", "float64"), dtype="float64")
    batched = relax_batch(structures, ts_model, fmax=0.02, steps=200, relax_cell=relax_cell)
    for atoms, got in zip(structures, batched, strict=True):
        want = relax(atoms, calculator, fmax=0.02, steps=200, relax_cell=relax_cell)
        assert got.converged and want.converged
        assert got.n_steps == want.n_steps
        assert got.energy == pytest.approx(want.energy, abs=1e-5)  # summation order in FIRE
        # the two FIRE implementations round differently: ~1e-5 Å apart after ~25 steps
        np.testing.assert_allclose(got.atoms.cell.array, want.atoms.cell.array, atol=1e-3)
        np.testing.assert_allclose(got.atoms.positions, want.atoms.positions, atol=1e-3)
        assert got.max_force < 0.02
        np.testing.assert_allclose(got.stress, want.stress, atol=1e-5)
    assert len({r.n_steps for r in batched}) > 1  # the structures did leave at different steps


def test_relax_batch_takes_a_model_name_like_every_other_api(models):
    """``relax_batch(structures, "gptff-v2")`` raised AttributeError inside torch_sim."""
    from gptff_core.torchsim import relax_batch

    salt = bulk("NaCl", "rocksalt", a=5.9, cubic=True)
    salt.rattle(0.05, seed=3)
    by_name = relax_batch([salt], "gptff-v2", fmax=0.05, steps=30)
    by_model = relax_batch([salt], GPTFFTorchSimModel(models("gptff-v2", "float32")), fmax=0.05,
                           steps=30)  # fmt: skip
    assert by_name[0].n_steps == by_model[0].n_steps
    assert by_name[0].energy == pytest.approx(by_model[0].energy, abs=1e-5)
