"""``gptff finetune-md``: fine-tune on your data, MD at several temperatures, diffusion analysis.

Joins ``gptff`` through the ``gptff.commands`` entry point (:func:`register`); jobflow, atomate2,
torch and pymatgen are imported inside the command so ``gptff --help`` stays fast. Units printed:
T K, D cm²/s, σ mS/cm, Ea eV, pressure GPa.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from gptff_core.cli import add_commands, arg, command, dump_json, read_structures
from gptff_core.errors import ExitCode, GPTFFInputError
from gptff_core.paths import check_output_dir
from gptff_flows.cli.common import STORE_HELP, open_store


def _temperatures(text: str) -> list[float]:
    try:
        values = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise GPTFFInputError(
            f"--temperatures {text!r}: give kelvins separated by commas, e.g. 600,800,1000"
        ) from None
    if not values:
        raise GPTFFInputError("--temperatures: give at least one temperature (K)")
    return values


def _supercell(text: str) -> list[int]:
    try:
        values = [int(n) for n in text.lower().replace("x", ",").split(",") if n.strip()]
    except ValueError:
        values = []
    if len(values) == 1:
        values *= 3
    if len(values) != 3:
        raise GPTFFInputError(f"--supercell {text!r}: give N or A,B,C (e.g. 2 or 2,2,1)")
    return values


@command(
    "finetune-md",
    "fine-tune on labelled data, run MD at several temperatures, report D, σ and Ea (a flow)",
    arg("--train", nargs="+", metavar="FILE", help="labelled training files"),
    arg(
        "--no-finetune",
        action="store_true",
        help="no training data: run the MD with --model as it is (the published network)",
    ),
    arg(
        "--learn",
        choices=["gpaw", "vasp", "emt"],
        metavar="LABELLER",
        help="first run the active-learning loop with these labels (gpaw, vasp, emt) at the MD "
        "temperatures, then the MD with its final model (see `gptff learn`)",
    ),
    arg("--labeller-settings", metavar="JSON", help="with --learn: labeller settings (JSON)"),
    arg("--learn-iterations", type=int, default=3, help="with --learn (%(default)s)"),
    arg("--learn-frames", type=int, default=10, help="with --learn: labels/round (%(default)s)"),
    arg("--valid", nargs="+", metavar="FILE", help="validation files (default: split off)"),
    arg("--format", dest="fmt", metavar="FMT", help="ASE format name, or gptff-csv"),
    arg("--structure", required=True, metavar="FILE", help="structure to simulate (last frame)"),
    arg("--species", required=True, help="mobile element, e.g. Li"),
    arg("--temperatures", required=True, metavar="K,K,...", help="e.g. 600,800,1000"),
    arg("--ensemble", choices=["nvt", "npt", "nve"], default="nvt", help="(%(default)s)"),
    arg("--steps", type=int, default=10_000, help="production steps per T (%(default)s)"),
    arg("--equilibration", type=int, default=1_000, help="steps discarded first (%(default)s)"),
    arg("--timestep", type=float, default=2.0, help="fs (%(default)s)"),
    arg("--interval", type=int, default=10, help="steps between frames (%(default)s)"),
    arg("--supercell", default="1", metavar="N|A,B,C", help="repetitions (%(default)s)"),
    arg("--pressure", type=float, default=0.0, help="GPa, NPT target (%(default)s)"),
    arg("--charge", type=float, help="ion charge (e) for Nernst-Einstein (default: valence)"),
    arg("--epochs", type=int, default=10, help="fine-tuning epochs (%(default)s)"),
    arg("--lr", type=float, default=2e-4, help="initial learning rate (%(default)s)"),
    arg("--seed", type=int, default=0, help="random seed (%(default)s)"),
    arg("--no-smooth", action="store_true", help="no C² cutoff envelopes (see --smooth)"),
    arg(
        "--d3",
        action="store_true",
        help="add D3(BJ) dispersion for PBE to the MD (needs torch-dftd); the fine-tuning and "
        "--learn train without it: only for labels without dispersion (PBE, not optB88-vdW)",
    ),
    arg("--store", metavar="LOCATION", help=STORE_HELP),
    arg("--plot-dir", metavar="DIR", help="PNG plots here (default: <store dir>/plots)"),
    epilog=(
        "Fine-tunes --model on the training frames (formats of `gptff finetune`), runs MD of\n"
        "the structure at each temperature with the fine-tuned network (Nose-Hoover chain NVT,\n"
        "or MTK NPT), discards the equilibration, and fits D (cm2/s), the Nernst-Einstein\n"
        "conductivity (mS/cm) and the Arrhenius activation energy (eV), extrapolating σ to\n"
        "300 K. With --no-finetune (no training data) the MD runs with --model as it is.\n"
        "Smooth (C² envelopes): on when fine-tuning (training and MD), off with --no-finetune\n"
        "(the published network exactly; a checkpoint path keeps its own setting); --smooth or\n"
        "--no-smooth decide instead. A temperature whose mean T misses its target by more\n"
        "than 5 % + 3 canonical standard deviations of the mean is flagged\n"
        "temperature_not_reached and left out of the Arrhenius fit.\n"
        "Results go to the job store (`gptff results --kind finetune-md`); the checkpoint and\n"
        "trajectories to its data store (a failed MD keeps its trajectory so far there).\n"
        "Exit codes: 0 done, nothing flagged; 1 bad input (before any work); 3 done but a\n"
        "temperature or the Arrhenius fit is flagged; 4 a job failed (the cause is printed)."
    ),
)
def cmd_finetune_md(args: argparse.Namespace) -> int:
    _check_args(args)
    temperatures = _temperatures(args.temperatures)
    supercell = _supercell(args.supercell)
    structure = _read_structure(args.structure)
    if args.plot_dir is not None:
        check_output_dir(args.plot_dir, "--plot-dir")
    maker = _maker(args, temperatures, supercell)
    build = _flow_builder(args, maker, structure, temperatures)
    flow = build()  # every setting checked, nothing run yet
    store, flow = _store_and_plots(args, maker, build, flow)
    if not args.json:
        print(_announce(args, maker, structure, supercell, temperatures), file=sys.stderr)
    doc = _run(flow, store)
    if args.json:
        summary = doc.model_dump(mode="json", exclude={"structure"})
        summary["uuid"] = flow.output.uuid
        dump_json(summary)
    else:
        from gptff_flows.stores import describe_store

        print(_report(doc))
        print(f"stored in {describe_store(store)} (summary job {flow.output.uuid})")
    return ExitCode.FLAGGED if doc.flags else ExitCode.OK


def _check_args(args: argparse.Namespace) -> None:
    """Refuse contradictory options (training data, smooth) before any work."""
    if args.learn and (args.train or args.no_finetune):
        raise GPTFFInputError("--learn fine-tunes by itself: drop --train and --no-finetune")
    if not args.learn and bool(args.train) == args.no_finetune:
        raise GPTFFInputError(
            "give --train FILE... to fine-tune, or --no-finetune (or --learn LABELLER)"
        )
    if args.valid and args.no_finetune:
        raise GPTFFInputError("--valid needs --train (it validates the fine-tuning)")
    if args.smooth and args.no_smooth:
        raise GPTFFInputError("choose one of --smooth and --no-smooth")


def _read_structure(path: str):
    """The last structure of ``path`` as a pymatgen Structure; refused without a 3D cell."""
    structures = list(read_structures(path, "-1"))
    if not structures:
        raise GPTFFInputError(f"{path}: no structure found")
    atoms = structures[0][1]
    _require_cell(path, atoms)
    from pymatgen.io.ase import AseAtomsAdaptor

    return AseAtomsAdaptor.get_structure(atoms)


def _maker(args: argparse.Namespace, temperatures: list[float], supercell: list[int]):
    """The :class:`~gptff_flows.flows.finetune_md.FineTuneMDMaker` of the options (T K, time
    step fs, pressure GPa)."""
    from gptff_flows.flows.finetune_md import FineTuneMDMaker

    return FineTuneMDMaker(
        species=args.species,
        temperatures=temperatures,
        ensemble=args.ensemble,
        time_step=args.timestep,
        n_steps=args.steps,
        equilibration_steps=args.equilibration,
        traj_interval=args.interval,
        supercell=supercell,
        pressure=args.pressure,
        seed=args.seed,
        charge=args.charge,
        model=args.model,
        finetune=not (args.no_finetune or args.learn),
        recipe={"epochs": args.epochs, "learning_rate": args.lr, "seed": args.seed},
        file_format=args.fmt,
        dtype=args.dtype,
        smooth=True if args.smooth else (False if args.no_smooth else None),
        device=args.device,
        dispersion=args.d3,
        plot_dir=args.plot_dir,
    )


def _run(flow, store):
    """Run ``flow`` into ``store``; its summary document (a failed job: ComputationError
    naming the cause)."""
    from gptff_flows.run import run_flow

    with warnings.catch_warnings():  # jobflow's own FutureWarnings are not the user's
        warnings.filterwarnings("ignore", category=FutureWarning, module="jobflow")
        responses = run_flow(flow, store)
    return responses[flow.output.uuid][1].output


def _require_cell(path: str, atoms) -> None:
    """Refuse a structure without a 3D periodic cell (a molecule) before any work."""
    if not atoms.pbc.all() or atoms.cell.rank < 3:
        raise GPTFFInputError(
            f"{path}: {atoms.get_chemical_formula()} has no 3D periodic cell (a molecule?); "
            "finetune-md simulates a crystal: give a structure with a cell (CIF, POSCAR, extxyz "
            "with a Lattice)"
        )


def _flow_builder(args, maker, structure, temperatures: list[float]):
    """``build() -> Flow``: the fine-tune-then-MD flow, or with ``--learn`` the active-learning
    loop at the MD temperatures (K) followed by the MD with its final model."""
    from gptff_flows.cli.learn import parse_labeller_settings

    if not args.learn:
        return lambda: maker.make(structure, train_files=args.train, valid_files=args.valid)
    from gptff_flows.flows.finetune_md import learned_md_flow
    from gptff_flows.flows.learn import ActiveLearningMaker

    learn = ActiveLearningMaker(
        labeller=args.learn,
        labeller_settings=parse_labeller_settings(args.labeller_settings),
        temperatures=temperatures,
        iterations=args.learn_iterations,
        frames_per_iteration=args.learn_frames,
        seed=args.seed,
        model=args.model,
        dtype=args.dtype,
        smooth=maker.smooth,
        device=args.device,
    )
    return lambda: learned_md_flow(learn, maker, structure)


def _store_and_plots(args, maker, build, flow):
    """Open (and check) the store, then settle the plot directory (default ``<store>/plots``),
    checked writable; the flow again (``build()``) if the plot directory changed. Before any
    work."""
    from gptff_flows.stores import store_dir

    store = open_store(args.store)
    if args.plot_dir is None and (home := store_dir(store)) is not None:
        maker.plot_dir = str(check_output_dir(home / "plots", "plot directory").resolve())
        flow = build()
    return store, flow


def _announce(args, maker, structure, supercell, temperatures) -> str:
    """What is about to run: the network (fine-tuned or as it is) and its smooth setting."""
    smooth = maker.resolved_smooth()
    envelopes = (
        "with C² smooth envelopes (energies differ from the published network's by up to "
        "177 meV/atom)"
        if smooth
        else "without smooth envelopes"
    )
    if args.no_finetune:
        from gptff_core.pretrained import PRETRAINED_MODELS

        published = args.model.strip().lower() in PRETRAINED_MODELS and not smooth
        what = (
            f"{args.model} {'as published' if published else 'as it is'}, NOT fine-tuned "
            f"(--no-finetune), {envelopes}:"
        )
    elif args.learn:
        what = f"active learning with {args.learn} labels from {args.model} {envelopes}, then"
    else:
        what = f"fine-tuning {args.model} on {len(args.train)} file(s) {envelopes}, then"
    n_atoms = len(structure) * supercell[0] * supercell[1] * supercell[2]
    return (
        f"{what} {args.ensemble.upper()} MD of {structure.composition.reduced_formula} "
        f"({n_atoms} atoms) at {', '.join(f'{t:g}' for t in temperatures)} K"
    )


def _report(doc) -> str:
    """The human summary: fine-tuning metrics, the network and its smooth setting, the table."""
    ft = doc.finetune
    smooth = f"smooth {'on' if doc.gptff.smooth else 'off'}"
    if ft is None and doc.inputs.get("given_checkpoint"):
        sha = doc.gptff.checkpoint_sha256[:12]
        header = f"MD with the active-learning loop's final model ({sha}…), {smooth}"
        return header + "\n" + _md_report(doc)
    if ft is None:
        header = f"not fine-tuned: MD with {doc.gptff.model_name} as it is, {smooth}"
        return header + "\n" + _md_report(doc)
    lines = [
        f"fine-tuning ({ft['n_train']} train / {ft['n_valid']} valid frames), validation MAE "
        "before -> after:",
    ]
    for key, name in (
        ("energy_mae_meV_per_atom", "energy (meV/atom)"),
        ("forces_mae_meV_per_A", "forces (meV/Å)"),
        ("stress_mae_GPa", "stress (GPa)"),
    ):
        if ft["before"].get(key) is not None:
            lines.append(f"  {name:<18} {ft['before'][key]:10.3f} -> {ft['after'][key]:10.3f}")
    lines.append(f"checkpoint sha256 {ft['checkpoint_sha256'][:16]}… (in the store's data store)")
    lines.append(f"MD with the fine-tuned network, {smooth}")
    return "\n".join(lines) + "\n" + _md_report(doc)


def _md_report(doc) -> str:
    """Per-temperature table, Arrhenius fit and plot paths (T K, D cm²/s, σ mS/cm, Ea eV)."""
    lines = [
        f"{'T (K)':>7} {'<T> (K)':>8} {'±tol (K)':>8} {'<P> (GPa)':>9} "
        f"{'drift (eV/atom/ps)':>18} {'D (cm²/s)':>20} {'σ (mS/cm)':>18}  flags"
    ]
    for row in doc.temperatures:
        d = "-" if row.diffusivity is None else f"{row.diffusivity:.2e}±{row.diffusivity_error:.1e}"
        s = (
            "-"
            if row.conductivity is None
            else f"{row.conductivity:.3g}±{row.conductivity_error:.2g}"
        )
        drift = "-" if row.conserved_drift is None else f"{row.conserved_drift:.2e}"
        tol = "-" if row.temperature_tolerance is None else f"{row.temperature_tolerance:.0f}"
        lines.append(
            f"{row.temperature:7.0f} {row.mean_temperature:8.0f} {tol:>8} {row.mean_pressure:9.2f} "
            f"{drift:>18} {d:>20} {s:>18}  {','.join(row.flags) or '-'}"
        )
    for row in doc.temperatures:
        if row.temperature_reason:
            lines.append(
                f"temperature_not_reached at {row.temperature:g} K: {row.temperature_reason}"
            )
    fit = doc.arrhenius
    if fit.activation_energy is not None:
        error = (
            "" if fit.activation_energy_error is None else f" ± {fit.activation_energy_error:.3f}"
        )
        lines.append(f"Ea = {fit.activation_energy:.3f}{error} eV over {fit.temperatures} K")
        lines.append(f"σ(300 K) ≈ {fit.conductivity_300K:.3g} mS/cm (extrapolated)")
        if fit.reason:
            lines.append(fit.reason)
    else:
        lines.append(f"no Arrhenius fit ({', '.join(fit.flags)}): {fit.reason or '-'}")
    if doc.flags:
        lines.append(f"FLAGGED ({', '.join(doc.flags)}): see the flags above before using these")
    for kind, path in doc.plots.items():
        lines.append(f"{kind} plot: {path}")
    return "\n".join(lines)


def register(subparsers) -> None:
    """Add ``gptff finetune-md`` to the ``gptff`` parser."""
    add_commands(subparsers, cmd_finetune_md)
