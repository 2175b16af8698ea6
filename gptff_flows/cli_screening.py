"""``gptff screen``: a substitution screening campaign run into a job store, and
``gptff results screen`` (called from :mod:`gptff_flows.cli`): its ranked candidates.

Imported by :func:`gptff_core.cli.build_parser`; jobflow, pymatgen and the flows are imported
inside the functions so ``gptff --help`` stays fast. Energies printed in eV/atom.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from gptff_core.cli import arg, command, read_structures
from gptff_core.errors import GPTFFInputError

STORE_HELP = (
    "job store: a directory, a mongodb:// URI, or 'jobflow'; default $GPTFF_STORE, else the "
    "embedded store in $GPTFF_STORE_DIR or ~/.local/share/gptff/store"
)

RANKING_COLUMNS = (
    "rank:d formula:s label:s status:s e_form_per_atom:.4f e_above_hull:.4f n_steps:d "
    "decomposition:s"
)


def _prototypes(paths: list[str]) -> dict:
    from pymatgen.io.ase import AseAtomsAdaptor

    prototypes = {}
    for path in paths:
        for _, atoms in read_structures(path, "-1"):
            name, n = Path(path).stem, 2
            while name in prototypes:
                name, n = f"{Path(path).stem}-{n}", n + 1
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
        "(references and --competing phases) in eV/atom. Each chunk is stored as it finishes:\n"
        "rerunning the same command computes only what is missing. `gptff results screen`\n"
        "queries the store later. Exit codes: 0 campaign ranked (some candidates may have\n"
        "failed, see their status); 1 bad input or the campaign stopped (rerun to resume)."
    ),
)  # fmt: skip
def cmd_screen(args: argparse.Namespace) -> int:
    from gptff_flows.substitution import parse_substitutions

    substitutions = parse_substitutions(args.substitute)
    if not substitutions and args.suggest is None:
        raise GPTFFInputError("give at least one --substitute EL=NEW (or --suggest P)")
    prototypes = _prototypes(args.prototypes)
    competing = _competing(args.competing)
    from gptff_flows.cli import open_store

    store = open_store(args.store)
    from gptff_flows import queries
    from gptff_flows.flows.screening import SubstitutionScreeningMaker
    from gptff_flows.run import run_flow
    from gptff_flows.stores import describe_store, store_dir

    campaign = args.campaign or default_campaign_id(prototypes, args.substitute)
    plot_dir = None
    if not args.no_plot:
        home = store_dir(store)
        plot_dir = args.plot_dir or (str(home / "plots") if home is not None else None)
    maker = SubstitutionScreeningMaker(
        name=f"GPTFF screening {campaign}",
        campaign=campaign,
        model=args.model,
        dtype=args.dtype,
        smooth=args.smooth,
        device=args.device,
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
    if not args.json:
        print(f"campaign {campaign}: running into {describe_store(store)}", file=sys.stderr)
    try:
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
        return 1
    rows = queries.screening_results(store, campaign=campaign, max_ehull=args.max_ehull)
    if args.json:
        keys = ("formula", "e_form_per_atom", "e_above_hull", "status", "label", "chemsys")
        print(json.dumps([{k: r[k] for k in (*keys, "error")} for r in rows], indent=2))
        return 0
    print_ranking(rows)
    summary = queries.screening_campaigns(store, campaign=campaign)[-1]
    print(
        f"{summary['candidates']} candidates: {summary['relaxed']} relaxed, "
        f"{summary['not_converged']} not converged, {summary['failed']} failed; "
        f"{summary['stored_before']} taken from the store; {summary['wall_time']:.1f} s"
    )
    print(f"stored in {describe_store(store)} (campaign {campaign})")
    if plot_dir is not None:
        print(f"hull plots in {plot_dir}")
    return 0


def default_campaign_id(prototypes: dict, specs: list[str]) -> str:
    """``"NaCl+CsCl:Na=K,Li;Cl=Br"``: the prototypes' names and the substitutions."""
    return "+".join(prototypes) + ":" + ";".join(specs)


def print_ranking(rows: list[dict]) -> None:
    from gptff_flows.cli import _print_table

    _print_table(rows, RANKING_COLUMNS)
    for row in rows:
        if row["error"]:
            print(f"  {row['label']}: {row['error']}")


def results_screen(args: argparse.Namespace) -> int:
    """``gptff results screen``: ranked candidates of stored campaigns."""
    from gptff_flows import queries
    from gptff_flows.cli import open_store

    store = open_store(args.store)
    rows = queries.screening_results(
        store,
        campaign=args.campaign,
        max_ehull=args.max_ehull,
        chemsys=args.chemsys,
        formula=args.formula,
    )
    if args.json:
        print(json.dumps(rows, indent=2))
    elif args.csv:
        import csv

        writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]) if rows else ["key"])
        writer.writeheader()
        writer.writerows(rows)
    else:
        campaigns = {r["campaign"] for r in rows}
        print(f"screening candidates ({len(rows)}, {len(campaigns)} campaign(s))")
        for campaign in sorted(campaigns):
            print(f"campaign {campaign}")
            print_ranking([r for r in rows if r["campaign"] == campaign])
    return 0
