"""D3(BJ) dispersion (the optional ``d3`` extra, torch-dftd), in float64: our batched evaluation
equals torch-dftd's own ASE calculator called directly, GPTFF + D3 is the sum of the two,
forces and stress of the combined calculator are finite-difference derivatives of its energy,
and a batch gives what its members give one by one (also through ``predict`` and TorchSim)."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from ase.stress import full_3x3_to_voigt_6_stress, voigt_6_to_full_3x3_stress

pytest.importorskip("torch_dftd")
from finite_differences import numeric_forces, numeric_virial, sheared_tio2
from torch_dftd.torch_dftd3_calculator import TorchDFTD3Calculator

from gptff_core import GPTFFCalculator, GPTFFInputError, predict
from gptff_core.dispersion import (
    D3_CN_CUTOFF,
    D3_CUTOFF,
    D3Calculator,
    D3Dispersion,
    find_pairs,
)

EXACT = 1e-10  # eV, eV/Å, eV/Å³: the same D3 terms in float64, summed in another order
FD_STEP = 1e-5  # Å: moves a pair length by ≤ 2e-5 Å
STRAIN_STEP = 1e-6  # moves a pair at the 21.2 Å D3 cutoff by 2e-5 Å
FD_TOL = 1e-6  # eV/Å for forces, eV for stress × volume
D3_CLEARANCE = 1e-4  # Å; no pair this close to the (sharp) D3 cutoff, so no FD step crosses it


def triclinic() -> Atoms:
    """Three atoms in a sheared periodic cell, rattled (as in test_physics)."""
    return sheared_tio2()


def salt() -> Atoms:
    atoms = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    atoms.rattle(0.05, seed=3)
    return atoms


def molecule_in_box(pbc: bool) -> Atoms:
    """Dimethyl ether in a 12 Å box: isolated (pbc False) or with its periodic images."""
    atoms = molecule("CH3OCH3")
    atoms.rattle(0.02, seed=4)
    atoms.cell = [12.0, 12.5, 13.0]
    atoms.center()
    atoms.pbc = pbc
    return atoms


def reference_calculator() -> TorchDFTD3Calculator:
    return TorchDFTD3Calculator(
        damping="bj", xc="pbe", dtype=torch.float64, cutoff=D3_CUTOFF, cnthr=D3_CN_CUTOFF
    )


def results(atoms: Atoms, calculator) -> tuple:
    atoms = atoms.copy()
    atoms.calc = calculator
    stress = atoms.get_stress() if atoms.pbc.any() else None
    return atoms.get_potential_energy(), atoms.get_forces(), stress


def assert_clear_of_d3_cutoff(atoms: Atoms) -> None:
    edges, shifts = find_pairs(atoms.positions, atoms.cell.array, atoms.pbc, D3_CUTOFF + 0.01)
    vectors = atoms.positions[edges[1]] + shifts @ atoms.cell.array - atoms.positions[edges[0]]
    assert np.abs(np.linalg.norm(vectors, axis=1) - D3_CUTOFF).min() > D3_CLEARANCE


@pytest.fixture(scope="module")
def d3() -> D3Dispersion:
    return D3Dispersion("pbe")


@pytest.mark.parametrize(
    "make",
    [triclinic, salt, lambda: molecule_in_box(False), lambda: molecule_in_box(True)],
    ids=["triclinic", "salt", "molecule", "molecule-in-periodic-box"],
)
def test_values_equal_torch_dftds_own_calculator(make):
    atoms = make()
    want_energy, want_forces, want_stress = results(atoms, reference_calculator())
    energy, forces, stress = results(atoms, D3Calculator("pbe"))
    assert want_energy < -0.05  # dispersion binds: not a trivial 0 == 0
    assert abs(energy - want_energy) < EXACT
    np.testing.assert_allclose(forces, want_forces, rtol=0, atol=EXACT)
    if want_stress is not None:
        assert np.abs(want_stress).max() > 1e-5  # eV/Å³ (the molecule's box: ≈3e-5)
        np.testing.assert_allclose(stress, want_stress, rtol=0, atol=EXACT)


def test_zero_damping_equals_torch_dftds_own_calculator():
    """Other dampings go through torch-dftd's own energy function."""
    reference = TorchDFTD3Calculator(
        damping="zero", xc="pbe", dtype=torch.float64, cutoff=D3_CUTOFF, cnthr=D3_CN_CUTOFF
    )
    want_energy, want_forces, want_stress = results(triclinic(), reference)
    energy, forces, stress = results(triclinic(), D3Calculator(d3_kwargs={"damping": "zero"}))
    assert abs(energy - want_energy) < EXACT
    np.testing.assert_allclose(forces, want_forces, rtol=0, atol=EXACT)
    np.testing.assert_allclose(stress, want_stress, rtol=0, atol=EXACT)


