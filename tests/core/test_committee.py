"""Committee uncertainty: the mean and spread of several networks, checked against the members'
own GPTFFCalculator results and a by-hand disagreement; batched == one by one; training a
committee (seeds, directories, resume, refusal of a recipe that cannot make members differ); and
disagreement that grows away from the training data."""

import dataclasses

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.calculator import PropertyNotImplementedError
from training_fixtures import TINY, emt_configurations

from gptff_core import GPTFFCalculator, load_model, save_checkpoint
from gptff_core.committee import (
    CommitteeCalculator,
    committee_predict,
    force_disagreement,
)
from gptff_core.errors import GPTFFInputError
from gptff_core.training import Recipe, new_network
from gptff_core.training.committee import (
    _refuse_identical_members,
    member_directory,
    train_committee,
)


def disagreement_by_hand(member_forces):
    """sqrt(mean over members of |F_m,i − mean F_i|²) per atom, with explicit loops."""
    n_members, n_atoms = len(member_forces), len(member_forces[0])
    spread = []
    for i in range(n_atoms):
        mean = sum(np.asarray(f[i]) for f in member_forces) / n_members
        squares = [float(np.sum((np.asarray(f[i]) - mean) ** 2)) for f in member_forces]
        spread.append(np.sqrt(sum(squares) / n_members))
    return np.array(spread)


@pytest.fixture(scope="module")
def tiny_members(tmp_path_factory):
    """Checkpoints of three tiny networks with different random weights."""
    directory = tmp_path_factory.mktemp("members")
    paths = []
    for seed in (1, 2, 3):
        network = new_network(TINY, seed=seed)
        network.reference_energies[:] = 0.1 * seed  # eV, so the energies differ too
        paths.append(save_checkpoint(network, directory / f"m{seed}.pt"))
    return paths


def structures():
    """Two Cu–Au cells (4 and 8 atoms) and a Cu–Au molecule without a cell."""
    cells = [a.copy() for a in emt_configurations(2, seed=3)]
    molecule = Atoms("CuAuCu", positions=[[0, 0, 0], [2.4, 0.2, 0], [1.1, 2.1, 0.3]])
    return [*cells, molecule]


def test_force_disagreement_matches_the_definition():
    rng = np.random.default_rng(0)
    forces = rng.normal(size=(3, 5, 3))
    np.testing.assert_allclose(force_disagreement(forces), disagreement_by_hand(forces))
    np.testing.assert_array_equal(force_disagreement(np.stack([forces[0]] * 4)), np.zeros(5))
    for bad in (forces[:1], forces[..., :2], forces[0]):
        with pytest.raises(GPTFFInputError, match="shape"):
            force_disagreement(bad)
    forces[1, 2, 0] = np.nan
    with pytest.raises(GPTFFInputError, match="NaN"):
        force_disagreement(forces)


def test_identical_members_agree_and_equal_one_member(tiny_members):
    atoms = structures()[1]
    committee = CommitteeCalculator([tiny_members[0]] * 3, dtype="float64")
    atoms.calc = committee
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    single = atoms.copy()
    single.calc = GPTFFCalculator(tiny_members[0], dtype="float64")
    assert energy == pytest.approx(single.get_potential_energy(), abs=1e-12)
    np.testing.assert_allclose(forces, single.get_forces(), atol=1e-12)
    # zero up to the rounding of a mean of equal numbers (forces ~0.1–1 eV/Å, energies ~1 eV)
    np.testing.assert_allclose(committee.results["forces_std"], np.zeros(len(atoms)), atol=1e-14)
    assert committee.results["energy_std"] == pytest.approx(0.0, abs=1e-13)
    assert committee.results["uncertainty"] == pytest.approx(0.0, abs=1e-14)


def test_committee_is_the_mean_of_its_members(tiny_members):
    members = [GPTFFCalculator(path, dtype="float64") for path in tiny_members]
    committee = CommitteeCalculator(tiny_members, dtype="float64")
    for atoms in structures():
        results = []
        for member in members:
            copy = atoms.copy()
            copy.calc = member
            stress = copy.get_stress() if atoms.cell.rank == 3 else None
            results.append((copy.get_potential_energy(), copy.get_forces(), stress))
        atoms.calc = committee
        energies = [r[0] for r in results]
        assert atoms.get_potential_energy() == pytest.approx(np.mean(energies), abs=1e-12)
        np.testing.assert_allclose(atoms.get_forces(), sum(r[1] for r in results) / 3, atol=1e-12)
        spread = disagreement_by_hand([r[1] for r in results])
        assert spread.max() > 1e-3  # different networks disagree
        np.testing.assert_allclose(committee.get_property("forces_std", atoms), spread, rtol=1e-10)
        assert committee.get_property("uncertainty", atoms) == pytest.approx(spread.max())
        energy_std = np.sqrt(np.mean((np.array(energies) - np.mean(energies)) ** 2))
        assert committee.get_property("energy_std", atoms) == pytest.approx(energy_std, rel=1e-10)
        if results[0][2] is None:
            with pytest.raises(PropertyNotImplementedError):
                atoms.get_stress()
        else:
            expected = sum(r[2] for r in results) / 3
            np.testing.assert_allclose(atoms.get_stress(), expected, atol=1e-12)


