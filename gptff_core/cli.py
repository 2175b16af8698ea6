"""The ``gptff`` command line: one program, one function per subcommand.

Every subcommand prints a short human summary, or one JSON document with ``--json``. Exit codes
are :class:`gptff_core.errors.ExitCode`: 0 success, 1 bad input (one ``gptff: error: ...`` line on
stderr, before any work), 2 usage error (argparse), 3 finished but a result is flagged (not
converged, a fit or temperature not to be trusted), 4 the work failed, 5 out of memory or disk,
130 interrupted. ``--debug`` (or ``GPTFF_DEBUG=1``) prints the traceback of an error too.
Units: eV, Å, eV/Å inside; stress printed in GPa.

To add a subcommand, write ``def cmd_name(args) -> int`` decorated with :func:`command`, in this
module or in one of :data:`COMMAND_MODULES` (imported when the parser is built; keep their
top-level imports light and import heavy dependencies inside the command functions).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import json
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from ase import units

from gptff_core.errors import ComputationError, ExitCode, GPTFFInputError
from gptff_core.paths import check_output_file, write_atomically
from gptff_core.pretrained import DEFAULT_MODEL

PROGRESS_EVERY = 10
"""Steps between progress lines of ``gptff relax`` when stderr is not a terminal."""


def arg(*flags: str, **kwargs) -> tuple[tuple[str, ...], dict]:
    """One ``add_argument`` call, declared next to its subcommand."""
    return flags, kwargs


_COMMANDS: list[tuple[str, str, dict, tuple, Callable[[argparse.Namespace], int]]] = []

COMMAND_MODULES = (
    "gptff_core.training.cli",
    "gptff_flows.cli",
    "gptff_flows.cli_screening",
    "gptff_flows.cli_finetune_md",
)
"""Modules whose ``@command`` functions join ``gptff`` (training, and the jobflow workflows)."""


def command(name: str, help: str, *arguments, epilog: str | None = None, model_options=True):
    """Register ``func(args) -> exit code`` as subcommand ``name`` with its ``arg(...)``s."""

    def register(func: Callable[[argparse.Namespace], int]) -> Callable:
        options = dict(epilog=epilog, model_options=model_options)
        _COMMANDS.append((name, help, options, arguments, func))
        return func

    return register


def build_parser() -> argparse.ArgumentParser:
    for module in COMMAND_MODULES:
        importlib.import_module(module)
    parser = argparse.ArgumentParser(prog="gptff", description="GPTFF machine-learned force field")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    model = argparse.ArgumentParser(add_help=False)
    group = model.add_argument_group("model")
    group.add_argument(
        "--model", default=DEFAULT_MODEL, help=f"registry name or checkpoint path ({DEFAULT_MODEL})"
    )
    group.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (%(default)s)")
    group.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    group.add_argument("--smooth", action="store_true", default=None, help="C² cutoff envelopes")
    for name, help, options, arguments, run in _COMMANDS:
        sub = subparsers.add_parser(
            name,
            help=help,
            description=help,
            epilog=options["epilog"],
            parents=[model] if options["model_options"] else [],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        for flags, kwargs in arguments:
            sub.add_argument(*flags, **kwargs)
        sub.add_argument("--json", action="store_true", help="print one JSON document")
        sub.add_argument(
            "--debug", action="store_true", help="on an error, print the traceback too"
        )
        sub.set_defaults(run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``gptff`` with ``argv`` (default: ``sys.argv[1:]``) and return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else ExitCode.USAGE
    debug = args.debug or os.environ.get("GPTFF_DEBUG", "") not in ("", "0")
    return report_input_errors("gptff", lambda: args.run(args), debug=debug)


def report_input_errors(program: str, run: Callable[[], int], debug: bool = False) -> int:
    """``run()``'s exit code; an exception becomes one line ``<program>: error: ...`` on stderr
    and its :class:`ExitCode` (see :func:`classify_error`); Ctrl-C gives 130. ``debug`` prints
    the traceback as well."""
    try:
        return int(run())
    except KeyboardInterrupt:
        print(f"{program}: interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except Exception as exc:
        if debug:
            traceback.print_exc()
        code, message = classify_error(exc)
        print(f"{program}: error: {message}", file=sys.stderr)
        return code


_NO_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def classify_error(exc: BaseException) -> tuple[ExitCode, str]:
    """The exit code of ``exc`` and a one-line message that says what failed and what to do."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, GPTFFInputError):
        return ExitCode.BAD_INPUT, text
    if isinstance(exc, OSError) and exc.errno in _NO_SPACE:
        return ExitCode.NO_RESOURCES, (
            f"out of disk space ({text}); free some space and rerun (results already stored "
            "are kept)"
        )
    if isinstance(exc, OSError):  # a missing or unreadable file, a bad path
        return ExitCode.BAD_INPUT, text
    if _is_out_of_memory(exc):
        return ExitCode.NO_RESOURCES, (
            "out of memory; evaluate fewer or smaller structures at once (smaller batches or "
            "supercells), or use a machine with more memory"
        )
    if isinstance(exc, ComputationError):
        return ExitCode.FAILED, text
    return ExitCode.FAILED, (
        f"internal error ({type(exc).__name__}: {text}); rerun with --debug for the traceback "
        "and report it"
    )


