"""``gptff md``: molecular dynamics of one structure with ASE's integrators and the GPTFF
calculator, its frames appended to an ASE ``.traj`` file as it runs, and a verdict at the end.

Every option is checked, and the output path too, before the model is loaded. The trajectory is
written frame by frame (a crash or a kill keeps the frames already written); an existing file is
refused unless ``--overwrite`` (start again) or ``--resume`` (continue from its last frame).

The integrators, the recorder and the verdict are :mod:`gptff_core.md`'s; a flag in the verdict
(temperature not reached, conserved-energy drift) gives exit code 3 (:attr:`ExitCode.FLAGGED`).

Units: time fs (ps in the progress lines), temperature K, pressure GPa, energies eV.
"""

from __future__ import annotations

import argparse
import math
import secrets
import sys
from pathlib import Path

from gptff_core.cli.app import add_commands, arg, command
from gptff_core.cli.io import dump_json, read_structures
from gptff_core.errors import ExitCode, GPTFFInputError
from gptff_core.md import (
    MAX_DRIFT_MEV_PER_ATOM_PS,
    STEP_KEY,
    THERMOSTATS,
    MDRecorder,
    MDSettings,
    make_dynamics,
    md_verdict,
    set_initial_momenta,
)
from gptff_core.paths import check_output_dir, check_output_file


def register(subparsers) -> None:
    """Add ``md`` to the ``gptff`` parser."""
    add_commands(subparsers, cmd_md)


EPILOG = """\
Integrators (ASE): nve velocity-verlet; nvt nose-hoover (Nosé–Hoover chain, default) or langevin;
npt isotropic-mtk (MTK barostat, cubic scaling of the cell, default), mtk (full cell) or
berendsen. Defaults: --tdamp 100 × timestep, --pdamp 1000 × timestep, --friction 0.01 /fs,
--compressibility 0.01 /GPa (Berendsen only; a solid with a bulk modulus of ~100 GPa).
Velocities: Maxwell–Boltzmann at --temperature, no net momentum, scaled to that temperature.
Progress every --interval steps on stderr: step, time (ps), T (K), potential and total energy
(eV/atom), pressure (GPa, kinetic term included; n/a without a 3D cell).
Exit codes: 0 finished; 1 bad input (nothing run); 2 usage error; 3 finished but flagged
(temperature not reached; NVE: energy drift above {drift:g} meV/atom/ps or jumps); 4 failed (e.g. a
non-finite energy; the frames written are kept); 5 out of memory; 130 interrupted (frames kept).
--resume continues from the last frame's positions, momenta and cell for the remaining steps
(the thermostat's own variables restart).
Several FILEs (or --batch): one batched TorchSim run on --device, NVE velocity-verlet or NVT
langevin (default there), structures all 3D periodic or none; FILE number i (from 0) starts from
--seed + i; one <stem>_md.traj per FILE (in --trajectory-dir); no --resume."""


