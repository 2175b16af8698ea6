"""``gptff finetune``: fine-tune a GPTFF model (or train one from scratch) on labelled files.

Heavy modules (torch, the trainer) are imported inside the command, so ``gptff --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gptff_core.cli.app import add_commands, arg, command
from gptff_core.cli.io import dump_json
from gptff_core.errors import GPTFFInputError
from gptff_core.paths import check_output_dir

DEFAULT_EPOCHS = 30

_TABLE_ROWS = (
    ("energy_mae_meV_per_atom", "energy MAE (meV/atom)", ".2f"),
    ("forces_mae_meV_per_A", "forces MAE (meV/Å)", ".1f"),
    ("stress_mae_GPa", "stress MAE (GPa)", ".3f"),
)


def _config_overrides(pairs: list[str]) -> dict:
    """``["n_layers=2", "transformer=false"]`` → ``{"n_layers": 2, "transformer": False}``."""
    values = {}
    for pair in pairs:
        key, separator, text = (part.strip() for part in pair.partition("="))
        if not separator or not key:
            raise GPTFFInputError(f"--config {pair!r}: expected KEY=VALUE, e.g. n_layers=2")
        literal = text.lower() if text.lower() in ("true", "false") else text
        try:
            values[key] = json.loads(literal)
        except json.JSONDecodeError:
            values[key] = text
    return values


def _epochs(args: argparse.Namespace) -> int:
    """--epochs, else (resuming) the epochs of the saved run, else the default."""
    if args.epochs is not None:
        return args.epochs
    if args.resume:
        from gptff_core.training.state import saved_epochs
        from gptff_core.training.trainer import STATE_FILE

        saved = saved_epochs(Path(args.out) / STATE_FILE)
        if saved is not None:
            return saved
    return DEFAULT_EPOCHS


def _recipe(args: argparse.Namespace):
    from gptff_core.training.recipe import Recipe

    return Recipe(
        epochs=_epochs(args),
        learning_rate=args.lr,
        final_learning_rate=args.final_lr,
        warmup_steps=args.warmup_steps,
        energy_weight=args.energy_weight,
        forces_weight=args.forces_weight,
        stress_weight=args.stress_weight,
        huber_delta=args.huber_delta,
        grad_clip=args.grad_clip if args.grad_clip > 0 else None,
        max_structures_per_batch=args.batch_structures,
        max_atoms_per_batch=args.batch_atoms,
        max_triplets_per_batch=args.batch_triplets,
        structures_per_epoch=args.structures_per_epoch,
        freeze=tuple(args.freeze),
        ema_decay=args.ema,
        patience=args.patience,
        reference_refit=args.refit,
        dropout=args.dropout,
        seed=args.seed,
        mixed_precision=args.mixed_precision,
        outlier_energy_per_atom=args.outlier_energy if args.outlier_energy > 0 else None,
        outlier_force=args.outlier_force if args.outlier_force > 0 else None,
        drop_outliers=args.drop_outliers,
    )


def _start_model(args: argparse.Namespace):
    """The registry name or path to fine-tune, or a new network with ``--config`` sizes."""
    if not args.from_scratch:
        if args.config:
            raise GPTFFInputError("--config sets the size of a new network: add --from-scratch")
        return args.model
    from gptff_core.model import GPTFFConfig
    from gptff_core.training.trainer import new_network

    try:
        config = GPTFFConfig.from_dict(_config_overrides(args.config))
    except TypeError as error:
        raise GPTFFInputError(f"--config: {error}") from None
    return new_network(config, seed=args.seed)


@command(
    "finetune",
    "fine-tune GPTFF (or train from scratch) on labelled structures",
    arg(
        "train",
        nargs="+",
        metavar="TRAIN",
        help="extxyz, OUTCAR, vasprun.xml, ASE db/traj, or the published trainer's CSV",
    ),
    arg("--valid", nargs="+", metavar="FILE", help="validation files (default: split off)"),
    arg(
        "--valid-fraction",
        type=float,
        default=0.1,
        help="fraction of the frames split off for validation, whole trajectories (%(default)s)",
    ),
    arg("--format", dest="fmt", metavar="FMT", help="ASE format name, or gptff-csv"),
    arg("--out", default="finetuned", metavar="DIR", help="output directory (%(default)s)"),
    arg(
        "--epochs",
        type=int,
        help=f"epochs ({DEFAULT_EPOCHS}; with --resume: the saved run's, a larger number "
        "extends the run)",
    ),
    arg("--lr", type=float, default=2e-4, help="initial learning rate (%(default)s)"),
    arg("--final-lr", type=float, default=5e-6, help="cosine end learning rate (%(default)s)"),
    arg("--warmup-steps", type=int, default=0, help="linear warm-up steps (%(default)s)"),
    arg("--energy-weight", type=float, default=1.0, help="loss weight, eV/atom (%(default)s)"),
    arg("--forces-weight", type=float, default=1.0, help="loss weight, eV/Å (%(default)s)"),
    arg("--stress-weight", type=float, default=0.1, help="loss weight, GPa (%(default)s)"),
    arg("--huber-delta", type=float, default=0.1, help="Huber threshold (%(default)s)"),
    arg("--grad-clip", type=float, default=10.0, help="max gradient norm, 0: off (%(default)s)"),
    arg("--batch-structures", type=int, default=16, help="structures per batch (%(default)s)"),
    arg("--batch-atoms", type=int, default=512, help="atoms per batch at most (%(default)s)"),
    arg("--batch-triplets", type=int, default=400_000, help="triplets per batch (%(default)s)"),
    arg("--structures-per-epoch", type=int, help="sample this many structures per epoch"),
    arg(
        "--refit",
        default="residual",
        choices=["residual", "composition", "none"],
        help="per-element reference energy refit (%(default)s)",
    ),
    arg(
        "--freeze",
        action="append",
        default=[],
        metavar="PREFIX",
        help="keep parameters with this name prefix fixed (embedding, layers.0, readout, ...)",
    ),
    arg("--ema", type=float, metavar="DECAY", help="EMA of the weights, e.g. 0.999"),
    arg("--patience", type=int, help="early stopping after N epochs without improvement"),
    arg("--dropout", type=float, help="transformer dropout while training (default: model's)"),
    arg("--seed", type=int, default=0, help="random seed (%(default)s)"),
    arg(
        "--mixed-precision",
        action="store_true",
        help="bfloat16 autocast of the training forward pass (validation in full precision)",
    ),
    arg(
        "--outlier-energy",
        type=float,
        default=5.0,
        metavar="EV_PER_ATOM",
        help="energy outlier floor: a frame more than this and 10 sigma (MAD) from the robust "
        "per-element fit is an outlier; 0: off (%(default)s)",
    ),
    arg(
        "--outlier-force",
        type=float,
        default=100.0,
        metavar="EV_PER_A",
        help="a frame with a larger atomic force is an outlier; 0: off (%(default)s)",
    ),
    arg(
        "--drop-outliers",
        action="store_true",
        help="leave outlier frames out and report them (default: refuse the data)",
    ),
    arg("--resume", action="store_true", help="continue the run saved in --out"),
    arg("--from-scratch", action="store_true", help="train a new network instead of --model"),
    arg(
        "--config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="size of the new network, e.g. n_layers=2, transformer=false (with --from-scratch)",
    ),
    epilog=(
        "Units: energies eV, forces eV/Å, stress eV/Å³ with ASE's sign inside; VASP and the\n"
        "published CSV give kBar (pressure positive), converted on reading. Metrics: MAE of\n"
        "the energy per atom (meV/atom), force components (meV/Å), stress components (GPa).\n"
        "Writes DIR/best.pt, DIR/last.pt (GPTFFCalculator(model=...)), DIR/training_state.pt\n"
        "(--resume), DIR/metrics.csv, DIR/metrics.json and DIR/parity_*.png.\n"
        "Exit codes: 0 done; 1 bad input (a file, frame, outlier label, option or --out), checked\n"
        "before training; 4 the training diverged (the files of the last good epoch are kept)."
    ),
)
def cmd_finetune(args: argparse.Namespace) -> int:
    from gptff_core.training.trainer import Trainer

    check_output_dir(args.out, "--out")
    recipe = _recipe(args)
    train, valid = _frames(args)
    trainer = Trainer(
        _start_model(args),
        recipe,
        device=args.device,
        dtype=args.dtype,
        smooth=args.smooth,
        progress=False if args.json else None,
    )
    report = _epoch_reporter(args, recipe.epochs)
    result = trainer.fit(train, valid, args.out, resume=args.resume, on_epoch_end=report)
    summary = _summary(result, trainer.base_model)
    if args.json:
        dump_json(summary)
    else:
        print("\n".join(_summary_lines(result, summary, args.out)))
    return 0


def _frames(args: argparse.Namespace) -> tuple[list, list]:
    """(training, validation) frames: the --valid files, or split off the training files."""
    from gptff_core.training.datasets import read_datasets, split_frames

    frames = read_datasets(args.train, args.fmt)
    if args.valid:
        return frames, read_datasets(args.valid, args.fmt)
    return split_frames(frames, args.valid_fraction, seed=args.seed)


def _epoch_reporter(args: argparse.Namespace, epochs: int):
    """The ``on_epoch_end`` callback: one line per epoch on stderr (none with --json)."""
    from gptff_core.training.metrics import summary_line

    def report(record) -> None:
        if not args.json:
            loss = "-" if record.train_loss is None else f"{record.train_loss:.4g}"
            print(
                f"epoch {record.epoch:3d}/{epochs}  loss {loss}  valid "
                f"{summary_line(record.metrics)}  ({record.seconds:.0f} s)",
                file=sys.stderr,
            )

    return report


def _summary(result, base_model: dict) -> dict:
    """The --json summary of a run (metrics in meV/atom, meV/Å and GPa)."""
    return dict(
        before=result.before,
        after=result.after,
        checkpoint=str(result.best_checkpoint),
        last_checkpoint=str(result.last_checkpoint),
        best_epoch=result.best_epoch,
        epochs_run=result.history[-1].epoch,
        stopped_early=result.stopped_early,
        n_train=result.n_train,
        n_valid=result.n_valid,
        reference_refit=result.reference_refit,
        base_model=base_model,
        outliers=result.outliers,
        files=[str(p) for p in result.files],
    )


def _summary_lines(result, summary: dict, out: str) -> list[str]:
    """The human summary: frames, dropped outliers, refitted references (eV/atom), the
    before/after validation table and the files written."""
    refit = result.reference_refit
    n_train, n_valid = summary["n_train"], summary["n_valid"]
    lines = [f"training frames {n_train}, validation frames {n_valid}"]
    dropped = result.outliers.get("dropped", [])
    if dropped:
        shown = ", ".join(o["frame"] for o in dropped[:5]) + (", ..." if len(dropped) > 5 else "")
        lines.append(f"dropped {len(dropped)} outlier frame(s) (see metrics.json): {shown}")
    if refit["elements"]:
        shown = ", ".join(f"{s} {e:.4f}" for s, e in refit["elements"].items())
        lines.append(f"reference energies refitted ({refit['mode']}), eV/atom: {shown}")
    lines.append(f"{'validation':<22} {'before':>12} {'after':>12}")
    for key, name, digits in _TABLE_ROWS:
        old, new = result.before.get(key), result.after.get(key)
        if old is not None:
            lines.append(f"{name:<22} {old:>12{digits}} {new:>12{digits}}")
    lines.append(f"checkpoint (best epoch {summary['best_epoch']}): {result.best_checkpoint}")
    lines.append(f"last epoch: {result.last_checkpoint}; metrics and parity plots in {out}")
    return lines


def register(subparsers) -> None:
    """Add ``gptff finetune`` to the ``gptff`` parser."""
    add_commands(subparsers, cmd_finetune)
