"""``gptff md FILE FILE ...`` (or ``--batch``): the structures as one batched TorchSim run
(:mod:`gptff_core.md_batch`), one ASE ``.traj`` file per structure, a verdict per structure.

Every option, every structure and every output path is checked before the model is loaded.
Units: time fs (ps in the progress lines), temperature K, energies eV.
"""

from __future__ import annotations

import argparse
import secrets
import sys
from pathlib import Path

from gptff_core.cli.io import dump_json, read_structures
from gptff_core.cli.md import _report, _settings, _summary, check_md_options
from gptff_core.errors import ExitCode, GPTFFInputError
from gptff_core.md import md_verdict, set_initial_momenta
from gptff_core.paths import check_output_dir, check_output_file


def cmd_md_batch(args: argparse.Namespace) -> int:
    """Run ``args.files`` as one TorchSim batch; exit 3 if any structure is flagged."""
    from gptff_core.md_batch import check_batch, run_batched_md

    if args.thermostat is None and args.ensemble == "nvt":
        args.thermostat = "langevin"  # TorchSim 0.3 has no batched Nosé–Hoover chain
    check_md_options(args)
    if args.resume:
        raise GPTFFInputError("--resume applies to one FILE without --batch")
    if args.trajectory:
        raise GPTFFInputError("--trajectory names one file; give --trajectory-dir for a batch")
    atoms_list = [read_structures(name, "-1")[0][1] for name in args.files]
    args.seed = secrets.randbelow(2**31) if args.seed is None else args.seed
    settings = _settings(args)
    check_batch(atoms_list, settings, args.files)
    paths = _trajectory_paths(args)
    model = _model(args)
    for index, atoms in enumerate(atoms_list):
        set_initial_momenta(atoms, args.temperature, args.seed + index)
    progress = None if args.json else lambda line: print(line, file=sys.stderr)
    records, interrupted = run_batched_md(atoms_list, model, settings, args.steps, paths, progress)
    summaries = []
    for index, (name, atoms, path, record) in enumerate(
        zip(args.files, atoms_list, paths, records, strict=True)
    ):
        one = argparse.Namespace(**{**vars(args), "file": name, "seed": args.seed + index})
        verdict = md_verdict(settings, record, len(atoms))
        summaries.append(_summary(one, atoms, path, record, verdict) | dict(batched=True))
    return _finish(args, summaries, interrupted)


def _trajectory_paths(args: argparse.Namespace) -> list[Path]:
    """``<--trajectory-dir or .>/<stem>_md.traj`` per FILE, checked: distinct, writable, and
    not existing unless ``--overwrite``."""
    directory = check_output_dir(args.trajectory_dir or ".", "--trajectory-dir")
    paths = [directory / f"{Path(name).stem}_md.traj" for name in args.files]
    seen: dict[Path, str] = {}
    for name, path in zip(args.files, paths, strict=True):
        if path in seen:
            raise GPTFFInputError(
                f"{seen[path]} and {name} would both write {path}; rename one of the files"
            )
        seen[path] = name
        check_output_file(path, "trajectory")
        if path.exists() and not args.overwrite:
            raise GPTFFInputError(f"trajectory {path} exists; pass --overwrite to replace it")
    return paths


def _model(args: argparse.Namespace):
    """The TorchSim model of ``--model --device --dtype --smooth`` (+ D3 with ``--d3``);
    stress is not computed (NVE and NVT keep the cell)."""
    from gptff_core.torchsim import GPTFFTorchSimModel

    gptff = GPTFFTorchSimModel(
        args.model,
        device=args.device,
        dtype=args.dtype,
        smooth=args.smooth,
        compute_stress=False,
    )
    if not args.d3:
        return gptff
    from gptff_core.torchsim_d3 import D3TorchSimModel, SumTorchSimModel

    d3 = D3TorchSimModel(device=gptff.device, dtype=gptff.dtype, compute_stress=False)
    return SumTorchSimModel(gptff, d3)


def _finish(args: argparse.Namespace, summaries: list[dict], interrupted: bool) -> int:
    """Print the summaries (``--json``: one document with ``structures``) and the flags; the
    exit code: 130 interrupted, 3 when any structure is flagged, else 0."""
    if args.json:
        dump_json(dict(batched=True, n_structures=len(summaries), structures=summaries))
    else:
        print("\n\n".join(_report(summary) for summary in summaries))
    if interrupted:
        print("gptff: interrupted; frames written so far are kept", file=sys.stderr)
        return ExitCode.INTERRUPTED
    for summary in summaries:
        for reason in summary["notes"].values():
            print(f"gptff: note: {summary['file']}: {reason}", file=sys.stderr)
        for reason in summary["flag_reasons"].values():
            print(f"gptff: warning: {summary['file']}: {reason}", file=sys.stderr)
    flagged = any(summary["flags"] for summary in summaries)
    return ExitCode.FLAGGED if flagged else ExitCode.OK
