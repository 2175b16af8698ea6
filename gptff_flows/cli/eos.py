"""``gptff eos``: equation of state of each structure, run as a jobflow flow into a job store.

Units printed: V0 Å³/atom, E0 eV/atom, B0 GPa.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from gptff_core.cli import add_commands, arg, command, dump_json, read_structures
from gptff_core.errors import GPTFFInputError
from gptff_flows.cli.common import D3_HELP, STORE_HELP, open_store, print_table

EOS_RUN_COLUMNS = (
    "file:s formula:s n_atoms:d v0_per_atom:.4f e0_per_atom:.5f b0:.2f b1:.2f "
    "rms_residual_meV_per_atom:.3f r_squared:.5f verdict:s flags:s"
)
"""Columns of the ``gptff eos`` table (see :func:`~gptff_flows.cli.common.print_table`)."""


def register(subparsers) -> None:
    """Add ``gptff eos`` to the ``gptff`` parser."""
    add_commands(subparsers, cmd_eos)


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
    arg("--d3", action="store_true", help=D3_HELP),
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
    """Run the EOS flow of each structure into the store; print the fits and their verdicts."""
    _check_arguments(args)
    inputs = _read_bulk_structures(args.files)
    store = open_store(args.store)
    plot_dir = _plot_dir(args, store)
    maker = _eos_maker(args, plot_dir)
    rows, failed = _run_each(maker, inputs, store, quiet=args.json)
    _report(args, rows, store, plot_dir)
    return _exit_code(rows, failed)


def _check_arguments(args: argparse.Namespace) -> None:
    """Refuse a linear strain outside (0, 0.3) (dimensionless) or fewer than 3 points."""
    if not 0 < args.strain < 0.3:
        raise GPTFFInputError(f"--strain must be between 0 and 0.3, got {args.strain}")
    if args.points < 3:
        raise GPTFFInputError(f"--points must be at least 3, got {args.points}")


def _read_bulk_structures(files: list[str]) -> list[tuple[str, object]]:
    """``(path, ASE Atoms)`` of the last frame of each file, every one checked to be a 3D bulk
    before any work (a slab or a molecule has no bulk EOS)."""
    inputs = [(path, atoms) for path in files for _, atoms in read_structures(path, "-1")]
    try:
        from gptff_flows.analysis.eos_geometry import check_bulk
    except ImportError as exc:
        raise GPTFFInputError(
            f"this command needs the flows extra ({exc.name} is missing): pip install -e '.[flows]'"
        ) from None
    for path, atoms in inputs:
        check_bulk(atoms, label=path)
    return inputs


def _plot_dir(args: argparse.Namespace, store) -> str | None:
    """Where the plots go: ``--plot-dir``, else ``<store dir>/plots`` for an embedded store;
    ``None`` with ``--no-plot`` or a store without a directory. Checked writable."""
    from gptff_core.paths import check_output_dir
    from gptff_flows.stores import store_dir

    if args.no_plot:
        return None
    home = store_dir(store)
    plot_dir = args.plot_dir or (str(home / "plots") if home is not None else None)
    return str(check_output_dir(plot_dir, "--plot-dir")) if plot_dir is not None else None


def _eos_maker(args: argparse.Namespace, plot_dir: str | None):
    """The :class:`~gptff_flows.flows.eos.GPTFFEosMaker` of the command line's options."""
    from gptff_flows.flows.eos import GPTFFEosMaker

    return GPTFFEosMaker(
        model=args.model,
        dtype=args.dtype,
        smooth=args.smooth,
        device=args.device,
        dispersion=args.d3,
        eos=args.eos,
        linear_strain=(-args.strain, args.strain),
        number_of_frames=args.points,
        relax_fmax=args.fmax,
        plot_dir=plot_dir,
    )


def _run_each(maker, inputs: list, store, quiet: bool) -> tuple[list[dict], list[str]]:
    """Run the EOS flow of each ``(path, atoms)`` into ``store``: ``(rows, failed paths)``. A
    failed flow is reported on stderr and the next one runs; progress lines unless ``quiet``."""
    from pymatgen.io.ase import AseAtomsAdaptor

    from gptff_core.errors import ComputationError
    from gptff_flows.flows.eos import run_eos_flow

    rows, failed = [], []
    for k, (path, atoms) in enumerate(inputs, start=1):
        if not quiet:
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
    return rows, failed


def _report(args: argparse.Namespace, rows: list[dict], store, plot_dir: str | None) -> None:
    """The results as JSON or a table (V0 Å³/atom, E0 eV/atom, B0 GPa), then one warning line
    on stderr for each fit that is not ok."""
    from gptff_flows.stores import describe_store

    if args.json:
        dump_json(rows)
    else:
        table = [row | {"flags": ",".join(row["flags"])} for row in rows]
        print_table(table, EOS_RUN_COLUMNS)
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


def _exit_code(rows: list[dict], failed: list[str]) -> int:
    """4 when a flow failed or a fit was refused, 3 when a fit is flagged, else 0."""
    from gptff_core.errors import ExitCode

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