def test_isolated_molecule_has_no_images(d3):
    """The same molecule with and without periodic images differs (12 Å ≪ the 21 Å cutoff)."""
    isolated = d3(molecule_in_box(False)).energy.item()
    periodic = d3(molecule_in_box(True)).energy.item()
    assert periodic < isolated < 0


@pytest.fixture(scope="module")
def combined(models) -> GPTFFCalculator:
    return GPTFFCalculator(models("gptff-v2", "float64"), dispersion=True)


def test_gptff_plus_d3_is_the_sum_of_both(models, combined):
    plain = GPTFFCalculator(models("gptff-v2", "float64"))
    assert combined.parameters["dispersion"] is True
    assert plain.parameters["dispersion"] is False
    for atoms in (triclinic(), molecule_in_box(False)):
        total = results(atoms, combined)
        parts = [results(atoms, plain), results(atoms, D3Calculator("pbe"))]
        assert abs(total[0] - parts[0][0] - parts[1][0]) < EXACT
        np.testing.assert_allclose(total[1], parts[0][1] + parts[1][1], rtol=0, atol=EXACT)
        if atoms.pbc.any():
            np.testing.assert_allclose(total[2], parts[0][2] + parts[1][2], rtol=0, atol=EXACT)


def energy_of(calculator, atoms: Atoms) -> float:
    atoms = atoms.copy()
    atoms.calc = calculator
    return atoms.get_potential_energy()


def test_combined_forces_are_minus_the_energy_gradient(combined):
    atoms = triclinic()
    assert_clear_of_d3_cutoff(atoms)
    forces = results(atoms, combined)[1]
    numeric = numeric_forces(lambda moved: energy_of(combined, moved), atoms, FD_STEP)
    assert np.abs(forces).max() > 0.05
    np.testing.assert_allclose(forces, numeric, rtol=0, atol=FD_TOL)


def test_combined_stress_is_the_strain_derivative_over_volume(combined):
    atoms = triclinic()
    assert_clear_of_d3_cutoff(atoms)
    virial = voigt_6_to_full_3x3_stress(results(atoms, combined)[2]) * atoms.get_volume()
    numeric = numeric_virial(lambda strained: energy_of(combined, strained), atoms, STRAIN_STEP)
    np.testing.assert_allclose(virial, numeric, rtol=0, atol=FD_TOL)
    assert np.abs(virial).max() > 0.05


def test_batch_equals_one_by_one(d3):
    members = [triclinic(), salt(), molecule_in_box(False), molecule_in_box(True)]
    batch = d3(members)
    forces = torch.split(batch.forces, batch.n_atoms)
    for index, atoms in enumerate(members):
        alone = d3(atoms)
        assert abs(batch.energy[index] - alone.energy[0]) < EXACT
        torch.testing.assert_close(forces[index], alone.forces, rtol=0, atol=EXACT)
        torch.testing.assert_close(batch.stress[index], alone.stress[0], rtol=0, atol=EXACT)


def test_predict_with_dispersion_equals_the_combined_calculator(models, combined):
    members = [triclinic(), salt(), molecule_in_box(False)]
    got = predict(members, models("gptff-v2", "float64"), dispersion=True)
    for index, atoms in enumerate(members):
        energy, forces, stress = results(atoms, combined)
        assert abs(got.energies[index] - energy) < EXACT
        np.testing.assert_allclose(got.forces[index], forces, rtol=0, atol=EXACT)
        if stress is not None:
            want = full_3x3_to_voigt_6_stress(got.stresses[index])
            np.testing.assert_allclose(want, stress, rtol=0, atol=EXACT)


