"""The paper's third demonstration: Li-ion conductivity of Li₃YCl₆ by fine-tuning, then MD.

The paper fine-tuned GPTFF on optB88 snapshots of Li₃YCl₆, ran NPT MD at 300–700 K and reported
σ(300 K) = 0.6 mS/cm, Eₐ = 0.45 eV and a superionic transition near 425 K. Its training
snapshots are not public, so the fine-tuning data are yours (``--train``, any format of
``docs/training.md``: extxyz, OUTCAR, vasprun.xml, ASE db, the published trainer's CSV). Without
them the demo runs the published network as it is, and says so in its output.

The cell is built from published crystal data (``workflows/data/li3ycl6.json``: space group,
lattice, Wyckoff sites, sources and what was idealised), ordered by the lowest Ewald energy,
relaxed with the base network, then handed to ``FineTuneMDMaker`` (fine-tune → NPT MD at each
temperature → D, σ by Nernst–Einstein, Arrhenius fit) whose documents land in the job store.

    python workflows/paper_li3ycl6.py                          # 60 atoms, 500/600/700 K, 12 ps
    python workflows/paper_li3ycl6.py --train my_frames.extxyz # fine-tune first
    python workflows/paper_li3ycl6.py --paper --submit WORKER  # 240 atoms, 300–700 K, 50 ps
    python workflows/paper_li3ycl6.py --label gpaw             # learn with GPAW labels first
    python workflows/paper_li3ycl6.py --paper --label vasp --submit WORKER  # the paper's size

``--label gpaw|vasp`` replaces your frames with the active-learning loop
(``workflows/li3ycl6_learn.py``: its sizes, the GPAW settings and why): MD with the current
model in NPT at the demo's temperatures, first-principles labels of the most uncertain frames,
a fine-tuned committee, repeated; then the NPT MD and the Arrhenius analysis with the loop's
final model. Labels, committees and MD land in the store; run the command again to resume
(labels computed are never computed again) or to print the finished run.

Units: T K, D cm²/s, σ mS/cm, Eₐ eV, time step fs. Results stay queryable:
``gptff results --kind finetune-md``; a run whose settings are already in the store is printed
from the store, not recomputed, and a run that crashed reruns only the temperatures missing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from gptff_core.errors import ExitCode
from gptff_core.paths import write_atomically

DATA = Path(__file__).with_name("data") / "li3ycl6.json"
PAPER = {"conductivity_300K": 0.6, "activation_energy": 0.45, "transition_K": 425.0}
"""What the paper reports (fine-tuned on optB88 snapshots): mS/cm, eV, K."""
EXPERIMENT = {"conductivity_300K": 0.51, "activation_energy": 0.40}
"""Experiment as the paper quotes it: σ(300 K) mS/cm, Eₐ eV."""
SMALL = {"temperatures": [500.0, 600.0, 700.0], "supercell": [1, 1, 2], "steps": 6000,
         "equilibration": 500}  # fmt: skip
"""Default size: 60 atoms, 1 ps equilibration and 12 ps production per temperature (the block
error analysis needs more than 5 × 2 ps)."""
PAPER_SIZE = {"temperatures": [300.0, 350.0, 400.0, 450.0, 500.0, 600.0, 700.0],
              "supercell": [2, 2, 2], "steps": 25_000, "equilibration": 2_500}  # fmt: skip
"""``--paper``: 240 atoms, 5 ps equilibration and 50 ps production per temperature."""


def published_structure():
    """The disordered P-3m1 cell of the data file (Li on 6g and 6h with occupancy 3/4)."""
    from pymatgen.core import Lattice, Structure

    data = json.loads(DATA.read_text())
    sites = data["sites"]
    return Structure.from_spacegroup(
        data["spacegroup"],
        Lattice.hexagonal(data["a"], data["c"]),
        [site["species"] for site in sites],
        [site["frac"] for site in sites],
    )


def ordered_cell(disordered):
    """The Li ordering of lowest Ewald energy (pymatgen), without oxidation states: 30 atoms."""
    from pymatgen.transformations.standard_transformations import (
        OrderDisorderedStructureTransformation,
    )

    decorated = disordered.copy()
    decorated.add_oxidation_state_by_element(json.loads(DATA.read_text())["oxidation_states"])
    ordered = OrderDisorderedStructureTransformation().apply_transformation(decorated)
    ordered.remove_oxidation_states()
    return ordered


def relaxed(structure, model: str, dtype: str, smooth: bool):
    """Positions and cell relaxed with ``model`` (FIRE, fmax 0.02 eV/Å) with the MD's ``smooth``
    setting; (structure, steps)."""
    from pymatgen.io.ase import AseAtomsAdaptor

    from gptff_core.calculator import GPTFFCalculator
    from gptff_core.relax import relax

    calculator = GPTFFCalculator(model=model, dtype=dtype, smooth=smooth)
    result = relax(structure, calculator, fmax=0.02, steps=500)
    return AseAtomsAdaptor.get_structure(result.atoms), result.n_steps


def regime_fits(rows, split: float) -> dict:
    """Eₐ (eV) from the diffusive temperatures below and above ``split`` (K), each needing two.

    ``rows`` are the summary's per-temperature rows; a row counts when it has D and no flag that
    keeps it out of the Arrhenius fit (not diffusive, framework mobile, temperature not
    reached: ``gptff_flows.analysis.diffusion.EXCLUDING_FLAGS``)."""
    from pymatgen.analysis.diffusion.analyzer import fit_arrhenius

    from gptff_flows.analysis.diffusion import EXCLUDING_FLAGS

    usable = [r for r in rows if r.diffusivity and not EXCLUDING_FLAGS & set(r.flags)]
    fits = {}
    for name, part in (("below", [r for r in usable if r.temperature < split]),
                       ("above", [r for r in usable if r.temperature >= split])):  # fmt: skip
        if len(part) >= 2:
            temps = np.array([r.temperature for r in part])
            ea, _, _ = fit_arrhenius(temps, np.array([r.diffusivity for r in part]), mode="linear")
            fits[name] = float(ea)
    return fits


def volume_ratios(store, name: str, relaxed_volume: float) -> dict[float, float]:
    """T (K) → mean MD volume / ``relaxed_volume`` (Å³) of the flow's MD documents (newest per
    T): how far the cell expanded (NPT); 1 in NVT."""
    store.connect()
    docs = store.query({"output.@class": "MDTemperatureDocument", "metadata.flow_name": name},
                       properties=["output.temperature", "output.mean_volume", "completed_at"],
                       sort={"completed_at": 1})  # fmt: skip
    return {d["output"]["temperature"]: d["output"]["mean_volume"] / relaxed_volume
            for d in docs}  # fmt: skip


def _file_digest(paths: list[str]) -> str:
    """sha256 (12 hex) of the training files' bytes: the flow name changes with the data."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()[:12]