@command(
    "md",
    "molecular dynamics (NVE, NVT, NPT) of one structure, or of several as one batched TorchSim "
    "run (NVE, NVT Langevin), frames written to ASE .traj files",
    arg("files", metavar="FILE", nargs="+", help="structure file(s) (last frame of each is used)"),
    arg("--batch", action="store_true", help="run through TorchSim even for one FILE"),
    arg("--ensemble", default="nvt", type=str.lower, choices=list(THERMOSTATS)),
    arg("--temperature", type=float, metavar="K", help="K, target (NVT/NPT), initial (NVE)"),
    arg("--steps", type=int, required=True, metavar="N", help="number of MD steps"),
    arg("--timestep", type=float, default=1.0, metavar="FS", help="fs (%(default)s)"),
    arg(
        "--pressure",
        type=float,
        metavar="GPA",
        help="GPa, target pressure (NPT only; + = compressive)",
    ),
    arg("--thermostat", type=str.lower, help="integrator of the ensemble (see below)"),
    arg("--tdamp", type=float, metavar="FS", help="fs, thermostat time constant"),
    arg("--pdamp", type=float, metavar="FS", help="fs, barostat time constant (NPT)"),
    arg("--friction", type=float, default=0.01, metavar="1/FS", help="1/fs, Langevin"),
    arg("--compressibility", type=float, default=0.01, metavar="1/GPA", help="Berendsen NPT"),
    arg("--trajectory", metavar="PATH", help="ASE .traj output (default ./<stem>_md.traj)"),
    arg("--trajectory-dir", metavar="DIR", help="write <DIR>/<stem>_md.traj per FILE instead"),
    arg("--d3", action="store_true", help="add D3(BJ) dispersion for PBE (torch-dftd)"),
    arg("--interval", type=int, default=10, metavar="N", help="steps between frames (%(default)s)"),
    arg("--seed", type=int, help="seed of the initial velocities and Langevin noise"),
    arg("--overwrite", action="store_true", help="replace an existing trajectory"),
    arg("--resume", action="store_true", help="continue an existing trajectory (see below)"),
    epilog=EPILOG.format(drift=MAX_DRIFT_MEV_PER_ATOM_PS),
)
def cmd_md(args: argparse.Namespace) -> int:
    from gptff_core.calculator import GPTFFCalculator

    if args.batch or len(args.files) > 1:
        from gptff_core.cli.md_batch import cmd_md_batch

        return cmd_md_batch(args)
    args.file = args.files[0]
    check_md_options(args)
    ((_, atoms),) = read_structures(args.file, "-1")
    if args.ensemble == "npt" and not (atoms.pbc.all() and atoms.cell.volume > 0):
        raise GPTFFInputError(f"{args.file}: --ensemble npt needs a 3D periodic cell")
    path = _trajectory_path(args)
    done = _start(args, atoms, path)
    if done >= args.steps:
        raise GPTFFInputError(f"--resume: {path} already holds step {done} of --steps {args.steps}")
    atoms.calc = GPTFFCalculator(
        model=args.model,
        device=args.device,
        dtype=args.dtype,
        smooth=args.smooth,
        dispersion=args.d3,
    )
    settings = _settings(args)
    recorder, interrupted = _run(args, settings, atoms, path, done)
    verdict = md_verdict(settings, recorder, len(atoms))
    summary = _summary(args, atoms, path, recorder, verdict)
    if args.json:
        dump_json(summary)
    else:
        print(_report(summary))
    if interrupted:
        print(f"gptff: interrupted; frames written so far are in {path}", file=sys.stderr)
        return ExitCode.INTERRUPTED
    for reason in verdict["notes"].values():
        print(f"gptff: note: {reason}", file=sys.stderr)
    for reason in verdict["flags"].values():
        print(f"gptff: warning: {reason}", file=sys.stderr)
    return ExitCode.FLAGGED if verdict["flags"] else ExitCode.OK


def _positive(value: float | None, option: str, unit: str, allow_zero: bool = False) -> None:
    """Refuse a non-finite or (not ``allow_zero``) non-positive ``value`` of ``option``."""
    if value is None:
        return
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = "≥ 0" if allow_zero else "> 0"
        raise GPTFFInputError(f"{option} must be a finite number {bound} {unit}, got {value}")


