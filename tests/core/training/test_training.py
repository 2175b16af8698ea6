"""The trainer: loss masking, exact resume, checkpoints that load in the calculator and predict
what the trainer validated, NaN batches skipped, freezing, provenance, metrics files and the
``gptff finetune`` command. Small networks and EMT data keep each test to seconds."""

import dataclasses
import json
import logging

import numpy as np
import pytest
import torch
from ase import units
from training_fixtures import TINY, emt_configurations, fit_tiny

from gptff_core import GPTFFCalculator, load_model
from gptff_core.cli import main
from gptff_core.errors import ComputationError, GPTFFInputError
from gptff_core.evaluate import evaluate
from gptff_core.training import Recipe, Trainer, frames_from_structures, new_network
from gptff_core.training.loss import LossWeights, loss_terms, make_batch
from gptff_core.training.metrics import FramePredictions, error_metrics
from gptff_core.training.schedule import epoch_order


def test_missing_labels_are_masked_out_of_the_loss(emt_frames):
    """A batch where one frame lacks stress and forces has the loss of the labelled frames."""
    model = new_network(TINY).double().eval()  # no dropout
    full = list(emt_frames[0][:2])
    partial = frames_from_structures([full[1].atoms], energies=[full[1].energy])
    weights = LossWeights(energy=1.0, forces=1.0, stress=1.0)
    from gptff_core.graph import structure_graph

    def loss_of(frames):
        parts = [structure_graph(f.atoms, 5.0, 3.5, "x") for f in frames]
        batch = make_batch(frames, parts, list(range(len(frames))), torch.float64, "cpu")
        return loss_terms(evaluate(model, batch.graph, keep_graph=True), batch, weights)[1]

    mixed = loss_of([full[0], *partial])
    alone = loss_of([full[0]])
    assert mixed["forces"] == pytest.approx(alone["forces"], rel=1e-10)
    assert mixed["stress"] == pytest.approx(alone["stress"], rel=1e-10)
    assert mixed["energy"] != pytest.approx(alone["energy"])  # both energies count


def test_resume_equals_uninterrupted_training(tmp_path, emt_frames):
    recipe = Recipe(
        epochs=3, learning_rate=1e-3, max_structures_per_batch=3, ema_decay=0.9, warmup_steps=2
    )
    _, straight = fit_tiny(tmp_path / "straight", emt_frames, recipe)

    class Crash(Exception):
        pass

    def crash_after_first(record):
        if record.epoch == 1:
            raise Crash

    with pytest.raises(Crash):
        fit_tiny(tmp_path / "resumed", emt_frames, recipe, on_epoch_end=crash_after_first)
    _, resumed = fit_tiny(tmp_path / "resumed", emt_frames, recipe, resume=True)
    assert [r.epoch for r in resumed.history] == [0, 1, 2, 3]
    for a, b in zip(straight.history, resumed.history, strict=True):
        assert b.train_loss == (None if a.train_loss is None else pytest.approx(a.train_loss))
        for key, value in a.metrics.items():
            assert b.metrics[key] == pytest.approx(value, rel=1e-6)
    np.testing.assert_allclose(
        resumed.last_predictions.energies, straight.last_predictions.energies, rtol=1e-6
    )
    with pytest.raises(GPTFFInputError, match="recipe"):
        fit_tiny(tmp_path / "resumed", emt_frames, Recipe(epochs=4), resume=True)