def _is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    name = type(exc).__name__
    text = str(exc)
    return name == "OutOfMemoryError" or (
        isinstance(exc, RuntimeError)
        and ("can't allocate memory" in text or "out of memory" in text.lower())
    )


# ---------------------------------------------------------------- helpers


def _parse_index(spec: str) -> int | slice:
    """``"-1"``, ``"3"``, ``":"``, ``"2:"``, ``"::2"`` → int or slice (frame numbers)."""
    try:
        if ":" not in spec:
            return int(spec)
        parts = spec.split(":")
        if len(parts) > 3:
            raise ValueError(spec)
        return slice(*(int(p) if p.strip() else None for p in parts))
    except ValueError:
        raise GPTFFInputError(
            f"--index {spec!r} is not a frame number or a slice such as ':' or '0:10:2'"
        ) from None


def read_structures(path: str, index: str = "-1", fmt: str | None = None) -> list:
    """Checked ``(frame, atoms)`` pairs that ``index`` selects in ``path`` (ASE, else pymatgen).

    Raises GPTFFInputError when the file is missing or unreadable, has no such frame, or holds a
    structure GPTFF cannot evaluate (named by file and frame).
    """
    import ase.io

    from gptff_core.validation import as_atoms, check_structure

    if not Path(path).is_file():
        raise GPTFFInputError(
            f"{path}: {'is a directory' if Path(path).is_dir() else 'no such file'}"
        )
    selector = _parse_index(index)
    try:
        frames = ase.io.read(path, index=":", format=fmt)
    except Exception as ase_error:  # ASE raises many types for unreadable files
        if fmt is not None:
            raise GPTFFInputError(f"cannot read {path} as {fmt!r}: {ase_error}") from ase_error
        try:
            from pymatgen.core import Structure

            frames = [Structure.from_file(path)]
        except Exception as pmg_error:
            raise GPTFFInputError(
                f"cannot read {path}: ASE: {str(ase_error) or type(ase_error).__name__}; "
                f"pymatgen: {str(pmg_error) or type(pmg_error).__name__}"
            ) from pmg_error
    numbers = range(len(frames))
    try:
        chosen = list(numbers[selector]) if isinstance(selector, slice) else [numbers[selector]]
    except (IndexError, ValueError):  # out of range, or a zero step
        chosen = []
    if not chosen:
        raise GPTFFInputError(f"{path}: --index {index} selects no frame ({len(frames)} frames)")
    selected = [(i, as_atoms(frames[i])) for i in chosen]
    for i, atoms in selected:
        check_structure(atoms, label=path if len(frames) == 1 else f"{path} frame {i}")
    return selected


def _max_force(forces: np.ndarray) -> float:
    return float(np.linalg.norm(forces, axis=1).max()) if len(forces) else 0.0


def _gpa(stress: np.ndarray | None) -> np.ndarray | None:
    """(3, 3) eV/Å³ → GPa (ASE sign, positive = tensile)."""
    return None if stress is None else np.asarray(stress) / units.GPa


def _voigt_text(stress_gpa: np.ndarray | None) -> str:
    if stress_gpa is None:
        return "n/a"
    s = stress_gpa
    voigt = (s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1])
    return " ".join(f"{round(v, 3) + 0.0:8.3f}" for v in voigt)  # + 0.0: no "-0.000"


def dump_json(payload: object) -> None:
    """Print ``payload`` as strict JSON; a NaN or infinity anywhere is refused (bare ``NaN`` is
    not JSON), naming where it is."""
    try:
        text = json.dumps(payload, indent=2, allow_nan=False)
    except ValueError:
        where = _first_non_finite(payload, "result") or "a result"
        raise ComputationError(
            f"{where} is not finite (NaN or infinity); nothing was printed. The checkpoint or "
            "the structure is probably damaged"
        ) from None
    print(text)


