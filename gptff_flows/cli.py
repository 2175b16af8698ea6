"""``gptff eos`` and ``gptff results``: run EOS flows into a job store, and query the store.

Imported by :func:`gptff_core.cli.build_parser`; jobflow, atomate2 and maggma are imported inside
the command functions so ``gptff --help`` stays fast and works without the flows extra.
Units printed: V0 Å³/atom, E0 eV/atom, B0 GPa.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import sys
from pathlib import Path

from gptff_core.cli import arg, command, dump_json, read_structures
from gptff_core.errors import GPTFFInputError

STORE_HELP = (
    "job store: a directory, a mongodb:// URI, or 'jobflow' (jobflow's settings file); "
    "default $GPTFF_STORE, else the embedded store in $GPTFF_STORE_DIR or "
    "~/.local/share/gptff/store"
)


def open_store(location: str | None, *, create: bool = True):
    """The job store at ``location`` (see ``STORE_HELP``), checked before any work: reachable,
    writable and intact; ``create=False`` (read-only commands) refuses a store that does not
    exist instead of creating it."""
    try:
        from gptff_flows.stores import open_job_store
    except ImportError as exc:
        raise GPTFFInputError(
            f"this command needs the flows extra ({exc.name} is missing): pip install -e '.[flows]'"
        ) from None
    return open_job_store(location, create=create)


def store_relaxation(store, result, calculator, model: str) -> str:
    """Record a ``gptff relax`` result (a :class:`gptff_core.relax` result) in ``store``
    (opened with :func:`open_store` before the relaxation)."""
    from gptff_flows.run import record_relaxation

    return record_relaxation(
        store,
        result.atoms,
        energy=result.energy,
        converged=result.converged,
        n_steps=result.n_steps,
        calculator=calculator,
        model=model,
    )


@command(
    "eos",
    "equation of state of each structure (relax, strain, fit) run as a jobflow flow into a store",
    arg("files", nargs="+", metavar="FILE", help="structure files (last frame of each is used)"),
    arg("--store", metavar="LOCATION", help=STORE_HELP),
    arg("--eos", default="birch_murnaghan", help="EOS form reported (%(default)s)"),
    arg("--strain", type=float, default=0.05, help="± linear strain of the points (%(default)s)"),
    arg("--points", type=int, default=6, help="strained cells per structure (%(default)s)"),
    arg("--fmax", type=float, default=0.05, help="eV/Å, relaxation threshold (%(default)s)"),
    arg("--plot-dir", metavar="DIR", help="PNG plots here (default: <store dir>/plots)"),
    arg("--no-plot", action="store_true", help="write no plots"),
    epilog=(
        "The structure is relaxed (cell free), strained isotropically, each strained cell relaxed\n"
        "at fixed cell, and the energies fitted. V0 in Å³/atom, E0 in eV/atom, B0 in GPa.\n"
        "Results are written to the store job by job; `gptff results` finds them later.\n"
        "Each fit carries a verdict: ok, flagged (poor_fit, jump_at_cutoff, energy_jump,\n"
        "b0_implausible, b1_implausible, e0_below_points; a warning line says why) or refused\n"
        "(no_minimum, fit_failed: no V0 inside the points; the points stay stored). A structure\n"
        "that is not a 3D bulk (a molecule, a slab with vacuum, isolated atoms) is refused\n"
        "before any work.\n"
        "Exit codes: 0 all fits ok; 1 bad input (nothing run); 3 a fit is flagged; 4 a fit was\n"
        "refused or a flow failed (the others still ran and are stored)."
    ),
)
def cmd_eos(args: argparse.Namespace) -> int:
    if not 0 < args.strain < 0.3:
        raise GPTFFInputError(f"--strain must be between 0 and 0.3, got {args.strain}")
    if args.points < 3:
        raise GPTFFInputError(f"--points must be at least 3, got {args.points}")
    inputs = [(path, atoms) for path in args.files for _, atoms in read_structures(path, "-1")]
    try:
        from gptff_flows.eos_geometry import check_bulk
    except ImportError as exc:
        raise GPTFFInputError(
            f"this command needs the flows extra ({exc.name} is missing): pip install -e '.[flows]'"
        ) from None
    for path, atoms in inputs:  # before any work: a slab or a molecule has no bulk EOS
        check_bulk(atoms, label=path)
    store = open_store(args.store)
    from pymatgen.io.ase import AseAtomsAdaptor

    from gptff_core.errors import ComputationError, ExitCode
    from gptff_core.paths import check_output_dir
    from gptff_flows.flows.eos import GPTFFEosMaker, run_eos_flow
    from gptff_flows.stores import describe_store, store_dir

    plot_dir = None
    if not args.no_plot:
        home = store_dir(store)
        plot_dir = args.plot_dir or (str(home / "plots") if home is not None else None)
        if plot_dir is not None:
            plot_dir = str(check_output_dir(plot_dir, "--plot-dir"))
    maker = GPTFFEosMaker(
        model=args.model,
        dtype=args.dtype,
        smooth=args.smooth,
        device=args.device,
        eos=args.eos,
        linear_strain=(-args.strain, args.strain),
        number_of_frames=args.points,
        relax_fmax=args.fmax,
        plot_dir=plot_dir,
    )
    rows, failed = [], []
    for k, (path, atoms) in enumerate(inputs, start=1):
        if not args.json:
            print(
                f"[{k}/{len(inputs)}] {path}: EOS of {atoms.get_chemical_formula()}",
                file=sys.stderr,
            )
        named = dataclasses.replace(maker, name=f"{maker.name} {Path(path).name}")
        flow = named.make(AseAtomsAdaptor.get_structure(atoms))
        try:
            doc = run_eos_flow(flow, store)
        except ComputationError as exc:
            failed.append(path)
            print(f"gptff: error: EOS of {path} failed: {exc}", file=sys.stderr)
            continue
        rows.append(_eos_row(path, doc, flow.output.uuid))
    if args.json:
        dump_json(rows)
    else:
        table = [row | {"flags": ",".join(row["flags"])} for row in rows]
        _print_table(table, _COLUMNS["eos_run"])
        print(f"stored in {describe_store(store)}")
        if plot_dir is not None and rows:
            print(f"plots in {plot_dir}")
    for row in rows:
        if row["verdict"] != "ok":
            what = "no EOS fit" if row["verdict"] == "refused" else "EOS fit flagged"
            print(
                f"gptff: warning: {row['file']}: {what} ({', '.join(row['flags'])}): "
                + "; ".join(row["flag_reasons"]),
                file=sys.stderr,
            )
    if failed or any(row["verdict"] == "refused" for row in rows):
        return ExitCode.FAILED
    return ExitCode.FLAGGED if any(row["verdict"] == "flagged" for row in rows) else ExitCode.OK


def _eos_row(path: str, doc, uuid: str) -> dict:
    """One ``gptff eos`` result: the fit (None values when refused) and its verdict."""
    fit = doc.fit.model_dump() if doc.fit is not None else {}
    row = dict(file=path, formula=doc.formula_pretty, n_atoms=doc.nsites, eos=fit.get("eos"))
    for key in ("v0_per_atom", "e0_per_atom", "b0", "b1", "rms_residual_meV_per_atom"):
        row[key] = fit.get(key)
    for key in ("r_squared", "step_misfit_meV_per_atom", "step_volumes_per_atom"):
        row[key] = fit.get(key)
    row |= dict(verdict=doc.verdict, flags=doc.flags, flag_reasons=doc.flag_reasons)
    return row | dict(plot=doc.plot_path, uuid=uuid)


@command(
    "results",
    "query the job store: EOS fits and relaxations by formula, chemical system, name, date",
    arg("what", nargs="?", choices=["screen"], help="'screen': ranked screening candidates"),
    arg("--store", metavar="LOCATION", help=STORE_HELP),
    arg(
        "--kind",
        choices=["all", "eos", "relax", "finetune-md", "tensile", "jobs"],
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
        from gptff_flows.cli_screening import results_screen

        return results_screen(args)
    if args.csv and args.kind == "all":
        raise GPTFFInputError(
            "--csv prints one table: add --kind eos, relax, finetune-md, tensile or jobs"
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
        from gptff_flows.finetune_md_queries import finetune_md_results

        tables["finetune-md"] = finetune_md_results(store, **filters)
    if args.kind in ("all", "tensile"):
        from gptff_flows.tensile_queries import tensile_results

        tables["tensile"] = tensile_results(store, **filters)
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
            _print_table(rows, _COLUMNS[kind])
    return 0


_TITLES = {
    "eos": "EOS fits",
    "relax": "relaxations",
    "finetune-md": "fine-tune → MD → diffusion",
    "tensile": "tensile strain MD",
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
    "tensile": "formula:s n_atoms:d temperature:g strains:s fcc_percent:s fcc_onset_strain:g "
    "verdict:s completed_at:time flow_name:s",
    "jobs": "job_type:s formula:s n_atoms:d model:s completed_at:time job_name:s flow_name:s",
    "eos_run": "file:s formula:s n_atoms:d v0_per_atom:.4f e0_per_atom:.5f b0:.2f b1:.2f "
    "rms_residual_meV_per_atom:.3f r_squared:.5f verdict:s flags:s",
}
"""Table columns: ``key:format`` (``s`` text, ``time`` a timestamp, else a format spec)."""
_HEADERS = {
    "v0_per_atom": "V0 (Å³/atom)",
    "e0_per_atom": "E0 (eV/atom)",
    "b0": "B0 (GPa)",
    "b1": "B'",
    "rms_residual_meV_per_atom": "RMS (meV/atom)",
    "r_squared": "R²",
    "n_atoms": "atoms",
    "energy_per_atom_eV": "E/atom (eV)",
    "volume_per_atom": "V/atom (Å³)",
    "completed_at": "completed",
    "job_name": "job",
    "flow_name": "flow",
    "job_type": "type",
    "e_form_per_atom": "E_form (eV/atom)",
    "e_above_hull": "E_hull (eV/atom)",
    "n_steps": "steps",
    "activation_energy": "Ea (eV)",
    "activation_energy_error": "±Ea (eV)",
    "conductivity_300K": "σ300K (mS/cm)",
    "temperatures": "T (K)",
    "mean_temperatures": "<T> (K)",
    "diffusivities": "D (cm²/s)",
    "temperature": "T (K)",
    "strains": "strain (%)",
    "fcc_percent": "fcc (%)",
    "fcc_onset_strain": "fcc>10% at",
}


def _cell(value, spec: str) -> str:
    if value is None:
        return "-"
    if spec == "time":
        return str(value)[:19].replace("T", " ")
    return str(value) if spec == "s" else format(value, spec)


def _print_table(rows: list[dict], column_spec: str) -> None:
    """Print ``rows`` as aligned columns (``column_spec``: see :data:`_COLUMNS`)."""
    columns = [item.split(":", 1) for item in column_spec.split()]
    if not rows:
        print("  (none)")
        return
    cells = [[_cell(row.get(key), spec) for key, spec in columns] for row in rows]
    titles = [_HEADERS.get(key, key) for key, _ in columns]
    widths = [max(len(t), *(len(c[i]) for c in cells)) for i, t in enumerate(titles)]
    numeric = [spec not in ("s", "time") for _, spec in columns]

    def line(values: list[str]) -> str:
        parts = [
            v.rjust(w) if n else v.ljust(w) for v, w, n in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    print(line(titles))
    for row in cells:
        print(line(row))