def test_checkpoint_loads_in_calculator_and_predicts_the_last_validation(tmp_path, emt_frames):
    recipe = Recipe(epochs=2, learning_rate=1e-3, max_structures_per_batch=4)
    _, result = fit_tiny(tmp_path, emt_frames, recipe)
    calculator = GPTFFCalculator(model=result.last_checkpoint)
    for k, frame in enumerate(emt_frames[1]):
        atoms = frame.atoms.copy()
        atoms.calc = calculator
        assert atoms.get_potential_energy() == pytest.approx(
            result.last_predictions.energies[k], abs=1e-4
        )
        np.testing.assert_allclose(atoms.get_forces(), result.last_predictions.forces[k], atol=1e-5)
        np.testing.assert_allclose(
            atoms.get_stress(voigt=False), result.last_predictions.stresses[k], atol=1e-6
        )
    source = load_model(result.best_checkpoint).source
    metadata = source.metadata
    assert metadata["kind"] == "best" and metadata["recipe"]["epochs"] == 2
    assert metadata["data"]["n_train"] == 8 and len(metadata["data"]["train_fingerprint"]) == 64
    assert metadata["reference_refit"]["mode"] == "residual"
    assert metadata["metrics"]["valid"] == result.history[result.best_epoch].metrics
    # the refitted references travel with the checkpoint
    refitted = metadata["reference_refit"]["elements"]
    network = load_model(result.best_checkpoint, dtype="float64")
    assert float(network.reference_energies[29]) == pytest.approx(refitted["Cu"])
    files = {p.name for p in result.files}
    assert {"best.pt", "last.pt", "training_state.pt", "metrics.csv", "metrics.json"} <= files
    assert {"parity_energy.png", "parity_forces.png", "parity_stress.png"} <= files
    summary = json.loads((tmp_path / "metrics.json").read_text())
    assert summary["before"] == pytest.approx(result.before)
    assert len((tmp_path / "metrics.csv").read_text().splitlines()) == 1 + 3  # header, epochs 0-2


def test_base_model_provenance(tmp_path, emt_frames):
    recipe = Recipe(epochs=1, max_structures_per_batch=8)
    trainer = Trainer("gptff-v2", recipe, progress=False)
    result = trainer.fit(emt_frames[0][:2], emt_frames[1][:1], tmp_path)
    base = load_model(result.best_checkpoint).source.metadata["base_model"]
    assert base["name"] == "gptff-v2"
    assert base["sha256"] == "549e862d93b8fbc0ad052162bad90492040c68c196480427ae8266209a077900"


def test_nan_batch_is_skipped_and_logged(tmp_path, emt_frames, caplog):
    """An energy finite in float64 but infinite in float32 makes the loss infinite: the batch
    is skipped, logged and counted, and the run goes on with the other batches. When every batch
    of an epoch is skipped the run has diverged: it stops with a ComputationError, the weights
    stay as they were and only epoch 0's best.pt exists. (The energy screening, which would
    refuse the frame, is off to reach the trainer's own guard.)"""
    bad = dataclasses.replace(emt_frames[0][1], energy=1e39)
    recipe = Recipe(
        epochs=1, max_structures_per_batch=1, reference_refit="none", outlier_energy_per_atom=None
    )
    trainer = Trainer(new_network(TINY, seed=1), recipe, progress=False)
    with caplog.at_level(logging.WARNING, logger="gptff_core.training.trainer"):
        result = trainer.fit([*emt_frames[0][2:4], bad], emt_frames[1][:1], tmp_path / "some")
    assert result.history[-1].skipped_batches == 1
    assert "skipped a batch" in caplog.text

    trainer = Trainer(
        new_network(TINY, seed=1),
        dataclasses.replace(recipe, max_structures_per_batch=2),
        progress=False,
    )
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    with pytest.raises(ComputationError, match="diverged in epoch 1: every batch"):
        trainer.fit([emt_frames[0][0], bad], emt_frames[1][:1], tmp_path / "all")
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert sorted(p.name for p in (tmp_path / "all").iterdir()) == ["best.pt"]
    load_model(tmp_path / "all" / "best.pt")  # finite, digest verified


def test_freeze_keeps_parameters_fixed(tmp_path, emt_frames):
    recipe = Recipe(epochs=1, learning_rate=1e-3, freeze=("embedding", "layers.0"))
    trainer = Trainer(new_network(TINY, seed=1), recipe, progress=False)
    before = {k: v.clone() for k, v in trainer.model.named_parameters()}
    trainer.fit(*emt_frames, tmp_path)
    for name, value in trainer.model.named_parameters():
        frozen = name == "embedding" or name.startswith("layers.0.")
        assert torch.equal(value, before[name]) == frozen, name
    with pytest.raises(GPTFFInputError, match="matches no parameter"):
        Trainer(new_network(TINY), Recipe(freeze=("nothing",)), progress=False).fit(
            *emt_frames, tmp_path / "x"
        )


