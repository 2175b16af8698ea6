"""The core's subcommands: ``gptff predict``, ``gptff relax`` and ``gptff models``.

Units: eV, Å, eV/Å inside; stress printed in GPa (ASE sign, positive = tensile).
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np

from gptff_core.cli.app import add_commands, arg, command
from gptff_core.cli.io import dump_json, max_force, read_structures, to_gpa, voigt_text
from gptff_core.errors import ExitCode, GPTFFInputError
from gptff_core.paths import check_output_file, write_atomically

PROGRESS_EVERY = 10
"""Steps between progress lines of ``gptff relax`` when stderr is not a terminal."""


def register(subparsers) -> None:
    """Add ``predict``, ``relax`` and ``models`` to the ``gptff`` parser."""
    add_commands(subparsers, cmd_predict, cmd_relax, cmd_models)


@command(
    "predict",
    "energy, forces and stress of every structure in the files (one batched evaluation)",
    arg("files", nargs="+", metavar="FILE", help="any file ASE reads (else pymatgen)"),
    arg("--format", dest="fmt", metavar="FMT", help="ASE format name (default: from the file)"),
    arg("--index", default="-1", help="frame(s): -1 (last, default), 0, ':' (all), '0:10:2'"),
    arg("--d3", action="store_true", help="add D3(BJ) dispersion for PBE (needs torch-dftd)"),
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
        dispersion=args.d3,
    )
    rows = []
    for k, (path, frame, atoms) in enumerate(records):
        energy, forces, stress = result.energies[k], result.forces[k], to_gpa(result.stresses[k])
        rows.append(
            dict(file=path, frame=frame, formula=atoms.get_chemical_formula(), n_atoms=len(atoms))
            | dict(energy_eV=float(energy), energy_per_atom_eV=float(energy) / len(atoms))
            | dict(max_force_eV_per_A=max_force(forces), forces_eV_per_A=forces.tolist())
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
            f"{row['max_force_eV_per_A']:>13.4f}  {voigt_text(stress)}"
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
    arg("--d3", action="store_true", help="add D3(BJ) dispersion for PBE (needs torch-dftd)"),
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
    from gptff_core.calculator import GPTFFCalculator
    from gptff_core.relax import RelaxInterrupted, relax

    ((_, atoms),) = read_structures(args.file, "-1")
    write = _structure_writer(args.output or f"{Path(args.file).stem}_relaxed.cif")
    if args.trajectory is not None:
        check_output_file(args.trajectory, "--trajectory")
    # checked before the work: a relaxation is never lost to the store
    store = None if args.store is None else relaxation_store(args.store or None)
    calculator = GPTFFCalculator(
        model=args.model,
        device=args.device,
        dtype=args.dtype,
        smooth=args.smooth,
        dispersion=args.d3,
    )
    try:
        result = relax(
            atoms,
            calculator,
            fmax=args.fmax,
            steps=args.steps,
            optimizer=args.optimizer,
            relax_cell=not args.fix_cell,
            trajectory=args.trajectory,
            progress=_relax_progress(args),
        )
    except RelaxInterrupted as stop:
        output = write(stop.atoms)
        print(
            f"gptff: interrupted after {stop.n_steps} steps; the current (unconverged) "
            f"structure was written to {output}",
            file=sys.stderr,
        )
        return ExitCode.INTERRUPTED
    output = write(result.atoms)
    summary = _relax_summary(args, atoms, result, output)
    if store is not None:
        summary["store_uuid"] = store.record(result, calculator, args.model)
    if args.json:
        dump_json(summary)
    else:
        print(_relax_report(args, summary, result))
    if not result.converged:
        print(
            f"gptff: warning: not converged within {args.steps} steps "
            f"(max|F| {result.max_force:.4f} eV/Å); the last structure was written to {output}",
            file=sys.stderr,
        )
        return ExitCode.FLAGGED
    return ExitCode.OK


def relaxation_store(location: str | None):
    """The store ``gptff relax --store`` records into, from the ``gptff.stores`` entry point
    ``relaxations`` (the workflows package); opened and checked now, before the work."""
    points = entry_points(group="gptff.stores", name="relaxations")
    try:
        open_store = next(iter(points)).load()
    except (StopIteration, ImportError) as exc:
        missing = getattr(exc, "name", None) or "gptff_flows"
        raise GPTFFInputError(
            f"--store needs the flows extra ({missing} is missing): pip install -e '.[flows]'"
        ) from None
    return open_store(location)


def _structure_writer(path: str):
    """``write(atoms) -> path``: replaces ``path`` in one step; the path and its file type are
    checked now, before the work."""
    import ase.io
    from ase.io.formats import filetype, ioformats

    output = check_output_file(path, "--output")
    try:
        out_format = filetype(output, read=False)
        if not ioformats[out_format].can_write:
            raise KeyError(out_format)
    except Exception:
        raise GPTFFInputError(
            f"--output {output}: ASE cannot write this file type; use e.g. .cif, .extxyz, .vasp"
        ) from None

    def write(structure) -> Path:
        write_atomically(output, lambda tmp: ase.io.write(tmp, structure, format=out_format))
        return output

    return write


def _relax_progress(args: argparse.Namespace):
    """A tqdm bar on a terminal, a line every :data:`PROGRESS_EVERY` steps otherwise, nothing
    with ``--json``."""
    if args.json:
        return False
    if sys.stderr.isatty():
        return True

    def report(step: int, energy: float, force: float) -> None:
        if step % PROGRESS_EVERY == 0:
            print(f"step {step:5d}  E {energy:.6f} eV  max|F| {force:.4f} eV/Å", file=sys.stderr)

    return report


def _relax_summary(args: argparse.Namespace, atoms, result, output: Path) -> dict:
    """The ``--json`` document of ``gptff relax`` (energies eV, forces eV/Å, stress GPa)."""
    n, stress = len(atoms), to_gpa(result.stress)
    summary = dict(file=args.file, formula=atoms.get_chemical_formula(), n_atoms=n)
    summary |= dict(optimizer=args.optimizer, fmax_eV_per_A=args.fmax, dispersion=args.d3)
    summary |= dict(cell_relaxed=result.cell_relaxed, initial_energy_eV=result.initial_energy)
    summary |= dict(initial_energy_per_atom_eV=result.initial_energy / n)
    summary |= dict(final_energy_eV=result.energy, final_energy_per_atom_eV=result.energy / n)
    summary |= dict(final_max_force_eV_per_A=result.max_force)
    summary |= dict(final_stress_GPa=None if stress is None else stress.tolist())
    summary |= dict(n_steps=result.n_steps, converged=result.converged)
    return summary | dict(output=str(output), trajectory=args.trajectory)


def _relax_report(args: argparse.Namespace, summary: dict, result) -> str:
    """The human summary of ``gptff relax``."""
    n = summary["n_atoms"]
    stress = None if summary["final_stress_GPa"] is None else np.array(summary["final_stress_GPa"])
    what = "positions + cell" if result.cell_relaxed else "positions"
    e0, e1 = result.initial_energy, result.energy
    return "\n".join(
        [
            f"{args.file}: {summary['formula']}, {n} atoms; {args.optimizer}, {what}",
            f"initial energy  {e0:14.6f} eV   {e0 / n:11.6f} eV/atom",
            f"final energy    {e1:14.6f} eV   {e1 / n:11.6f} eV/atom",
            f"final max|F|    {result.max_force:14.4f} eV/Å (fmax {args.fmax}"
            + (", applied to the cell filter's forces)" if result.cell_relaxed else ")"),
            f"final stress    {voigt_text(stress)} GPa (xx yy zz yz xz xy, + = tensile)"
            if stress is not None
            else "final stress    n/a (the cell has no volume)",
            f"steps           {result.n_steps:14d}    converged: "
            + ("yes" if result.converged else "no"),
            f"written         {summary['output']}",
        ]
    )


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