def test_batched_committee_equals_the_calculator(tiny_members):
    frames = structures()
    batched = committee_predict(frames, tiny_members, dtype="float64")
    committee = CommitteeCalculator(tiny_members, dtype="float64")
    for k, atoms in enumerate(frames):
        atoms.calc = committee
        assert batched.energies[k] == pytest.approx(atoms.get_potential_energy(), abs=1e-10)
        np.testing.assert_allclose(batched.forces[k], atoms.get_forces(), atol=1e-10)
        r = committee.results
        np.testing.assert_allclose(batched.forces_std[k], r["forces_std"], atol=1e-10)
        assert batched.energy_std[k] == pytest.approx(r["energy_std"], abs=1e-10)
        assert batched.uncertainty[k] == pytest.approx(r["uncertainty"], abs=1e-10)
        if "stress" in r:
            np.testing.assert_allclose(
                batched.stresses[k], atoms.get_stress(voigt=False), atol=1e-10
            )
        else:
            assert batched.stresses[k] is None
    one = committee_predict(frames[0], tiny_members, dtype="float64")
    assert one.energies[0] == pytest.approx(batched.energies[0], abs=1e-10)


def test_refuses_a_committee_of_one_and_passes_member_options(tiny_members):
    with pytest.raises(GPTFFInputError, match="at least 2"):
        CommitteeCalculator([tiny_members[0]])
    with pytest.raises(GPTFFInputError, match="at least 2"):
        committee_predict(structures(), tiny_members[0])
    committee = CommitteeCalculator(tiny_members, skin=1.0, label="c")
    assert all(m.graph_builder.skin == 1.0 for m in committee.members)
    assert committee.label == "c"


def test_refuses_dispersion_instead_of_keeping_it_as_an_unused_parameter(tiny_members):
    """ASE keeps unknown keywords as parameters: the committee recorded dispersion=True and
    added no D3."""
    with pytest.raises(GPTFFInputError, match="D3"):
        CommitteeCalculator(tiny_members, dtype="float64", dispersion=True)


def test_train_committee_seeds_directories_and_resume(tmp_path, emt_frames):
    base = new_network(TINY, seed=1)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    recipe = Recipe(epochs=1, learning_rate=1e-3, max_structures_per_batch=3, seed=42)
    calls = []
    results = train_committee(
        base,
        *emt_frames,
        recipe,
        size=2,
        directory=tmp_path,
        seed=7,
        on_epoch_end=lambda k, record: calls.append((k, record.epoch)),
    )
    assert calls == [(0, 1), (1, 1)]
    for k, result in enumerate(results):
        assert result.last_checkpoint == member_directory(tmp_path, k) / "last.pt"
        metadata = load_model(result.last_checkpoint).source.metadata
        assert metadata["recipe"]["seed"] == 7 + k
    for key, value in base.state_dict().items():  # the base network is untouched
        assert value.equal(before[key]), key
    weights = [load_model(r.last_checkpoint).state_dict() for r in results]
    assert any(not weights[0][key].equal(weights[1][key]) for key in weights[0])

    files = [r.last_checkpoint.read_bytes() for r in results]
    resumed = train_committee(base, *emt_frames, recipe, 2, directory=tmp_path, seed=7, resume=True)
    assert [r.last_checkpoint.read_bytes() for r in resumed] == files  # nothing trained again
    assert [r.best_epoch for r in resumed] == [r.best_epoch for r in results]


def test_train_committee_refuses_members_that_cannot_differ(tmp_path, emt_frames):
    train, valid = emt_frames
    no_dropout = new_network(dataclasses.replace(TINY, dropout=0.0), seed=1)
    one_batch = Recipe(epochs=1, max_structures_per_batch=len(train))
    with pytest.raises(GPTFFInputError, match="every member would train identically"):
        train_committee(no_dropout, train, valid, one_batch, 2, directory=tmp_path / "c")
    assert not (tmp_path / "c" / "member_0").exists()
    with pytest.raises(GPTFFInputError, match="size"):
        train_committee(no_dropout, train, valid, one_batch, 1, directory=tmp_path / "c")
    # any of: dropout, several batches, sampled epochs lets the seed change the members
    network = load_model(no_dropout)
    _refuse_identical_members(network, dataclasses.replace(one_batch, dropout=0.1), train)
    _refuse_identical_members(load_model(new_network(TINY)), one_batch, train)
    _refuse_identical_members(network, Recipe(max_structures_per_batch=3), train)
    sampled = dataclasses.replace(one_batch, structures_per_epoch=5)
    _refuse_identical_members(network, sampled, train)
    # without a transformer (v1) there is no dropout to set
    v1_like = load_model(new_network(dataclasses.replace(TINY, transformer=False)))
    with pytest.raises(GPTFFInputError, match="identically"):
        _refuse_identical_members(v1_like, dataclasses.replace(one_batch, dropout=0.1), train)


def test_disagreement_grows_away_from_the_training_data(tmp_path, emt_frames):
    """GPTFF v2 fine-tuned to EMT labels by a committee of three: the members disagree more on
    strongly rattled (σ 0.35 Å against 0.12) and compressed (lattice ×0.85) Cu–Au cells than on
    the frames they trained on."""
    train, valid = emt_frames
    recipe = Recipe(epochs=1, learning_rate=2e-4, max_structures_per_batch=4)
    results = train_committee("gptff-v2", train, valid, recipe, 3, directory=tmp_path)
    models = [r.best_checkpoint for r in results]
    rattled = emt_configurations(6, seed=11, rattle=0.35, strain=0.0)
    compressed = emt_configurations(6, seed=12, rattle=0.05, strain=0.0)
    for atoms in compressed:
        atoms.set_cell(atoms.cell * 0.85, scale_atoms=True)
    on_training = committee_predict([f.atoms for f in train], models).uncertainty.mean()
    assert on_training > 0
    for far in (rattled, compressed):
        assert committee_predict(far, models).uncertainty.mean() > 1.5 * on_training