def _stored_summary(store, name: str):
    """The newest summary document of flow ``name`` in ``store``, or None."""
    from gptff_flows.schemas.finetune_md import FineTuneMDDocument

    store.connect()
    docs = list(store.query({"output.@class": "FineTuneMDDocument",
                             "metadata.flow_name": name}, load=True))  # fmt: skip
    if not docs:
        return None
    newest = max(docs, key=lambda d: d.get("completed_at", ""))
    return FineTuneMDDocument.model_validate(newest["output"])


def _parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", nargs="+", metavar="FILE", help="your labelled frames")
    parser.add_argument("--valid", nargs="+", metavar="FILE", help="validation frames")
    parser.add_argument("--format", dest="fmt", help="ASE format name or gptff-csv")
    parser.add_argument("--epochs", type=int, default=10, help="fine-tuning (%(default)s)")
    parser.add_argument("--structure", metavar="CIF", help="start here instead of the data file")
    parser.add_argument("--paper", action="store_true", help="the paper's size (hours on a CPU)")
    parser.add_argument("--temperatures", help="K, comma separated (overrides the size)")
    parser.add_argument("--steps", type=int, help="production steps per temperature")
    parser.add_argument("--equilibration", type=int, help="steps discarded first")
    parser.add_argument("--timestep", type=float, default=2.0, help="fs (%(default)s)")
    parser.add_argument(
        "--ensemble",
        choices=["npt", "nvt"],
        default="npt",
        help="npt as the paper (default), or nvt at the relaxed volume",
    )
    parser.add_argument("--smooth", action="store_true",
                        help="C² envelopes without --train too (default: on only when "
                        "fine-tuning; otherwise the published network as published)")  # fmt: skip
    parser.add_argument("--model", default="gptff-v2")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (%(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--store", help="job store location (default: the embedded store)")
    parser.add_argument("--submit", metavar="WORKER", help="submit to jobflow-remote instead")
    parser.add_argument("--project", help="jobflow-remote project (with --submit)")
    parser.add_argument("--out", default="out/paper_li3ycl6", help="plots, summary (%(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (%(default)s)")
    learning().add_arguments(parser)
    return parser.parse_args(argv)


def _size(args) -> dict:
    """Temperatures (K), supercell, production and equilibration steps of this run."""
    from gptff_flows.cli.finetune_md import _temperatures

    size = dict(PAPER_SIZE if args.paper else SMALL)
    if args.temperatures:
        size["temperatures"] = _temperatures(args.temperatures)
    size["steps"] = args.steps or size["steps"]
    if args.equilibration is not None:
        size["equilibration"] = args.equilibration
    return size


def _start(args):
    """(structure, where it came from): ``--structure`` (checked: a periodic crystal) or the
    Ewald-ordered cell of the crystal data."""
    if not args.structure:
        return ordered_cell(published_structure()), f"{DATA.name} (Ewald-ordered)"
    from pymatgen.io.ase import AseAtomsAdaptor

    from gptff_core.cli import read_structures
    from gptff_flows.cli.finetune_md import _require_cell

    ((_, atoms),) = read_structures(args.structure, "-1")
    _require_cell(args.structure, atoms)
    return AseAtomsAdaptor.get_structure(atoms), args.structure


def _flow_name(args, size: dict, data: str, smooth: bool) -> str:
    """The flow name: every setting that determines the results (a stored run is reused)."""
    temps = ",".join(f"{t:g}" for t in size["temperatures"])
    return (f"paper-li3ycl6 {args.model} {args.dtype} smooth={'on' if smooth else 'off'} {data} "
            f"{args.ensemble} T={temps} sc={'x'.join(map(str, size['supercell']))} "
            f"steps={size['equilibration']}+{size['steps']}x{args.timestep:g}fs "
            f"seed={args.seed}")  # fmt: skip


def learning():
    """``workflows/li3ycl6_learn.py``, the ``--label`` part of this demo (loaded by path, so
    the script runs from anywhere)."""
    import importlib.util

    name = "li3ycl6_learn"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    import torch

    torch.set_num_threads(args.threads)
    logging.basicConfig(format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("gptff_flows").setLevel(logging.INFO)
    from gptff_core.paths import check_output_dir
    from gptff_flows.cli.common import open_store
    from gptff_flows.run import submit_flow

    size = _size(args)
    labels = learning().check_args(args)  # {} without --label; refusals before any work
    smooth = bool(args.train or args.label) or args.smooth  # else: the published network
    out = check_output_dir(args.out, "--out")  # output and store checked before any work
    store = None if args.submit else open_store(args.store)
    started = time.perf_counter()
    start, origin = _start(args)
    build, name, data = _builder(args, size, labels, smooth, out, start)  # checks the loop too
    cell, steps = relaxed(start, args.model, args.dtype, smooth)
    print(f"Li3YCl6 from {origin}: {len(start)} atoms; relaxed with {args.model} (smooth "
          f"{'on' if smooth else 'off'}) in {steps} FIRE steps, volume {start.volume:.1f} → "
          f"{cell.volume:.1f} Å³", file=sys.stderr)  # fmt: skip
    if args.submit:
        flow = build(cell)
        ids = submit_flow(flow, worker=args.submit, project=args.project)
        print(f"submitted {len(ids)} jobs as flow {flow.uuid!s}; when done: "
              f"gptff results --kind finetune-md --flow '{name}'")  # fmt: skip
        return ExitCode.OK
    doc = _run_or_reuse(store, name, build, cell, args, size)
    return _print_results(doc, store, cell, size, args, data, time.perf_counter() - started)


def _data(args, labels: dict) -> str:
    """What the network learned from, for the flow name and the report; says so (stderr)
    when it learned nothing."""
    if args.label:
        return learning().describe(args.label, labels, learning().sizes(args))
    if args.train:
        return f"fine-tuned on {len(args.train)} file(s) {_file_digest(args.train)}"
    print(f"NO TRAINING DATA: the MD runs with {args.model} "
          f"{'with smooth envelopes (--smooth)' if args.smooth else 'as published'}, not "
          "fine-tuned. The paper fine-tuned on optB88 snapshots that are not public; give "
          "yours with --train FILE... (formats: docs/training.md) or learn them with --label "
          "gpaw.", file=sys.stderr)  # fmt: skip
    return "NOT fine-tuned"


def _builder(args, size: dict, labels: dict, smooth: bool, out: Path, start):
    """(``build(cell) -> Flow``, flow name, data description): fine-tune (``--train``) or the
    published network, then MD; with ``--label`` the active-learning loop, then MD with its
    final model. Every setting is checked here, on ``start``, before any work."""
    from gptff_flows.flows.finetune_md import FineTuneMDMaker, learned_md_flow

    data = _data(args, labels)
    name = _flow_name(args, size, data, smooth)
    maker = FineTuneMDMaker(
        name=name, species="Li", temperatures=size["temperatures"], ensemble=args.ensemble,
        time_step=args.timestep, n_steps=size["steps"], equilibration_steps=size["equilibration"],
        supercell=size["supercell"], seed=args.seed, model=args.model,
        finetune=bool(args.train), recipe={"epochs": args.epochs}, file_format=args.fmt,
        dtype=args.dtype, smooth=smooth, device=args.device, plot_dir=str(out),
    )  # fmt: skip
    if not args.label:
        maker.make(start, train_files=args.train, valid_files=args.valid)  # checks only
        return (lambda cell: maker.make(cell, train_files=args.train, valid_files=args.valid),
                name, data)  # fmt: skip
    loop = learning().learn_maker(args, labels, learning().sizes(args), size["temperatures"], name)
    learned_md_flow(loop, maker, start)  # checks only: labeller, sizes, elements
    return (lambda cell: learned_md_flow(loop, maker, cell)), name, data


def _run_or_reuse(store, name: str, build, cell, args, size):
    """The summary of the flow ``name``: from the store if complete, else run ``build(cell)``
    (a run that crashed earlier reruns only the missing jobs; no label is computed twice)."""
    from gptff_flows.run import run_flow
    from gptff_flows.stores import describe_store

    doc = _stored_summary(store, name)
    if doc is not None:
        print(f"already in the store ({describe_store(store)}): {name}", file=sys.stderr)
        return doc
    n_atoms = len(cell) * int(np.prod(size["supercell"]))
    temps = ",".join(f"{t:g}" for t in size["temperatures"])
    print(f"{n_atoms} atoms, {args.ensemble.upper()} at {temps} K, "
          f"{size['equilibration']} + {size['steps']} steps of {args.timestep:g} fs each; "
          f"store {describe_store(store)}", file=sys.stderr)  # fmt: skip
    flow = build(cell)
    responses = run_flow(flow, store, resume=True)  # after a crash: the missing jobs
    return responses[flow.output.uuid][1].output


def _print_md(doc, store, name: str, args, cell) -> dict | None:
    """The MD table (after the loop's report with ``--label``); the summary's ``learning``."""
    from gptff_flows.cli.finetune_md import _md_report, _report

    if not args.label:
        print(_report(doc))
        return None
    volume = cell.volume * np.prod(learning().sizes(args)["supercell"])
    summary = learning().report(store, name, args.model, args.dtype, volume)
    costs = learning().md_costs(store, name)
    spent = ", ".join(f"{t:g} K {seconds:.0f} s" for t, seconds in costs.items())
    print(f"MD with the learned model, smooth on ({spent}):")
    print(_md_report(doc))
    return summary


def _print_results(doc, store, cell, size, args, data: str, elapsed: float) -> int:
    """Print the report and the paper's numbers, write ``summary.json``; the exit code
    (FLAGGED when a temperature, the Arrhenius fit or the loop carries a verdict)."""
    from gptff_flows.schemas.finetune_md import verdict_flags

    n_atoms = len(cell) * int(np.prod(size["supercell"]))
    name, out = doc.inputs.get("name", ""), Path(args.out)
    learned = _print_md(doc, store, name, args, cell)
    expansion = volume_ratios(store, name, cell.volume * np.prod(size["supercell"]))
    print("mean volume / relaxed volume: " + ", ".join(
        f"{t:g} K {ratio:.3f}" for t, ratio in expansion.items()))  # fmt: skip
    fits = regime_fits(doc.temperatures, PAPER["transition_K"])
    for regime, ea in fits.items():
        print(f"Eₐ {regime} {PAPER['transition_K']:g} K: {ea:.3f} eV")
    print(f"paper (fine-tuned on optB88): σ(300 K) = {PAPER['conductivity_300K']} mS/cm, "
          f"Eₐ = {PAPER['activation_energy']} eV, transition near {PAPER['transition_K']:g} K; "
          f"experiment: σ(300 K) = {EXPERIMENT['conductivity_300K']} mS/cm, "
          f"Eₐ = {EXPERIMENT['activation_energy']} eV")  # fmt: skip
    print(f"{data}; {n_atoms} atoms; {elapsed:.0f} s")
    flags = verdict_flags(doc.temperatures, doc.arrhenius) + (learned or {}).get("flags", [])
    results = doc.model_dump(mode="json", include={"temperatures", "activation_energy",
                             "activation_energy_error", "conductivity_300K", "plots",
                             "arrhenius"})  # fmt: skip
    summary = {"flow_name": name, "finetuned": bool(args.train or args.label),
               "smooth": doc.gptff.smooth, "n_atoms": n_atoms, "seconds": elapsed,
               "regime_activation_energies": fits, "paper": PAPER, "experiment": EXPERIMENT,
               "volume_ratios": expansion, "flags": flags, "learning": learned,
               **results}  # fmt: skip
    text = json.dumps(summary, indent=1, allow_nan=False)
    write_atomically(out / "summary.json", lambda path: path.write_text(text))
    print(f"plots and summary in {out}/", file=sys.stderr)
    return ExitCode.FLAGGED if flags else ExitCode.OK


if __name__ == "__main__":
    from gptff_core.cli import report_input_errors

    sys.exit(report_input_errors(Path(__file__).name, main))