def test_early_stopping_without_improvement_keeps_the_refit(tmp_path, emt_frames):
    """With a learning rate too small to change float32 weights, no epoch improves on the
    reference refit (epoch 0): the run stops after ``patience`` epochs and best.pt is the refit,
    so training can never hand back a model worse than the refit alone."""
    recipe = Recipe(epochs=6, learning_rate=1e-30, final_learning_rate=0.0, patience=2)
    _, result = fit_tiny(tmp_path, emt_frames, recipe)
    assert result.stopped_early
    assert [r.epoch for r in result.history] == [0, 1, 2]
    assert result.best_epoch == 0
    assert result.after == result.history[0].metrics


def test_structures_per_epoch_samples_every_structure_evenly():
    trainer = Trainer(new_network(TINY), Recipe(structures_per_epoch=12), progress=False)
    order = epoch_order(trainer.recipe, 5, torch.Generator().manual_seed(0))
    assert len(order) == 12
    assert sorted(np.bincount(order, minlength=5)) == [2, 2, 2, 3, 3]


def test_recipe_refuses_bad_options():
    with pytest.raises(GPTFFInputError, match="learning_rate"):
        Recipe(learning_rate=0.0)
    with pytest.raises(GPTFFInputError, match="reference_refit"):
        Recipe(reference_refit="mean")
    with pytest.raises(GPTFFInputError, match="learning_rate must be finite"):
        Recipe(learning_rate=float("inf"))
    with pytest.raises(GPTFFInputError, match="outlier_force must be positive"):
        Recipe(outlier_force=0.0)


def test_error_metrics_by_hand(emt_frames):
    frames = emt_frames[1][:2]
    predictions = FramePredictions(
        energies=np.array([f.energy + 0.01 * f.n_atoms for f in frames]),  # +10 meV/atom
        forces=[f.forces + 0.002 for f in frames],  # +2 meV/Å on every component
        stresses=[f.stress + np.eye(3) * units.GPa for f in frames],  # +1 GPa on xx yy zz
    )
    metrics = error_metrics(frames, predictions)
    assert metrics["energy_mae_meV_per_atom"] == pytest.approx(10.0)
    assert metrics["forces_rmse_meV_per_A"] == pytest.approx(2.0)
    assert metrics["stress_mae_GPa"] == pytest.approx(0.5)  # 3 of the 6 Voigt components


def test_cli_finetune_json_and_bad_input(tmp_path, capsys):
    import ase.io

    train = tmp_path / "train.extxyz"
    for k, atoms in enumerate(emt_configurations(10, seed=7)):
        atoms.info["group"] = k
        ase.io.write(train, atoms, append=True)
    out = tmp_path / "run"
    config = [
        "--config",
        "atom_feature_len=8",
        "--config",
        "bond_feature_len=8",
        "--config",
        "n_layers=1",
        "--config",
        "transformer=false",
    ]
    code = main(
        [
            "finetune",
            str(train),
            "--from-scratch",
            *config,
            "--epochs",
            "1",
            "--valid-fraction",
            "0.2",
            "--out",
            str(out),
            "--json",
        ]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert {"before", "after", "checkpoint"} <= set(summary)
    assert summary["n_train"] == 8 and summary["n_valid"] == 2
    assert load_model(summary["checkpoint"]).config.n_layers == 1
    resume = [
        "finetune",
        str(train),
        "--from-scratch",
        *config,
        "--epochs",
        "1",
        "--out",
        str(out),
        "--resume",
    ]
    assert main(resume) == 1  # another split (default --valid-fraction): refused
    assert "training/validation data differ" in capsys.readouterr().err
    assert main([*resume, "--valid-fraction", "0.2"]) == 0  # a finished run resumes to its end
    assert "checkpoint" in capsys.readouterr().out
    empty = tmp_path / "empty.extxyz"
    empty.write_text("")
    assert main(["finetune", str(empty), "--out", str(tmp_path / "x")]) == 1
    assert f"{empty}: the file is empty" in capsys.readouterr().err
