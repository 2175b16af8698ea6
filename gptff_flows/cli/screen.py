"""``gptff screen``: a substitution screening campaign run into a job store, and
``gptff results screen`` (called from :mod:`gptff_flows.cli`): its ranked candidates.

Imported by :func:`gptff_core.cli.build_parser`; jobflow, pymatgen and the flows are imported
inside the functions so ``gptff --help`` stays fast. Energies printed in eV/atom.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path

from gptff_core.cli import add_commands, arg, command, dump_json, read_structures
from gptff_core.errors import ExitCode, GPTFFInputError
from gptff_core.paths import check_output_dir
from gptff_core.validation import check_structure
from gptff_flows.cli.common import D3_HELP, STORE_HELP, open_store, print_table

RANKING_COLUMNS = (
    "rank:d formula:s label:s status:s e_form_per_atom:.4f e_above_hull:.4f n_steps:d "
    "flags:s decomposition:s"
)


def _prototypes(paths: list[str]) -> dict:
    from pymatgen.io.ase import AseAtomsAdaptor

    prototypes = {}
    for path in paths:
        for _, atoms in read_structures(path, "-1"):
            name, n = Path(path).stem, 2
            while name in prototypes:
                name, n = f"{Path(path).stem}-{n}", n + 1
            check_structure(atoms, f"prototype {name!r} ({path})")  # before pymatgen sees it
            prototypes[name] = AseAtomsAdaptor.get_structure(atoms)
    return prototypes


def _competing(paths: list[str]) -> dict:
    """Structures from structure files; computed entries from JSON files (pymatgen's
    ``ComputedEntry``/``PDEntry`` as_dict, one or a list)."""
    from pymatgen.io.ase import AseAtomsAdaptor

    phases = {}
    for path in paths:
        if path.endswith(".json"):
            from monty.serialization import loadfn

            try:
                loaded = loadfn(path)
            except Exception as error:  # monty/json raise many types for bad files
                raise GPTFFInputError(
                    f"cannot read computed entries from {path}: {error}"
                ) from None
            for k, entry in enumerate(loaded if isinstance(loaded, list) else [loaded]):
                if not hasattr(entry, "energy"):
                    raise GPTFFInputError(f"{path}: item {k} is not a computed entry")
                phases[f"{Path(path).stem}[{k}]"] = entry
            continue
        for _, atoms in read_structures(path, "-1"):
            check_structure(atoms, f"competing phase {Path(path).stem!r} ({path})")
            phases[Path(path).stem] = AseAtomsAdaptor.get_structure(atoms)
    return phases


@command(
    "screen",
    "substitution screening: substitute elements into prototypes, relax, rank by hull energy",
    arg("prototypes", nargs="+", metavar="PROTOTYPE", help="prototype structure files"),
    arg(
        "--substitute",
        action="append",
        default=[],
        metavar="EL=NEW[,NEW]",
        help="replace element EL by each NEW (repeatable), e.g. Y=Sc,In,Er",
    ),
    arg("--competing", nargs="+", default=[], metavar="FILE",
        help="competing phases: structure files (relaxed here) or JSON computed entries"),
    arg("--store", metavar="LOCATION", help=STORE_HELP),
    arg("--campaign", metavar="ID", help="campaign id (default: prototypes + substitutions)"),
    arg("--chunk-size", type=int, default=64, help="structures per batched chunk (%(default)s)"),
    arg("--fmax", type=float, default=0.05, help="eV/Å, relaxation threshold (%(default)s)"),
    arg("--steps", type=int, default=500, help="maximum FIRE steps (%(default)s)"),
    arg("--d3", action="store_true", help=D3_HELP),
    arg("--min-atoms", type=int, default=64,
        help="final energies on supercells of at least this many atoms (%(default)s)"),
    arg("--volume-scaling", default="ionic-radii", choices=["ionic-radii", "data-mined", "none"]),
    arg("--charge-balanced", action="store_true", help="keep charge-balanced candidates only"),
    arg("--suggest", type=float, metavar="P",
        help="also pymatgen's suggested substitutions with probability above P"),
    arg("--replace-all", action="store_true",
        help="replace every listed element (no combination keeps one unchanged)"),
    arg("--max-ehull", type=float, metavar="EV", help="print candidates at most EV eV/atom above"),
    arg("--plot-dir", metavar="DIR", help="hull PNGs here (default: <store dir>/plots)"),
    arg("--no-plot", action="store_true", help="write no hull plots"),
    epilog=(
        "Candidates are relaxed in batches (FIRE, cell free) and their final energies taken on\n"
        "supercells of >= --min-atoms atoms; formation energies and energies above the hull\n"
        "(references and --competing phases) in eV/atom. Without a competing phase in a\n"
        "chemical system, E above hull is the formation energy (flag no_competing_phases).\n"
        "Each chunk is stored as it finishes: rerunning the same command computes only what is\n"
        "missing, and concurrent runs on one store share the work (leases in the store).\n"
        "`gptff results screen` queries the store later. Exit codes: 0 every candidate ranked;\n"
        "1 bad input, refused before any work (a prototype with NaN, partial occupancy or an\n"
        "unknown element; a substituted element in no prototype; an unusable store or plot\n"
        "directory); 3 ranked, but some candidates failed or are flagged (see status, flags);\n"
        "4 no candidate at all (the reason is printed) or none ranked, or the campaign stopped\n"
        "(completed chunks are stored: rerun to resume); 5 out of memory."
    ),
)  # fmt: skip
def cmd_screen(args: argparse.Namespace) -> int:
    from gptff_flows.analysis.substitution import (
        check_matches,
        check_prototypes,
        parse_substitutions,
    )

    substitutions = parse_substitutions(args.substitute)
    if not substitutions and args.suggest is None:
        raise GPTFFInputError("give at least one --substitute EL=NEW (or --suggest P)")
    prototypes = check_prototypes(_prototypes(args.prototypes))
    check_matches(prototypes, substitutions)  # an element in no prototype: refused now
    competing = _competing(args.competing)
    store = open_store(args.store)
    from gptff_flows.flows.screening import SubstitutionScreeningMaker
    from gptff_flows.jobs.screening import checkpoint_sha256
    from gptff_flows.stores import describe_store, store_dir

    campaign = args.campaign or default_campaign_id(prototypes, args.substitute)
    plot_dir = None
    if not args.no_plot:
        home = store_dir(store)
        plot_dir = args.plot_dir or (str(home / "plots") if home is not None else None)
        if plot_dir is not None:
            plot_dir = str(check_output_dir(plot_dir, "--plot-dir"))
    maker = SubstitutionScreeningMaker(
        name=f"GPTFF screening {campaign}",
        campaign=campaign,
        model=args.model,
        dtype=args.dtype,
        smooth=args.smooth,
        device=args.device,
        dispersion=args.d3,
        fmax=args.fmax,
        steps=args.steps,
        chunk_size=args.chunk_size,
        min_atoms=args.min_atoms,
        volume_scaling=args.volume_scaling,
        charge_balanced=args.charge_balanced,
        suggest_threshold=args.suggest,
        keep_original=not args.replace_all,
        plot_dir=plot_dir,
    )
    flow = maker.make(prototypes, substitutions, competing or None)
    checkpoint_sha256(args.model)  # a missing or damaged checkpoint is refused before the work
    if not args.json:
        print(f"campaign {campaign}: running into {describe_store(store)}", file=sys.stderr)
    if not _run(flow, store, campaign):
        return ExitCode.FAILED
    return report_campaign(store, campaign, args, plot_dir)


QUIET_LOGGERS = ("analysis.substitution", "analysis.hull", "jobs.screening")
"""Modules (under gptff_flows) whose warnings a ``gptff screen`` run keeps off stderr."""


def _run(flow, store, campaign: str) -> bool:
    from gptff_flows.run import run_flow

    # the campaign's own warnings (no candidates, none ranked) are reported by report_campaign
    reported = [logging.getLogger(f"gptff_flows.{m}") for m in QUIET_LOGGERS]
    quiet = logging.NullHandler()
    try:
        for logger in reported:
            logger.addHandler(quiet)
        with warnings.catch_warnings():  # jobflow's and pymatgen's warnings are not the user's
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", category=UserWarning, module="pymatgen")
            run_flow(flow, store)
    except RuntimeError as exc:
        print(
            f"gptff: error: campaign {campaign} stopped: {exc}; completed chunks are stored, "
            "rerun the same command to resume",
            file=sys.stderr,
        )
        return False
    finally:
        for logger in reported:
            logger.removeHandler(quiet)
    return True


def report_campaign(store, campaign: str, args: argparse.Namespace, plot_dir) -> int:
    """Print a finished campaign (table or ``--json``) and return its exit code."""
    from gptff_flows import queries
    from gptff_flows.stores import describe_store

    summary = queries.screening_campaigns(store, campaign=campaign)[-1]
    everything = queries.screening_results(store, campaign=campaign)
    rows = [r for r in everything if _within(r, args.max_ehull)]
    if args.json:
        keys = ("formula", "e_form_per_atom", "e_above_hull", "status", "label", "chemsys")
        keys += ("error", "hull_references", "flags")
        dump_json([{k: r[k] for k in keys} for r in rows])
    else:
        print_ranking(rows)
        print(
            f"{summary['candidates']} candidates: {summary['relaxed']} relaxed, "
            f"{summary['not_converged']} not converged, {summary['failed']} failed; "
            f"{summary['stored_before']} taken from the store; {summary['wall_time']:.1f} s"
        )
        print(f"stored in {describe_store(store)} (campaign {campaign})")
        if plot_dir is not None and summary["candidates"]:
            print(f"hull plots in {plot_dir}")
    code, message = campaign_verdict(summary, everything)
    if message:
        print(f"gptff: {'error: ' if code == ExitCode.FAILED else ''}{message}", file=sys.stderr)
    return code


def _within(row: dict, max_ehull: float | None) -> bool:
    e_hull = row["e_above_hull"]
    return max_ehull is None or (e_hull is not None and e_hull <= max_ehull)


def campaign_verdict(summary: dict, rows: list[dict]) -> tuple[ExitCode, str | None]:
    """Exit code of a finished campaign and the line that explains it (None when all is well):
    FAILED when it has no candidate or none ranked, FLAGGED when a candidate failed or carries
    a verdict (``no_competing_phases`` alone is a note, not a verdict) or a hull phase failed."""
    name = summary["campaign"]
    if summary.get("status", "ranked") != "ranked" or not rows:
        why = summary.get("message") or "no candidates"
        return ExitCode.FAILED, f"campaign {name}: {why}"
    failed = sum(r["status"] == "failed" for r in rows)
    flagged = sum(bool(set(r.get("flags") or []) - NOTES) for r in rows)
    phases = summary.get("failed_phases") or 0
    if not (failed or flagged or phases):
        return ExitCode.OK, None
    counted = ((failed, "candidate(s) failed"), (flagged, "candidate(s) flagged"))
    counted += ((phases, "reference/competing phase(s) failed"),)
    parts = [f"{n} {what}" for n, what in counted if n]
    return ExitCode.FLAGGED, f"campaign {name}: {', '.join(parts)}; see status, error and flags"


NOTES = frozenset({"no_competing_phases"})
"""Flags that inform (the hull is made of the elements only) without casting doubt on a number."""


def hull_note(rows: list[dict]) -> str | None:
    """The note for candidates whose hull holds only elemental references (None if none)."""
    systems = sorted(
        {r["chemsys"] for r in rows if "no_competing_phases" in (r.get("flags") or [])}
    )
    if not systems:
        return None
    return (
        f"note: no competing phases in {', '.join(systems)}: E above hull there is the formation "
        "energy against the elemental references only (give --competing structures or entries)"
    )


def default_campaign_id(prototypes: dict, specs: list[str]) -> str:
    """``"NaCl+CsCl:Na=K,Li;Cl=Br"``: the prototypes' names and the substitutions."""
    return "+".join(prototypes) + ":" + ";".join(specs)


