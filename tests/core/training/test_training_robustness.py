"""Training never hands back a wrong model with exit code 0: diverged runs stop (exit 4) and keep
the last good files, no checkpoint holds non-finite weights, outlier labels are refused (or
dropped and reported) before any step and cannot move the reference refit, mixed precision
trains, ``--resume`` extends a run, ``--out`` is checked first and ``--json`` is strict.
Tiny networks from scratch and EMT labels keep each test to seconds."""

from __future__ import annotations

import dataclasses
import json
import math

import ase.io
import numpy as np
import pytest
import torch
from ase.calculators.singlepoint import SinglePointCalculator
from training_fixtures import TINY, emt_configurations, fit_tiny

from gptff_core import load_model
from gptff_core.cli import main
from gptff_core.errors import ComputationError, GPTFFInputError
from gptff_core.evaluate import evaluate
from gptff_core.graph import build_graph
from gptff_core.pretrained import resolve_checkpoint
from gptff_core.training import Recipe, Trainer, frames_from_structures, new_network
from gptff_core.training.references import fit_reference_energies, reference_fit

SCRATCH = ["--from-scratch", "--config", "atom_feature_len=8", "--config", "bond_feature_len=8",
           "--config", "n_layers=1", "--config", "transformer=false"]  # fmt: skip


def _write_extxyz(path, count=10, seed=7, energies=None):
    """EMT-labelled frames, each its own trajectory; ``energies`` {frame: eV} replaces labels."""
    for k, atoms in enumerate(emt_configurations(count, seed=seed)):
        energy = (energies or {}).get(k, atoms.get_potential_energy())
        forces, stress = atoms.get_forces(), atoms.get_stress()
        atoms.calc = SinglePointCalculator(
            atoms, energy=energy, free_energy=energy, forces=forces, stress=stress
        )
        atoms.info["group"] = k
        ase.io.write(path, atoms, append=True)
    return path


# ---------------------------------------------------------------- divergence, non-finite weights


def test_divergence_stops_naming_the_epoch_and_keeps_the_last_good_files(tmp_path, emt_frames):
    """A NaN weight appearing after epoch 1 (as a blow-up would): epoch 2 stops the run with a
    ComputationError, and best.pt, last.pt, training_state.pt and metrics.csv stay those of
    epoch 1, finite and loadable."""
    recipe = Recipe(epochs=3, learning_rate=1e-3, max_structures_per_batch=4)
    trainer = Trainer(new_network(TINY, seed=1), recipe, progress=False)
    names = ("best.pt", "last.pt", "training_state.pt", "metrics.csv")
    kept = {}

    def poison_after_first_epoch(record):
        if record.epoch == 1:
            kept.update({name: (tmp_path / name).read_bytes() for name in names})
            with torch.no_grad():
                trainer.model.readout[4].weight[0, 0] = float("nan")

    with pytest.raises(ComputationError, match=r"diverged in epoch 2: the weights are not finite"):
        trainer.fit(*emt_frames, tmp_path, on_epoch_end=poison_after_first_epoch)
    for name in names:
        assert (tmp_path / name).read_bytes() == kept[name], name
    assert load_model(tmp_path / "last.pt").source.metadata["epoch"] == 1


