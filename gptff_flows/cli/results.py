"""``gptff results``: query the job store by formula, chemical system, name and date.

Units printed: V0 Å³/atom, E0 and E/atom eV/atom, B0 GPa, volumes Å³/atom.
"""

from __future__ import annotations

import argparse
import csv
import sys

from gptff_core.cli import add_commands, arg, command, dump_json
from gptff_core.errors import GPTFFInputError
from gptff_flows.cli.common import STORE_HELP, open_store, print_table


def register(subparsers) -> None:
    """Add ``gptff results`` to the ``gptff`` parser."""
    add_commands(subparsers, cmd_results)


@command(
    "results",
    "query the job store: EOS fits and relaxations by formula, chemical system, name, date",
    arg("what", nargs="?", choices=["screen"], help="'screen': ranked screening candidates"),
    arg("--store", metavar="LOCATION", help=STORE_HELP),
    arg(
        "--kind",
        choices=["all", "eos", "relax", "finetune-md", "tensile", "learn", "jobs"],
        default="all",
        help="what to list",
    ),
    arg("--formula", help="compound, any formula of it (NaCl, Na4Cl4)"),
    arg("--chemsys", help="chemical system, e.g. Na-Cl"),
    arg("--flow", dest="flow_name", metavar="TEXT", help="flow name contains TEXT"),
    arg("--job", dest="job_name", metavar="TEXT", help="job name contains TEXT"),
    arg("--since", metavar="DATE", help="completed at or after, ISO (2026-11-21[T10:00])"),
    arg("--until", metavar="DATE", help="completed before (a bare date includes that day)"),
    arg("--include-eos-points", action="store_true", help="list EOS points as relaxations"),
    arg("--csv", action="store_true", help="print CSV (with --kind eos, relax or jobs)"),
    arg("--campaign", metavar="ID", help="screen: campaign id (default: every campaign)"),
    arg("--max-ehull", type=float, metavar="EV", help="screen: at most EV eV/atom above hull"),
    model_options=False,
    epilog="V0 in Å³/atom, E0 and E/atom in eV/atom, B0 in GPa, volumes in Å³/atom.",
)
def cmd_results(args: argparse.Namespace) -> int:
    if args.what == "screen":
        from gptff_flows.cli.screen import results_screen

        return results_screen(args)
    if args.csv and args.kind == "all":
        raise GPTFFInputError(
            "--csv prints one table: add --kind eos, relax, finetune-md, tensile, learn or jobs"
        )
    if args.csv and args.json:
        raise GPTFFInputError("choose one of --csv and --json")
    from gptff_flows import queries

    filters = dict(formula=args.formula, chemsys=args.chemsys, flow_name=args.flow_name)
    filters |= dict(job_name=args.job_name, since=args.since, until=args.until)
    queries.check_filters(**filters)  # a bad formula or date is named before the store
    store = open_store(args.store, create=False)  # a read-only command never creates one
    tables = {}
    if args.kind in ("all", "eos"):
        tables["eos"] = queries.eos_results(store, **filters)
    if args.kind in ("all", "relax"):
        tables["relax"] = queries.relaxations(
            store, include_eos_points=args.include_eos_points, **filters
        )
    if args.kind in ("all", "finetune-md"):
        from gptff_flows.queries.finetune_md import finetune_md_results

        tables["finetune-md"] = finetune_md_results(store, **filters)
    if args.kind in ("all", "tensile"):
        from gptff_flows.queries.tensile import tensile_results

        tables["tensile"] = tensile_results(store, **filters)
    if args.kind in ("all", "learn"):
        from gptff_flows.queries.learn import learn_results

        tables["learn"] = learn_results(store, **filters)
    if args.kind == "jobs":
        tables["jobs"] = queries.gptff_jobs(store, **filters)
    if args.json:
        dump_json(tables if args.kind == "all" else tables[args.kind])
    elif args.csv:
        rows = tables[args.kind]
        writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]) if rows else ["uuid"])
        writer.writeheader()
        writer.writerows(rows)
    else:
        for kind, rows in tables.items():
            print(f"{_TITLES[kind]} ({len(rows)})")
            print_table(rows, _COLUMNS[kind])
    return 0


_TITLES = {
    "eos": "EOS fits",
    "relax": "relaxations",
    "finetune-md": "fine-tune → MD → diffusion",
    "tensile": "tensile strain MD",
    "learn": "active learning",
    "jobs": "GPTFF jobs",
}
_COLUMNS = {
    "eos": "formula:s n_atoms:d v0_per_atom:.4f e0_per_atom:.5f b0:.2f b1:.2f "
    "rms_residual_meV_per_atom:.3f r_squared:.5f verdict:s flags:s model:s completed_at:time "
    "flow_name:s",
    "relax": "formula:s n_atoms:d energy_per_atom_eV:.5f volume_per_atom:.4f converged:s "
    "model:s completed_at:time job_name:s",
    "finetune-md": "formula:s species:s finetuned:s smooth:s temperatures:s mean_temperatures:s "
    "diffusivities:s activation_energy:.3f activation_energy_error:.3f conductivity_300K:.3g "
    "flags:s completed_at:time flow_name:s",
    "learn": "formula:s labeller:s n_iterations:d labels:s force_mae:s energy_mae:s "
    "sampled_uncertainty:s stop_reason:s threshold_reached:s flags:s completed_at:time flow_name:s",
    "tensile": "formula:s n_atoms:d temperature:g strains:s fcc_percent:s fcc_onset_strain:g "
    "verdict:s completed_at:time flow_name:s",
    "jobs": "job_type:s formula:s n_atoms:d model:s completed_at:time job_name:s flow_name:s",
}
"""Table columns: ``key:format`` (``s`` text, ``time`` a timestamp, else a format spec)."""
