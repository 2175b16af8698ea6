"""``gptff finetune-md``: fine-tune on your data, MD at several temperatures, diffusion analysis.

Imported by :func:`gptff_core.cli.build_parser`; jobflow, atomate2, torch and pymatgen are
imported inside the command so ``gptff --help`` stays fast. Units printed: T K, D cm²/s,
σ mS/cm, Ea eV, pressure GPa.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings

from gptff_core.cli import arg, command, read_structures
from gptff_core.errors import GPTFFInputError

STORE_HELP = (
    "job store: a directory, a mongodb:// URI, or 'jobflow'; default $GPTFF_STORE, else the "
    "embedded store in $GPTFF_STORE_DIR or ~/.local/share/gptff/store"
)


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
    arg("--no-smooth", action="store_true", help="MD without C² cutoff envelopes"),
    arg("--store", metavar="LOCATION", help=STORE_HELP),
    arg("--plot-dir", metavar="DIR", help="PNG plots here (default: <store dir>/plots)"),
    epilog=(
        "Fine-tunes --model on the training frames (formats of `gptff finetune`), runs MD of\n"
        "the structure at each temperature with the fine-tuned network (Nose-Hoover chain NVT,\n"
        "or MTK NPT), discards the equilibration, and fits D (cm2/s), the Nernst-Einstein\n"
        "conductivity (mS/cm) and the Arrhenius activation energy (eV), extrapolating σ to\n"
        "300 K. With --no-finetune (no training data) the MD runs with --model as it is.\n"
        "Results go to the job store (`gptff results --kind jobs`); the checkpoint and\n"
        "trajectories to its data store. Exit codes: 0 done; 1 bad input or a job failed."
    ),
)
def cmd_finetune_md(args: argparse.Namespace) -> int:
    if bool(args.train) == args.no_finetune:
        raise GPTFFInputError("give --train FILE... to fine-tune, or --no-finetune")
    if args.valid and args.no_finetune:
        raise GPTFFInputError("--valid needs --train (it validates the fine-tuning)")
    temperatures = _temperatures(args.temperatures)
    supercell = _supercell(args.supercell)
    structures = list(read_structures(args.structure, "-1"))
    if not structures:
        raise GPTFFInputError(f"{args.structure}: no structure found")
    from gptff_flows.cli import open_store

    store = open_store(args.store)
    from pymatgen.io.ase import AseAtomsAdaptor

    from gptff_flows.flows.finetune_md import FineTuneMDMaker
    from gptff_flows.run import run_flow
    from gptff_flows.stores import describe_store, store_dir

    home = store_dir(store)
    plot_dir = args.plot_dir or (str(home / "plots") if home is not None else None)
    maker = FineTuneMDMaker(
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
        finetune=not args.no_finetune,
        recipe={"epochs": args.epochs, "learning_rate": args.lr, "seed": args.seed},
        file_format=args.fmt,
        dtype=args.dtype,
        smooth=False if args.no_smooth else True,
        device=args.device,
        plot_dir=plot_dir,
    )
    structure = AseAtomsAdaptor.get_structure(structures[0][1])
    flow = maker.make(structure, train_files=args.train, valid_files=args.valid)
    if not args.json:
        what = (
            f"{args.model} as published, NOT fine-tuned (--no-finetune)"
            if args.no_finetune
            else f"fine-tuning {args.model} on {len(args.train)} file(s), then"
        )
        print(
            f"{what} "
            f"{args.ensemble.upper()} MD of {structure.composition.reduced_formula} "
            f"({len(structure) * supercell[0] * supercell[1] * supercell[2]} atoms) at "
            f"{', '.join(f'{t:g}' for t in temperatures)} K",
            file=sys.stderr,
        )
    failures = _JobFailures()
    jobflow_logger = logging.getLogger("jobflow.managers.local")
    jobflow_logger.addHandler(failures)
    level = jobflow_logger.level
    jobflow_logger.setLevel(min(level or logging.INFO, logging.INFO))
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, module="jobflow")
            responses = run_flow(flow, store)
    except RuntimeError as exc:
        print(f"gptff: error: the flow failed: {exc}", file=sys.stderr)
        for message in failures.messages:
            print(message, file=sys.stderr)
        return 1
    finally:
        jobflow_logger.removeHandler(failures)
        jobflow_logger.setLevel(level)
    doc = responses[flow.output.uuid][1].output
    summary = doc.model_dump(mode="json", exclude={"structure"})
    summary["uuid"] = flow.output.uuid
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(_report(doc))
    print(f"stored in {describe_store(store)} (summary job {flow.output.uuid})")
    return 0


class _JobFailures(logging.Handler):
    """Keeps jobflow's "<job> failed with exception" log records (it logs them at INFO)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "failed with exception" in message:
            self.messages.append(message)


def _report(doc) -> str:
    ft = doc.finetune
    if ft is None:
        return f"not fine-tuned: MD with {doc.gptff.model_name} as it is\n" + _md_report(doc)
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
    return "\n".join(lines) + "\n" + _md_report(doc)


def _md_report(doc) -> str:
    """Per-temperature table, Arrhenius fit and plot paths (T K, D cm²/s, σ mS/cm, Ea eV)."""
    lines = []
    lines.append(
        f"{'T (K)':>7} {'<T> (K)':>8} {'<P> (GPa)':>9} {'drift (eV/atom/ps)':>18} "
        f"{'D (cm²/s)':>20} {'σ (mS/cm)':>18}  flags"
    )
    for row in doc.temperatures:
        d = "-" if row.diffusivity is None else f"{row.diffusivity:.2e}±{row.diffusivity_error:.1e}"
        s = (
            "-"
            if row.conductivity is None
            else f"{row.conductivity:.3g}±{row.conductivity_error:.2g}"
        )
        drift = "-" if row.conserved_drift is None else f"{row.conserved_drift:.2e}"
        lines.append(
            f"{row.temperature:7.0f} {row.mean_temperature:8.0f} {row.mean_pressure:9.2f} "
            f"{drift:>18} {d:>20} {s:>18}  {','.join(row.flags) or '-'}"
        )
    fit = doc.arrhenius
    if fit.activation_energy is not None:
        error = (
            "" if fit.activation_energy_error is None else f" ± {fit.activation_energy_error:.3f}"
        )
        lines.append(f"Ea = {fit.activation_energy:.3f}{error} eV over {fit.temperatures} K")
        lines.append(f"σ(300 K) ≈ {fit.conductivity_300K:.3g} mS/cm (extrapolated)")
    else:
        lines.append(f"no Arrhenius fit: {', '.join(fit.flags)}")
    for kind, path in doc.plots.items():
        lines.append(f"{kind} plot: {path}")
    return "\n".join(lines)