def test_cli_diverging_run_exits_4_and_writes_no_checkpoint_of_it(tmp_path, capsys):
    train = _write_extxyz(tmp_path / "train.extxyz")
    out = tmp_path / "run"
    args = ["finetune", str(train), *SCRATCH, "--epochs", "2", "--lr", "1e10", "--out", str(out)]
    assert main([*args, "--valid-fraction", "0.2"]) == 4
    assert "training diverged in epoch 1" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["best.pt"]  # epoch 0, the refit
    network = load_model(out / "best.pt")
    assert network.source.metadata["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in network.state_dict().values())


def test_checkpoint_with_a_nan_weight_is_not_finetuned(tmp_path, capsys):
    payload = torch.load(resolve_checkpoint("gptff-v2"), map_location="cpu", weights_only=True)
    payload["state_dict"]["fc1.weight"][2, 5] = float("nan")
    torch.save(payload, tmp_path / "nan_v2.pth")
    train = _write_extxyz(tmp_path / "train.extxyz", count=6)
    out = tmp_path / "run"
    args = ["finetune", str(train), "--model", str(tmp_path / "nan_v2.pth"), "--epochs", "1"]
    assert main([*args, "--valid-fraction", "0.2", "--out", str(out)]) == 1
    assert "fc1.weight" in capsys.readouterr().err
    assert not (out / "best.pt").exists()
    network = new_network(TINY)
    with torch.no_grad():
        network.embedding[3, 0] = float("inf")
    with pytest.raises(GPTFFInputError, match=r"non-finite weights .* embedding"):
        Trainer(network, Recipe(epochs=1), progress=False)


# ---------------------------------------------------------------- outlier labels


def test_robust_refit_is_not_moved_by_one_wrong_frame():
    """With one frame at 1e6 eV the references are, to within a tenth of σ (the scatter of the
    correct energies around their fit, ~0.19 eV/atom), those fitted to the other frames alone;
    a least-squares fit moves them by thousands of eV."""
    frames = frames_from_structures(emt_configurations(40, seed=2))
    others = reference_fit(frames[:5] + frames[6:], None, np.zeros(95))
    damaged = list(frames)
    damaged[5] = dataclasses.replace(frames[5], energy=1e6)
    fitted = fit_reference_energies(damaged, None, np.zeros(95))
    for z in (29, 79):
        assert abs(fitted[z] - others.references[z]) < others.sigma / 10


def test_outlier_energy_is_refused_before_training_or_dropped_and_reported(tmp_path, capsys):
    train = _write_extxyz(tmp_path / "train.extxyz", energies={3: 1e6})
    out = tmp_path / "run"
    args = ["finetune", str(train), *SCRATCH, "--epochs", "1", "--valid-fraction", "0.2"]
    assert main([*args, "--out", str(out)]) == 1
    error = capsys.readouterr().err
    assert f"{train} frame 3: energy 1e+06 eV" in error and "--drop-outliers" in error
    assert not any(out.iterdir())  # refused before any training

    assert main([*args, "--out", str(out), "--drop-outliers", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    outliers = summary["outliers"]
    assert outliers["n_dropped"] == 1 and outliers["files"] == [str(train)]
    assert [(o["frame"], o["index"]) for o in outliers["dropped"]] == [(f"{train} frame 3", 3)]
    assert summary["n_train"] + summary["n_valid"] == 9
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"]["outliers"] == outliers
    assert load_model(out / "best.pt").source.metadata["data"]["outliers"] == outliers
    # the refit is the one of the nine good frames: EMT energies are within ~1 eV/atom of 0
    assert all(abs(value) < 5.0 for value in summary["reference_refit"]["elements"].values())


def test_force_outliers_and_non_finite_labels(tmp_path, emt_frames):
    train, valid = emt_frames
    strong = dataclasses.replace(train[2], forces=train[2].forces * 1e4)
    recipe = Recipe(epochs=1, max_structures_per_batch=4)
    with pytest.raises(GPTFFInputError, match=rf"{train[2].label}: a force of .* > 100 eV/Å"):
        fit_tiny(tmp_path / "a", ([*train[:2], strong, *train[3:]], valid), recipe)
    _, result = fit_tiny(
        tmp_path / "b",
        ([*train[:2], strong, *train[3:]], valid),
        dataclasses.replace(recipe, drop_outliers=True),
    )
    assert [o["position"] for o in result.outliers["dropped"]] == [2] and result.n_train == 7
    nan = dataclasses.replace(valid[1], energy=float("nan"))
    with pytest.raises(GPTFFInputError, match="energy label is not finite"):
        fit_tiny(
            tmp_path / "c",
            (train, [valid[0], nan]),
            dataclasses.replace(recipe, drop_outliers=True),
        )


# ---------------------------------------------------------------- mixed precision


def test_mixed_precision_evaluates_and_trains_on_cpu(tmp_path, emt_frames):
    """bfloat16 autocast gives v2's energies and forces to bfloat16 accuracy, and a training
    epoch under it has the loss of a float32 epoch to within 2 %."""
    model = load_model("gptff-v2")
    structures = [frame.atoms for frame in emt_frames[1]]
    graph = build_graph(structures, dtype=torch.float32)
    exact = evaluate(model, graph)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = evaluate(model, graph)
    per_atom = (mixed.energy - exact.energy) / graph.atoms_per_structure
    assert float(per_atom.abs().max()) < 0.05
    assert float((mixed.forces - exact.forces).abs().max()) < 0.15 * float(exact.forces.abs().max())

    recipe = Recipe(epochs=1, learning_rate=1e-3, max_structures_per_batch=4)
    _, full = fit_tiny(tmp_path / "full", emt_frames, recipe)
    _, half = fit_tiny(
        tmp_path / "mixed", emt_frames, dataclasses.replace(recipe, mixed_precision=True)
    )
    assert half.history[1].skipped_batches == 0
    assert half.history[1].train_loss == pytest.approx(full.history[1].train_loss, rel=0.02)


# ---------------------------------------------------------------- resume with more epochs


def test_resume_extends_the_run_over_a_replanned_cosine(tmp_path, emt_frames):
    recipe = Recipe(
        epochs=2, learning_rate=1e-3, final_learning_rate=1e-5, max_structures_per_batch=4
    )
    _, first = fit_tiny(tmp_path, emt_frames, recipe)
    _, extended = fit_tiny(tmp_path, emt_frames, dataclasses.replace(recipe, epochs=4), resume=True)
    assert [r.epoch for r in extended.history] == [0, 1, 2, 3, 4]
    for a, b in zip(first.history, extended.history[:3], strict=True):
        assert a.metrics == b.metrics  # epochs 1-2 are the first run's
    # two batches per epoch (8 frames, 4 per batch): an epoch's last batch starts halfway in it
    for record in extended.history[3:]:
        progress = (record.epoch - 1 + 0.5) / 4
        expected = 1e-5 + 0.5 * (1e-3 - 1e-5) * (1.0 + math.cos(math.pi * progress))
        assert record.learning_rate == pytest.approx(expected, rel=1e-12)
    changed = dataclasses.replace(recipe, epochs=5, learning_rate=2e-3, seed=3)
    with pytest.raises(GPTFFInputError, match=r"learning_rate \(0.001 → 0.002\), seed \(0 → 3\)"):
        fit_tiny(tmp_path, emt_frames, changed, resume=True)
    with pytest.raises(GPTFFInputError, match="already completed 4 epochs"):
        fit_tiny(tmp_path, emt_frames, dataclasses.replace(recipe, epochs=3), resume=True)


def test_cli_resume_keeps_or_extends_the_saved_epochs(tmp_path, capsys):
    train = _write_extxyz(tmp_path / "train.extxyz", count=8)
    base = ["finetune", str(train), *SCRATCH, "--valid-fraction", "0.25", "--out",
            str(tmp_path / "run"), "--json"]  # fmt: skip
    assert main([*base, "--epochs", "1"]) == 0
    capsys.readouterr()
    assert main([*base, "--resume"]) == 0  # the saved run's 1 epoch, not the default 30
    assert json.loads(capsys.readouterr().out)["epochs_run"] == 1
    assert main([*base, "--resume", "--epochs", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["epochs_run"] == 2


# ---------------------------------------------------------------- --out and --json


def test_cli_out_is_checked_before_the_data_is_read(tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.write_text("")
    missing = tmp_path / "missing.extxyz"
    assert main(["finetune", str(missing), "--out", str(taken)]) == 1
    assert f"--out {taken} is a file; give a directory" in capsys.readouterr().err


def test_cli_json_refuses_a_non_finite_number(tmp_path, capsys, monkeypatch):
    """A NaN in the summary is refused (exit 4, nothing printed), never printed as bare NaN."""
    train = _write_extxyz(tmp_path / "train.extxyz", count=6)
    args = ["finetune", str(train), *SCRATCH, "--epochs", "1", "--valid-fraction", "0.34"]
    from gptff_core.training import trainer as trainer_module

    real_fit = trainer_module.Trainer.fit

    def fit_with_a_nan(self, *fit_args, **kwargs):
        result = real_fit(self, *fit_args, **kwargs)
        result.after["energy_mae_meV_per_atom"] = float("nan")
        return result

    monkeypatch.setattr(trainer_module.Trainer, "fit", fit_with_a_nan)
    assert main([*args, "--out", str(tmp_path / "run"), "--json"]) == 4
    captured = capsys.readouterr()
    assert captured.out == "" and "after.energy_mae_meV_per_atom is not finite" in captured.err


def test_training_state_with_a_flipped_bit_is_not_resumed(tmp_path, emt_frames):
    from test_checkpoint_integrity import flip_exponent_bit

    recipe = Recipe(epochs=1, max_structures_per_batch=4)
    fit_tiny(tmp_path, emt_frames, recipe)
    member = flip_exponent_bit(tmp_path / "training_state.pt")
    with pytest.raises(GPTFFInputError, match=f"Training state .* is damaged.*{member}"):
        fit_tiny(tmp_path, emt_frames, recipe, resume=True)


def test_a_step_with_one_non_finite_gradient_is_recognised():
    """The one-sync check over all gradients: a single NaN or inf anywhere makes the step
    non-finite; parameters without a gradient (frozen, unused) do not."""
    parameters = [torch.nn.Parameter(torch.zeros(3)) for _ in range(4)]
    for k, p in enumerate(parameters[:3]):
        p.grad = torch.full((3,), float(k))
    assert Trainer._finite_gradients(parameters)
    for bad in (math.nan, math.inf):
        parameters[1].grad[2] = bad
        assert not Trainer._finite_gradients(parameters)
    assert Trainer._finite_gradients([torch.nn.Parameter(torch.zeros(1))])