def print_ranking(rows: list[dict]) -> None:
    print_table([r | {"flags": ",".join(r.get("flags") or []) or "-"} for r in rows],
                 RANKING_COLUMNS)  # fmt: skip
    for row in rows:
        if row["error"]:
            print(f"  {row['label']}: {row['error']}")
    if note := hull_note(rows):
        print(note)


def results_screen(args: argparse.Namespace) -> int:
    """``gptff results screen``: ranked candidates of stored campaigns."""
    from gptff_flows import queries

    store = open_store(args.store, create=False)
    rows = queries.screening_results(
        store,
        campaign=args.campaign,
        max_ehull=args.max_ehull,
        chemsys=args.chemsys,
        formula=args.formula,
    )
    if args.json:
        dump_json(rows)
    elif args.csv:
        import csv

        writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]) if rows else ["key"])
        writer.writeheader()
        writer.writerows(r | {"flags": ",".join(r["flags"])} for r in rows)
    else:
        campaigns = {r["campaign"] for r in rows}
        print(f"screening candidates ({len(rows)}, {len(campaigns)} campaign(s))")
        for campaign in sorted(campaigns):
            print(f"campaign {campaign}")
            print_ranking([r for r in rows if r["campaign"] == campaign])
    return 0


def register(subparsers) -> None:
    """Add ``gptff screen`` to the ``gptff`` parser."""
    add_commands(subparsers, cmd_screen)