def test_unknown_functional_and_bad_cutoffs_are_refused():
    with pytest.raises(GPTFFInputError, match="no-such-functional"):
        D3Dispersion("no-such-functional")
    with pytest.raises(GPTFFInputError, match="cn_cutoff"):
        D3Dispersion(cutoff=10.0, cn_cutoff=20.0)


def test_torchsim_sum_model_equals_the_combined_calculator(models, combined):
    ts = pytest.importorskip("torch_sim")
    from torch_sim.models.interface import validate_model_outputs

    from gptff_core.torchsim import GPTFFTorchSimModel
    from gptff_core.torchsim_d3 import D3TorchSimModel, SumTorchSimModel

    d3_model = D3TorchSimModel(dtype="float64")
    validate_model_outputs(d3_model, torch.device("cpu"), torch.float64)
    model = SumTorchSimModel(
        GPTFFTorchSimModel(models("gptff-v2", "float64"), dtype="float64"), d3_model
    )
    members = [triclinic(), salt()]
    output = model(ts.io.atoms_to_state(members, torch.device("cpu"), torch.float64))
    forces = torch.split(output["forces"], [len(a) for a in members])
    for index, atoms in enumerate(members):
        energy, want_forces, want_stress = results(atoms, combined)
        assert abs(output["energy"][index].item() - energy) < EXACT
        np.testing.assert_allclose(forces[index].numpy(), want_forces, rtol=0, atol=EXACT)
        stress = voigt_6_to_full_3x3_stress(want_stress)
        np.testing.assert_allclose(output["stress"][index].numpy(), stress, rtol=0, atol=EXACT)


def test_cli_predict_and_relax_with_d3(tmp_path, capsys, combined):
    import json

    import ase.io
    from ase import units

    from gptff_core.cli import main

    path = tmp_path / "salt.extxyz"
    ase.io.write(path, salt())
    assert main(["predict", str(path), "--dtype", "float64", "--d3", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    energy, forces, stress = results(salt(), combined)
    assert abs(row["energy_eV"] - energy) < 1e-8
    np.testing.assert_allclose(row["forces_eV_per_A"], forces, rtol=0, atol=1e-8)
    np.testing.assert_allclose(
        row["stress_GPa"], voigt_6_to_full_3x3_stress(stress) / units.GPa, rtol=0, atol=1e-6
    )
    output = tmp_path / "relaxed.extxyz"
    argv = ["relax", str(path), "--d3", "--steps", "0", "--output", str(output), "--json"]
    main(argv)  # 0 steps: not converged (exit 3); the summary still reports the energy
    summary = json.loads(capsys.readouterr().out)
    assert summary["dispersion"] is True
    want = results(salt(), GPTFFCalculator(dispersion=True))[0]  # float32 network
    assert summary["initial_energy_eV"] == pytest.approx(want, abs=1e-6)
    assert abs(want - results(salt(), GPTFFCalculator())[0]) > 0.05  # D3 is in it


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_equals_cpu(d3):
    members = [triclinic(), salt(), molecule_in_box(False)]
    want, got = d3(members), D3Dispersion("pbe", device="cuda")(members)
    torch.testing.assert_close(got.energy.cpu(), want.energy, rtol=0, atol=1e-9)
    torch.testing.assert_close(got.forces.cpu(), want.forces, rtol=0, atol=1e-9)
    torch.testing.assert_close(got.stress.cpu(), want.stress, rtol=0, atol=1e-9)


def test_results_for_a_graph_include_d3(combined):
    """The graph route (``graph_of`` + ``results_for``, as the committee uses it) gives what
    ``calculate`` gives, D3 included."""
    atoms = salt()
    expected = results(atoms, combined)
    got = combined.results_for(combined.graph_of(atoms), atoms)
    assert got["energy"] == pytest.approx(expected[0], abs=EXACT)
    np.testing.assert_allclose(got["forces"], expected[1], rtol=0, atol=EXACT)
    np.testing.assert_allclose(got["stress"], expected[2], rtol=0, atol=EXACT)