def _first_non_finite(value: object, path: str) -> str | None:
    """The path (``result[0].energy_eV``) of the first NaN or infinity in ``value``."""
    if isinstance(value, float):
        return None if np.isfinite(value) else path
    if isinstance(value, dict):
        items = ((f"{path}.{k}", v) for k, v in value.items())
    elif isinstance(value, list | tuple):
        items = ((f"{path}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for where, item in items:
        if (found := _first_non_finite(item, where)) is not None:
            return found
    return None


# ---------------------------------------------------------------- subcommands


@command(
    "predict",
    "energy, forces and stress of every structure in the files (one batched evaluation)",
    arg("files", nargs="+", metavar="FILE", help="any file ASE reads (else pymatgen)"),
    arg("--format", dest="fmt", metavar="FMT", help="ASE format name (default: from the file)"),
    arg("--index", default="-1", help="frame(s): -1 (last, default), 0, ':' (all), '0:10:2'"),
    epilog="Stress in GPa, Voigt order xx yy zz yz xz xy, ASE sign (positive = tensile).",
)
def cmd_predict(args: argparse.Namespace) -> int:
    from gptff_core.predict import predict

    records = []
    for path in args.files:
        records += [(path, i, atoms) for i, atoms in read_structures(path, args.index, args.fmt)]
    result = predict(
        [atoms for _, _, atoms in records],
        model=args.model,
        device=args.device,
        dtype=args.dtype,
        smooth=args.smooth,
        progress=False if args.json else None,
    )
    rows = []
    for k, (path, frame, atoms) in enumerate(records):
        energy, forces, stress = result.energies[k], result.forces[k], _gpa(result.stresses[k])
        rows.append(
            dict(file=path, frame=frame, formula=atoms.get_chemical_formula(), n_atoms=len(atoms))
            | dict(energy_eV=float(energy), energy_per_atom_eV=float(energy) / len(atoms))
            | dict(max_force_eV_per_A=_max_force(forces), forces_eV_per_A=forces.tolist())
            | dict(stress_GPa=None if stress is None else stress.tolist())
        )
    if args.json:
        dump_json(rows)
        return 0
    w = max(len("file"), *(len(r["file"]) for r in rows))
    f = max(len("formula"), *(len(r["formula"]) for r in rows))
    print(
        f"{'file':<{w}} {'frame':>5} {'formula':<{f}} {'atoms':>5} {'E (eV)':>13} "
        f"{'E/atom (eV)':>12} {'max|F| (eV/Å)':>13}  stress (GPa) xx yy zz yz xz xy"
    )
    for row in rows:
        stress = None if row["stress_GPa"] is None else np.array(row["stress_GPa"])
        print(
            f"{row['file']:<{w}} {row['frame']:>5} {row['formula']:<{f}} {row['n_atoms']:>5} "
            f"{row['energy_eV']:>13.5f} {row['energy_per_atom_eV']:>12.5f} "
            f"{row['max_force_eV_per_A']:>13.4f}  {_voigt_text(stress)}"
        )
    return 0


@command(
    "relax",
    "relax atomic positions and (for a 3D periodic structure) the cell",
    arg("file", metavar="FILE", help="structure file (last frame is used)"),
    arg("--fmax", type=float, default=0.05, help="eV/Å, force threshold (%(default)s)"),
    arg("--steps", type=int, default=500, help="maximum optimizer steps (%(default)s)"),
    arg("--optimizer", default="FIRE", type=str.upper, choices=["FIRE", "BFGS"]),
    arg("--fix-cell", action="store_true", help="relax positions only"),
    arg("--output", metavar="PATH", help="relaxed structure (default ./<stem>_relaxed.cif)"),
    arg("--trajectory", metavar="PATH", help="write every step to this ASE .traj file"),
    arg(
        "--store",
        nargs="?",
        const="",
        metavar="LOCATION",
        help="also record the result in a job store (a directory, mongodb:// URI or 'jobflow'; "
        "no value: the default store) for `gptff results`; needs the flows extra",
    ),
    epilog=(
        "Exit codes: 0 converged; 1 bad input; 2 usage error; 3 not converged within --steps\n"
        "(the last structure is written anyway); 5 out of memory; 130 interrupted by Ctrl-C\n"
        "(current structure written). The output file is replaced in one step.\n"
        "With the cell free, fmax also bounds the FrechetCellFilter's cell forces\n"
        "(stress × volume / number of atoms), so a small residual stress may remain."
    ),
)
def cmd_relax(args: argparse.Namespace) -> int:
    import ase.io
    from ase.io.formats import filetype, ioformats

    from gptff_core.calculator import GPTFFCalculator
    from gptff_core.relax import RelaxInterrupted, relax

    ((_, atoms),) = read_structures(args.file, "-1")
    output = check_output_file(args.output or f"{Path(args.file).stem}_relaxed.cif", "--output")
    try:
        out_format = filetype(output, read=False)
        if not ioformats[out_format].can_write:
            raise KeyError(out_format)
    except Exception:
        raise GPTFFInputError(
            f"--output {output}: ASE cannot write this file type; use e.g. .cif, .extxyz, .vasp"
        ) from None
    if args.trajectory is not None:
        check_output_file(args.trajectory, "--trajectory")
    store = None
    if args.store is not None:  # checked before the work: a relaxation is never lost to it
        from gptff_flows.cli import open_store

        store = open_store(args.store or None)

    def write(structure) -> None:
        write_atomically(output, lambda path: ase.io.write(path, structure, format=out_format))

    calculator = GPTFFCalculator(
        model=args.model, device=args.device, dtype=args.dtype, smooth=args.smooth
    )

    def report(step: int, energy: float, force: float) -> None:
        if step % PROGRESS_EVERY == 0:
            print(f"step {step:5d}  E {energy:.6f} eV  max|F| {force:.4f} eV/Å", file=sys.stderr)

    progress = False if args.json else (True if sys.stderr.isatty() else report)
    try:
        result = relax(
            atoms,
            calculator,
            fmax=args.fmax,
            steps=args.steps,
            optimizer=args.optimizer,
            relax_cell=not args.fix_cell,
            trajectory=args.trajectory,
            progress=progress,
        )
    except RelaxInterrupted as stop:
        write(stop.atoms)
        print(
            f"gptff: interrupted after {stop.n_steps} steps; the current (unconverged) "
            f"structure was written to {output}",
            file=sys.stderr,
        )
        return ExitCode.INTERRUPTED
    write(result.atoms)
    n, stress = len(atoms), _gpa(result.stress)
    summary = dict(file=args.file, formula=atoms.get_chemical_formula(), n_atoms=n)
    summary |= dict(optimizer=args.optimizer, fmax_eV_per_A=args.fmax)
    summary |= dict(cell_relaxed=result.cell_relaxed, initial_energy_eV=result.initial_energy)
    summary |= dict(initial_energy_per_atom_eV=result.initial_energy / n)
    summary |= dict(final_energy_eV=result.energy, final_energy_per_atom_eV=result.energy / n)
    summary |= dict(final_max_force_eV_per_A=result.max_force)
    summary |= dict(final_stress_GPa=None if stress is None else stress.tolist())
    summary |= dict(n_steps=result.n_steps, converged=result.converged)
    summary |= dict(output=str(output), trajectory=args.trajectory)
    if store is not None:
        from gptff_flows.cli import store_relaxation

        summary["store_uuid"] = store_relaxation(store, result, calculator, args.model)
    if args.json:
        dump_json(summary)
    else:
        what = "positions + cell" if result.cell_relaxed else "positions"
        e0, e1 = result.initial_energy, result.energy
        lines = [
            f"{args.file}: {summary['formula']}, {n} atoms; {args.optimizer}, {what}",
            f"initial energy  {e0:14.6f} eV   {e0 / n:11.6f} eV/atom",
            f"final energy    {e1:14.6f} eV   {e1 / n:11.6f} eV/atom",
            f"final max|F|    {result.max_force:14.4f} eV/Å (fmax {args.fmax}"
            + (", applied to the cell filter's forces)" if result.cell_relaxed else ")"),
            f"final stress    {_voigt_text(stress)} GPa (xx yy zz yz xz xy, + = tensile)"
            if stress is not None
            else "final stress    n/a (the cell has no volume)",
            f"steps           {result.n_steps:14d}    converged: "
            + ("yes" if result.converged else "no"),
            f"written         {output}",
        ]
        print("\n".join(lines))
    if not result.converged:
        print(
            f"gptff: warning: not converged within {args.steps} steps "
            f"(max|F| {result.max_force:.4f} eV/Å); the last structure was written to {output}",
            file=sys.stderr,
        )
        return ExitCode.FLAGGED
    return ExitCode.OK


@command(
    "models",
    "the published checkpoints: where each file is found and whether its sha256 matches",
    arg("--fetch", nargs="*", metavar="NAME", help="download missing models (default: all)"),
    arg("--verify", action="store_true", help="exit 1 unless every model is present and intact"),
    model_options=False,
)
def cmd_models(args: argparse.Namespace) -> int:
    from gptff_core.pretrained import fetch_models, list_models

    if args.fetch is not None:
        fetch_models(args.fetch or None)
    rows = []
    for entry in list_models():
        status, _, detail = entry["status"].partition(" ")
        rows.append({**entry, "status": status, "detail": detail.strip("()") or None})
    if args.json:
        dump_json(rows)
    else:
        print(f"{'name':<10} {'file':<14} {'status':<10} {'sha256':<14} found at")
        for row in rows:
            print(
                f"{row['name']:<10} {row['filename']:<14} {row['status']:<10} "
                f"{row['sha256'][:12]:<14} {row['path'] or '-'}"
            )
    if args.verify and any(row["status"] != "ok" for row in rows):
        bad = ", ".join(f"{r['name']} ({r['status']})" for r in rows if r["status"] != "ok")
        print(f"gptff: error: not every model is available and intact: {bad}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