def check_md_options(args: argparse.Namespace) -> None:
    """Refuse inconsistent or out-of-range options of ``gptff md`` (before any work); fills in
    the default ``--thermostat`` of the ensemble."""
    allowed = THERMOSTATS[args.ensemble]
    args.thermostat = args.thermostat or allowed[0]
    if args.thermostat not in allowed:
        raise GPTFFInputError(
            f"--thermostat {args.thermostat} is not an {args.ensemble} integrator; "
            f"choose {' or '.join(allowed)}"
        )
    if args.steps < 1:
        raise GPTFFInputError(f"--steps must be ≥ 1, got {args.steps}")
    if args.interval < 1:
        raise GPTFFInputError(f"--interval must be ≥ 1 step, got {args.interval}")
    if args.seed is not None and args.seed < 0:
        raise GPTFFInputError(f"--seed must be ≥ 0, got {args.seed}")
    if args.ensemble != "nve" and args.temperature is None:
        raise GPTFFInputError(f"--ensemble {args.ensemble} needs --temperature (K)")
    if args.ensemble == "npt" and args.pressure is None:
        raise GPTFFInputError("--ensemble npt needs --pressure (GPa)")
    if args.ensemble != "npt" and args.pressure is not None:
        raise GPTFFInputError("--pressure applies only to --ensemble npt")
    if args.pressure is not None and not math.isfinite(args.pressure):
        raise GPTFFInputError(f"--pressure must be a finite number of GPa, got {args.pressure}")
    _positive(args.temperature, "--temperature", "K", allow_zero=args.ensemble == "nve")
    _positive(args.timestep, "--timestep", "fs")
    _positive(args.tdamp, "--tdamp", "fs")
    _positive(args.pdamp, "--pdamp", "fs")
    _positive(args.friction, "--friction", "1/fs")
    _positive(args.compressibility, "--compressibility", "1/GPa")
    if args.overwrite and args.resume:
        raise GPTFFInputError("--overwrite and --resume exclude each other; choose one")


def _trajectory_path(args: argparse.Namespace) -> Path:
    """The checked ``--trajectory`` path: a writable ``.traj`` file that does not exist yet,
    unless ``--overwrite`` or ``--resume`` (which needs it to exist)."""
    if args.trajectory and args.trajectory_dir:
        raise GPTFFInputError("--trajectory and --trajectory-dir exclude each other; choose one")
    if args.trajectory_dir:
        check_output_dir(args.trajectory_dir, "--trajectory-dir")
    default = Path(args.trajectory_dir or ".") / f"{Path(args.file).stem}_md.traj"
    path = Path(args.trajectory or default)
    if path.suffix != ".traj":
        raise GPTFFInputError(f"--trajectory {path}: give an ASE trajectory file ending in .traj")
    path = check_output_file(path, "--trajectory")
    if args.resume and not path.is_file():
        raise GPTFFInputError(f"--resume: {path} does not exist; leave out --resume to start")
    if path.exists() and not (args.overwrite or args.resume):
        raise GPTFFInputError(
            f"--trajectory {path} exists; pass --overwrite to replace it or --resume to continue"
        )
    return path


def _start(args: argparse.Namespace, atoms, path: Path) -> int:
    """Set up ``atoms`` (in place) for the run and return the step it starts from: the last
    frame of ``path`` with ``--resume``, else step 0 with Maxwell–Boltzmann velocities."""
    if args.seed is None:
        args.seed = secrets.randbelow(2**31)  # recorded in the summary, so a run can be repeated
    if args.resume:
        return _resume_from(args, atoms, path)
    set_initial_momenta(atoms, args.temperature, args.seed)
    return 0


def _resume_from(args: argparse.Namespace, atoms, path: Path) -> int:
    """Copy the last frame of ``path`` (positions, momenta, cell) into ``atoms``; its step."""
    from ase.io import read

    try:
        last = read(path, index=-1)
    except Exception as error:
        raise GPTFFInputError(f"--resume: cannot read {path} ({error})") from None
    step = last.info.get(STEP_KEY)
    if step is None or len(last) != len(atoms) or any(last.numbers != atoms.numbers):
        raise GPTFFInputError(
            f"--resume: {path} was not written by `gptff md` for {args.file}; "
            "give another --trajectory or --overwrite"
        )
    atoms.set_cell(last.cell)
    atoms.set_positions(last.positions)
    atoms.set_momenta(last.get_momenta())
    return int(step)


def _settings(args: argparse.Namespace) -> MDSettings:
    """The checked options as :class:`MDSettings` (after :func:`_start` chose the seed)."""
    return MDSettings(
        ensemble=args.ensemble,
        thermostat=args.thermostat,
        temperature_K=args.temperature,
        timestep_fs=args.timestep,
        pressure_GPa=args.pressure,
        tdamp_fs=args.tdamp,
        pdamp_fs=args.pdamp,
        friction_per_fs=args.friction,
        compressibility_per_GPa=args.compressibility,
        interval=args.interval,
        seed=args.seed,
        smooth=bool(args.smooth),
    )


