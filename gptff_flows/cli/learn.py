"""``gptff learn``: active learning against first-principles labels, run as a flow into a store.

Prints one row per iteration: labels so far, the committee's force disagreement on the frames it
sampled (mean and max, eV/Å), and the new committee's held-out force MAE (eV/Å) and energy MAE
(meV/atom) against labels it never trained on; then the final committee's checkpoints.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gptff_core.cli import add_commands, arg, command, dump_json, read_structures
from gptff_core.errors import ExitCode, GPTFFInputError
from gptff_core.paths import check_output_dir
from gptff_flows.cli.common import STORE_HELP, open_store, print_table

ITERATION_COLUMNS = (
    "iteration:d n_labels:d n_computed:d n_failed:d sampled_mean_uncertainty:.4f "
    "sampled_max_uncertainty:.4f force_mae:.4f energy_mae:.2f flags:s"
)
"""Columns of the per-iteration table (see :func:`~gptff_flows.cli.common.print_table`)."""


def register(subparsers) -> None:
    """Add ``gptff learn`` to the ``gptff`` parser."""
    add_commands(subparsers, cmd_learn)


def _numbers(text: str, what: str, kind=float) -> list:
    """``"600,800"`` → ``[600.0, 800.0]``; GPTFFInputError naming ``what`` otherwise."""
    try:
        return [kind(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise GPTFFInputError(f"{what} {text!r}: expected numbers separated by commas") from None


def parse_labeller_settings(text: str | None) -> dict:
    """``--labeller-settings`` JSON text (or ``@file.json``) → dict."""
    if text is None:
        return {}
    source = Path(text[1:]).read_text() if text.startswith("@") else text
    try:
        settings = json.loads(source)
    except json.JSONDecodeError as exc:
        raise GPTFFInputError(f"--labeller-settings is not JSON: {exc}") from None
    if not isinstance(settings, dict):
        raise GPTFFInputError(
            "--labeller-settings must be a JSON object, e.g. '{\"kpts\": [2, 2, 2]}'"
        )
    return settings


@command(
    "learn",
    "active learning: sample MD, label the most uncertain frames (GPAW, VASP or EMT), "
    "fine-tune a committee, repeat",
    arg("files", nargs="+", metavar="STRUCTURE", help="periodic structures to learn around"),
    arg("--labeller", choices=["gpaw", "vasp", "emt"], required=True, help="first-principles code"),
    arg("--labeller-settings", metavar="JSON", help="labeller settings (JSON, or @file.json)"),
    arg("--temperatures", default="600,800", help="K, MD sampling temperatures (%(default)s)"),
    arg("--ensemble", choices=["nvt", "npt"], default="nvt", help="MD ensemble (%(default)s)"),
    arg("--md-steps", type=int, default=200, help="MD steps per run (%(default)s)"),
    arg("--timestep", type=float, default=2.0, help="fs (%(default)s)"),
    arg("--sample-interval", type=int, default=10, help="steps between frames (%(default)s)"),
    arg("--supercell", default="1,1,1", help="repetitions a,b,c of each cell (%(default)s)"),
    arg("--iterations", type=int, default=3, help="label-and-train rounds at most (%(default)s)"),
    arg("--frames-per-iteration", type=int, default=10, help="labels per round (%(default)s)"),
    arg("--committee", type=int, help="committee members (default 4, see gptff_core.committee)"),
    arg("--threshold", type=float, default=0.05, help="eV/Å, stop below (%(default)s)"),
    arg("--holdout", type=float, default=0.2, help="fraction of labels held out (%(default)s)"),
    arg("--epochs", type=int, default=10, help="fine-tuning epochs per member (%(default)s)"),
    arg("--seed", type=int, default=0),
    arg("--store", metavar="LOCATION", help=STORE_HELP),
    arg("--output", metavar="DIR", help="final committee here (default ./learned_<formula>)"),
    epilog=(
        "Labels are never computed twice: each frame's label is looked up in the store first,\n"
        "so a killed run resumes (run the same command again). A label whose calculation fails\n"
        "(SCF not converged) is recorded and skipped. Units: T K, time step fs, disagreement\n"
        "and force MAE eV/Å, energy MAE meV/atom.\n"
        "Exit codes: 0 the committee's disagreement fell below --threshold; 1 bad input (before\n"
        "any work); 3 finished but flagged (threshold not reached, labels failed); 4 a job failed."
    ),
)
def cmd_learn(args: argparse.Namespace) -> int:
    """Run the loop into the store; print each iteration and write the final committee."""
    structures = [_structure(path) for path in args.files]
    maker = _maker(args)
    flow = maker.make(structures)  # every setting checked, nothing run yet
    output = check_output_dir(args.output or f"learned_{structures[0].reduced_formula}", "--output")
    store = open_store(args.store)
    if not args.json:
        print(f"learning {', '.join(args.files)} with {args.labeller} labels", file=sys.stderr)
    doc = _run(flow, store)
    paths = doc.write_committee(output) if doc.committee else []
    rows = [_iteration_row(row) for row in doc.iterations]
    if args.json:
        summary = doc.model_dump(mode="json", exclude={"committee"})
        dump_json(summary | dict(committee_paths=[str(p) for p in paths], uuid=flow.output.uuid))
    else:
        _report(doc, rows, paths, store)
    return ExitCode.FLAGGED if doc.flags or not doc.threshold_reached else ExitCode.OK


def _structure(path: str):
    """The last structure of ``path`` as a pymatgen Structure."""
    from pymatgen.io.ase import AseAtomsAdaptor

    ((_, atoms),) = read_structures(path, "-1")
    return AseAtomsAdaptor.get_structure(atoms)


def _maker(args: argparse.Namespace):
    """The :class:`~gptff_flows.flows.learn.ActiveLearningMaker` of the options."""
    from gptff_flows.flows.learn import ActiveLearningMaker

    sizes = {} if args.committee is None else dict(committee_size=args.committee)
    return ActiveLearningMaker(
        **sizes,
        labeller=args.labeller,
        labeller_settings=parse_labeller_settings(args.labeller_settings),
        temperatures=_numbers(args.temperatures, "--temperatures"),
        ensemble=args.ensemble,
        md_steps=args.md_steps,
        time_step=args.timestep,
        sample_interval=args.sample_interval,
        supercell=_numbers(args.supercell, "--supercell", int),
        iterations=args.iterations,
        frames_per_iteration=args.frames_per_iteration,
        threshold=args.threshold,
        holdout_fraction=args.holdout,
        recipe={"epochs": args.epochs},
        seed=args.seed,
        model=args.model,
        dtype=args.dtype,
        smooth=args.smooth,
        device=args.device,
    )


def _run(flow, store):
    """Run ``flow`` into ``store`` (resuming: iterations already stored are reused, labels
    never computed twice); its :class:`~gptff_flows.schemas.learn.LearningDocument`."""
    import warnings

    from gptff_flows.run import run_flow
    from gptff_flows.schemas.learn import LearningDocument

    with warnings.catch_warnings():  # jobflow's own FutureWarnings are not the user's
        warnings.filterwarnings("ignore", category=FutureWarning, module="jobflow")
        run_flow(flow, store, resume=True)
    output = store.get_output(flow.output.uuid, which="last", load=True)
    return LearningDocument.model_validate(output)


def _iteration_row(row) -> dict:
    """One printed row of :class:`~gptff_flows.schemas.learn.IterationSummary` (eV/Å, meV/atom)."""
    held = row.held_out
    return dict(
        iteration=row.iteration,
        n_labels=row.n_labels,
        n_computed=row.n_computed,
        n_failed=row.n_failed,
        sampled_mean_uncertainty=row.sampled_mean_uncertainty,
        sampled_max_uncertainty=row.sampled_max_uncertainty,
        force_mae=None if held is None else held.force_mae,
        energy_mae=None if held is None else held.energy_mae,
        flags=",".join(row.flags) or "-",
    )


def _report(doc, rows: list[dict], paths: list[Path], store) -> None:
    """The human summary: the per-iteration table, why it stopped, the committee's files."""
    from gptff_flows.stores import describe_store

    print_table(rows, ITERATION_COLUMNS)
    stop = "disagreement below" if doc.threshold_reached else "NOT below"
    print(f"stopped: {doc.stop_reason} ({stop} {doc.threshold} eV/Å); {doc.n_labels} labels, "
          f"{doc.n_failed_labels} failed")  # fmt: skip
    if paths:
        print(f"final model: {paths[0]} (committee: {', '.join(str(p) for p in paths)})")
    print(f"stored in {describe_store(store)}")
    if not doc.threshold_reached:
        print(
            f"gptff: warning: the committee still disagrees by more than {doc.threshold} eV/Å "
            "where its MD goes; run more iterations before trusting it there",
            file=sys.stderr,
        )