def _run(args: argparse.Namespace, settings: MDSettings, atoms, path: Path, first_step: int):
    """Run the remaining steps; (the recorder, whether Ctrl-C stopped the run)."""
    from ase.io import Trajectory

    dynamics = make_dynamics(settings, atoms)
    trajectory = Trajectory(path, "a" if args.resume else "w")
    progress = None if args.json else lambda line: print(line, file=sys.stderr)
    recorder = MDRecorder(dynamics, trajectory, settings, first_step, args.resume, progress)
    dynamics.attach(recorder, interval=1)
    completed = interrupted = False
    try:
        dynamics.run(args.steps - first_step)
        completed = True
    except KeyboardInterrupt:
        interrupted = True
    finally:
        recorder.finish(completed)
    return recorder, interrupted


def _summary(args: argparse.Namespace, atoms, path: Path, recorder: MDRecorder, verdict) -> dict:
    """The ``--json`` document of ``gptff md`` (K, GPa, fs, eV)."""
    n = len(atoms)
    summary = dict(file=args.file, formula=atoms.get_chemical_formula(), n_atoms=n)
    summary |= dict(ensemble=args.ensemble, thermostat=args.thermostat)
    summary |= dict(temperature_K=args.temperature, pressure_GPa=args.pressure)
    summary |= dict(timestep_fs=args.timestep, first_step=recorder.first_step)
    summary |= dict(last_step=recorder.steps[-1] if recorder.steps else recorder.first_step)
    summary |= dict(interval=args.interval, seed=args.seed, trajectory=str(path))
    summary |= dict(frames_written=recorder.frames, model=args.model, dtype=args.dtype)
    summary |= dict(smooth=bool(args.smooth), device=args.device, d3=bool(args.d3))
    if recorder.steps:
        energy, kinetic = recorder.potential[-1], recorder.kinetic[-1]
        summary |= dict(final_energy_per_atom_eV=energy / n)
        summary |= dict(final_total_energy_per_atom_eV=(energy + kinetic) / n)
    return (
        summary
        | {k: v for k, v in verdict.items() if k != "flags"}
        | dict(flags=sorted(verdict["flags"]), flag_reasons=verdict["flags"])
    )


def _report(summary: dict) -> str:
    """The human summary of ``gptff md``."""
    s = summary
    what = f"{s['ensemble'].upper()} ({s['thermostat']}"
    what += f", {s['temperature_K']:g} K" if s["temperature_K"] is not None else ""
    what += f", {s['pressure_GPa']:g} GPa)" if s["pressure_GPa"] is not None else ")"
    lines = [
        f"{s['file']}: {s['formula']}, {s['n_atoms']} atoms; {what}",
        f"steps           {s['first_step']} → {s['last_step']} × {s['timestep_fs']:g} fs "
        f"(seed {s['seed']})",
    ]
    if s["mean_temperature_K"] is not None:
        tolerance = s["temperature_tolerance_K"]
        lines.append(
            f"mean T (2nd half) {s['mean_temperature_K']:10.1f} K"
            + (f" (tolerance ±{tolerance:.0f} K)" if tolerance is not None else "")
        )
    if s.get("final_energy_per_atom_eV") is not None:
        lines.append(f"final Epot      {s['final_energy_per_atom_eV']:12.6f} eV/atom")
    if s["conserved_drift_meV_per_atom_ps"] is not None:
        lines.append(f"conserved drift {s['conserved_drift_meV_per_atom_ps']:12.3f} meV/atom/ps")
        lines.append(
            f"energy jumps    {s['energy_jumps']:12d}    (largest step "
            f"{s['largest_conserved_step_meV_per_atom']:.3g} meV/atom)"
        )
    lines.append(f"verdict         {', '.join(s['flags']) or 'ok'}")
    lines.append(f"written         {s['trajectory']} ({s['frames_written']} frames)")
    return "\n".join(lines)
