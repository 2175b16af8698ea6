"""Active learning for the Li₃YCl₆ demo (``workflows/paper_li3ycl6.py --label {gpaw,vasp,emt}``).

The demo's ordered 30-atom cell, relaxed with the base network, is handed to
:class:`~gptff_flows.flows.learn.ActiveLearningMaker` (sample MD at the demo's temperatures in
NPT, label the most uncertain and mutually different frames, fine-tune a committee, repeat) and
then, through :func:`~gptff_flows.flows.finetune_md.learned_md_flow`, to the demo's NPT MD and
Arrhenius analysis with the loop's final model. This module holds the loop's sizes, the labels'
settings, the checks made before any work, and the report read back from the job store.

Why NPT sampling: the published v2 swells this crystal by 20–30 % in NPT (smooth envelopes) and
by 80–180 % without; in 2 ps of NPT at 700 K on the 30-atom cell (barostat time 2 ps) it reaches
1.3× the relaxed volume within 1 ps and oscillates between 1.13 and 1.35 (measured here), so the
frames the loop samples include exactly the swollen cells the labels must correct, and the
labels' stress tells the committee which volume is right.

GPAW settings (:data:`LABEL_SETTINGS`), measured on this 2-core machine (GPAW 26.7, one serial
process, OMP_NUM_THREADS=2, the 30-atom cell rattled by 0.05 Å, energy + forces + stress):

* **functional optB88-vdW**, the paper's (GPAW's own vdW-DF kernel; PAW setups of revPBE as GPAW
  chooses for vdW-DF): 110 s a label at 400 eV (10 s per SCF step, 11 steps; the demo's 8
  labels took 48–230 s, 98 s on average, on the shared machine). PBE at 350 eV costs 46 s but
  differs where it matters: forces by 0.026 eV/Å MAE (max 0.10) and, on the
  experimental cell, the pressure by 1.2 GPa (PBE: +0.35 GPa, wants to expand; optB88-vdW:
  −0.86 GPa, wants to shrink) — the volume is what the loop must correct, so optB88-vdW is
  affordable here and used.
* **plane waves, cut-off 400 eV**: only plane-wave mode gives GPAW's stress (LCAO none), and
  NPT needs it. Against 500 eV (136 s): forces within 0.0009 eV/Å MAE (max 0.004), stress
  within 0.024 GPa — converged for training.
* **k-points**: Monkhorst–Pack density 1.5 per Å⁻¹ → 1×1×2 for the 30-atom cell (a = 11.2 Å,
  c = 6.0 Å), one irreducible k-point (time reversal); the cell is an insulator (PBE gap
  5.1 eV), so a coarse mesh should do (not checked against a denser one here); Γ only for
  1×1×2 supercells (``--paper``).
* **grid spacing**: GPAW's default in plane-wave mode, set by the cut-off: a 54×54×28 density
  grid, 0.21 Å.
* Fermi–Dirac 0.05 eV, SCF to forces within 0.01 eV/Å, at most 150 SCF steps: the labeller's
  defaults (:data:`gptff_flows.jobs.labels.GPAW_DEFAULTS`).

VASP (``--label vasp``, for HPC): atomate2's static input set with ``vdw="optB88"`` (the paper's
functional). EMT (``--label emt``) has no Li, Y or Cl parameters: it is refused for Li₃YCl₆ and
serves the tests only (with a stand-in calculator).

Units: T K, time step fs, disagreement and force errors eV/Å, energy errors meV/atom, times s.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
from ase import units

from gptff_core.errors import GPTFFInputError
from gptff_core.training.datasets import KBAR

LABEL_SETTINGS = {
    "gpaw": {"mode": {"name": "pw", "ecut": 400}, "xc": "optB88-vdW", "kpts": {"density": 1.5}},
    "vasp": {"vdw": "optB88"},
    "emt": {},
}
"""Settings of the labels by labeller, before ``--label-settings`` (merged over them, one level
deep) and the labeller's own defaults (see the module docstring for why)."""

LEARN_SMALL = {"iterations": 2, "frames": 4, "committee": 4, "sample_steps": 1000,
               "sample_interval": 20, "supercell": [1, 1, 1], "holdout": 0.25,
               "recipe": {"epochs": 40, "max_structures_per_batch": 1,
                          "stress_weight": 1.0}}  # fmt: skip
"""Default loop: 2 iterations × 4 labels (1 held out each) of the 30-atom cell, 2 ps of NPT per
temperature (50 frames each), a committee of 4 (Spearman ρ 0.89 between disagreement and error
for 4 members, gptff_core.committee). Recipe: one frame per optimizer step (a few frames would
otherwise be one step per epoch), 40 epochs, stress weight 1 per GPa (the paper's 0.1 leaves
the volume, the quantity the published network gets wrong, to a term ten times weaker)."""
LEARN_PAPER = {"iterations": 10, "frames": 200, "committee": 4, "sample_steps": 5000,
               "sample_interval": 25, "supercell": [1, 1, 2], "holdout": 0.1,
               "recipe": {"epochs": 30, "stress_weight": 1.0}}  # fmt: skip
"""``--paper``: up to 2,000 labels (the paper's count) of 60-atom cells, 10 ps per temperature."""

OPTIONS = ("iterations", "frames", "committee", "sample_steps", "sample_interval")
"""Sizes the command line may set (``--sample-steps`` is ``sample_steps``, ...)."""


def add_arguments(parser) -> None:
    """The ``--label`` options of the demo's parser."""
    group = parser.add_argument_group("active learning (--label)")
    group.add_argument("--label", choices=sorted(LABEL_SETTINGS),
                       help="learn first with these labels, then MD (gpaw, vasp)")  # fmt: skip
    group.add_argument("--label-settings", metavar="JSON",
                       help="labeller settings over the demo's (JSON or @file.json)")  # fmt: skip
    group.add_argument("--iterations", type=int, help="loop iterations at most (2; paper 10)")
    group.add_argument("--frames", type=int, help="labels per iteration (4; paper 200)")
    group.add_argument("--committee", type=int, help="committee members (4)")
    group.add_argument("--sample-steps", type=int, help="sampling MD steps (1000; paper 5000)")
    group.add_argument("--sample-interval", type=int, help="steps between frames (20; paper 25)")
    group.add_argument("--learn-epochs", type=int, help="fine-tuning epochs (40; paper 30)")


def label_settings(args) -> dict:
    """The demo's settings for ``args.label`` with ``--label-settings`` over them."""
    from gptff_flows.cli.learn import parse_labeller_settings

    return {**LABEL_SETTINGS[args.label], **parse_labeller_settings(args.label_settings)}


def check_args(args) -> dict:
    """Refuse, before any work, what the ``--label`` run cannot do; the label settings.

    Raises:
        GPTFFInputError: ``--label`` with ``--train``; ``--paper --label`` run here (about
            2,000 labels: ``--submit`` it); loop options without ``--label``; a labeller that
            is not installed or settings it would reject.
    """
    from gptff_flows.jobs.labels import check_labeller

    given = [f"--{k.replace('_', '-')}" for k in (*OPTIONS, "learn_epochs", "label_settings")
             if getattr(args, k) is not None]  # fmt: skip
    if not args.label:
        if given:
            raise GPTFFInputError(f"{', '.join(given)} need(s) --label gpaw|vasp|emt")
        return {}
    if args.train or args.valid:
        raise GPTFFInputError("--label learns its own training frames: drop --train/--valid")
    if args.paper and not args.submit:
        raise GPTFFInputError(
            "--paper --label labels up to 2,000 frames: submit it (--submit WORKER), or drop "
            "--paper for the small loop"
        )
    settings = label_settings(args)
    check_labeller(args.label, settings)
    return settings


def sizes(args) -> dict:
    """The loop's sizes: :data:`LEARN_PAPER` or :data:`LEARN_SMALL`, the options over them."""
    size = json.loads(json.dumps(LEARN_PAPER if args.paper else LEARN_SMALL))
    size.update({k: getattr(args, k) for k in OPTIONS if getattr(args, k) is not None})
    if args.learn_epochs is not None:
        size["recipe"]["epochs"] = args.learn_epochs
    return size


def describe(label: str, settings: dict, size: dict) -> str:
    """The flow-name part that names the labels and the loop (a stored run is reused only with
    the same ones): labeller, sha256 of its resolved settings (12 hex), sizes."""
    from gptff_flows.analysis.labels import canonical
    from gptff_flows.jobs.labels import resolve_settings

    text = json.dumps(canonical(resolve_settings(label, settings)), sort_keys=True)
    recipe = json.dumps(size["recipe"], sort_keys=True, separators=(",", ":"))
    return (f"learned {label} {hashlib.sha256(text.encode()).hexdigest()[:12]} "
            f"it={size['iterations']}x{size['frames']} committee={size['committee']} "
            f"sample={size['sample_steps']}/{size['sample_interval']} "
            f"sc={'x'.join(map(str, size['supercell']))} holdout={size['holdout']:g} "
            f"recipe={recipe}")  # fmt: skip


def learn_maker(args, settings: dict, size: dict, temperatures: list[float], name: str):
    """The :class:`~gptff_flows.flows.learn.ActiveLearningMaker` of the demo: sampling at the
    MD's ``temperatures`` (K) in the MD's ensemble, smooth envelopes on (as the MD)."""
    from gptff_flows.flows.learn import ActiveLearningMaker

    return ActiveLearningMaker(
        name=f"{name} learn", labeller=args.label, labeller_settings=settings,
        temperatures=list(temperatures), ensemble=args.ensemble, md_steps=size["sample_steps"],
        time_step=args.timestep, sample_interval=size["sample_interval"],
        supercell=size["supercell"], iterations=size["iterations"],
        frames_per_iteration=size["frames"], committee_size=size["committee"],
        holdout_fraction=size["holdout"], recipe=dict(size["recipe"]), seed=args.seed,
        model=args.model, dtype=args.dtype, smooth=True, device=args.device,
    )  # fmt: skip


def _newest(store, cls: str, name: str, properties: list[str] | None = None) -> list[dict]:
    """Documents of class ``cls`` of flow ``name``, oldest first."""
    store.connect()
    criteria = {"output.@class": cls, "metadata.flow_name": name}
    docs = store.query(criteria, properties=properties, sort={"completed_at": 1}, load=True)
    return list(docs)


def stored_learning(store, name: str):
    """(the newest :class:`LearningDocument` of flow ``name``, ``{iteration: its
    LearningIterationDocument output dict}``, newest per iteration), or (None, {})."""
    from gptff_flows.schemas.learn import LearningDocument

    docs = _newest(store, "LearningDocument", name)
    if not docs:
        return None, {}
    fields = ["completed_at", *(f"output.{k}" for k in ("iteration", "sampling", "training_s",
              "evaluation_s", "held_out", "n_computed", "reused_committee"))]  # fmt: skip
    rows = {d["output"]["iteration"]: d["output"]
            for d in _newest(store, "LearningIterationDocument", name, fields)}  # fmt: skip
    return LearningDocument.model_validate(docs[-1]["output"]), rows


def base_force_mae(store, doc, model: str, dtype: str) -> float | None:
    """eV/Å: the base ``model``'s (smooth, as the loop's base) force MAE on the held-out labels
    of ``doc`` — what the committee's held-out MAE is to be compared with (None: none held out)."""
    from gptff_core.calculator import GPTFFCalculator
    from gptff_flows.jobs.training_data import frames_from_documents

    held = [store.get_output(r.uuid, which="last", load=True)
            for r in doc.labels if r.holdout and r.converged and r.uuid]  # fmt: skip
    if not held:
        return None
    calculator = GPTFFCalculator(model=model, dtype=dtype, smooth=True)
    errors = []
    for frame in frames_from_documents(held):
        atoms = frame.atoms.copy()
        atoms.calc = calculator
        errors.append(np.abs(atoms.get_forces() - np.asarray(frame.forces)).ravel())
    return float(np.concatenate(errors).mean())


def labelled_cells(store, doc, volume: float) -> list[dict]:
    """Per converged label: iteration, held out or not, its cell's volume / ``volume`` (Å³,
    the relaxed cell's times the loop's supercell) and the pressure of the label (GPa,
    positive = compressive; from its stress, kbar with VASP's sign)."""
    rows = []
    for record in doc.labels:
        if not (record.converged and record.uuid):
            continue
        label = store.get_output(record.uuid, which="last", load=True)
        structure = label["structure"]
        lattice = np.array((structure["lattice"] if isinstance(structure, dict)
                            else structure.lattice.as_dict())["matrix"])  # fmt: skip
        stress = label.get("stress")
        pressure = None if stress is None else float(np.trace(stress)) / 3 * KBAR / units.GPa
        rows.append(dict(iteration=record.iteration, holdout=record.holdout,
                         volume_ratio=abs(np.linalg.det(lattice)) / volume,
                         pressure=pressure))  # fmt: skip
    return rows


def iteration_rows(doc, details: dict) -> list[dict]:
    """Per iteration: sampling s, labels computed and their cost (s), training s, the committee
    disagreement on the frames sampled (mean, max eV/Å; under the previous committee) and on
    the held-out labels (eV/Å), held-out force MAE (eV/Å) and energy MAE (meV/atom)."""
    rows = []
    for summary in doc.iterations:
        detail = details.get(summary.iteration, {})
        costs = [r.wall_time_s for r in doc.labels
                 if r.iteration == summary.iteration and r.wall_time_s]  # fmt: skip
        held = summary.held_out
        rows.append(dict(
            iteration=summary.iteration, labels=summary.n_labels, computed=summary.n_computed,
            failed=summary.n_failed, label_s=float(np.mean(costs)) if costs else None,
            labels_s=float(np.sum(costs)) if costs else None,
            sampling_s=(detail.get("sampling") or {}).get("elapsed_s"),
            training_s=detail.get("training_s"), sampled_mean=summary.sampled_mean_uncertainty,
            sampled_max=summary.sampled_max_uncertainty,
            held_disagreement=held.mean_uncertainty if held else None,
            force_mae=held.force_mae if held else None,
            energy_mae=held.energy_mae if held else None, flags=list(summary.flags),
        ))  # fmt: skip
    return rows


COLUMNS = (("iteration", "it", "{:d}"), ("labels", "labels", "{:d}"),
           ("computed", "new", "{:d}"), ("failed", "failed", "{:d}"),
           ("label_s", "s/label", "{:.0f}"), ("labels_s", "labels s", "{:.0f}"),
           ("sampling_s", "sample s", "{:.0f}"), ("training_s", "train s", "{:.0f}"),
           ("sampled_mean", "ΔF sampled mean", "{:.3f}"), ("sampled_max", "max", "{:.3f}"),
           ("held_disagreement", "ΔF held-out", "{:.3f}"), ("force_mae", "F MAE", "{:.3f}"),
           ("energy_mae", "E MAE", "{:.2f}"))  # fmt: skip


def report(store, name: str, model: str, dtype: str, volume: float) -> dict:
    """Print the loop's table (see :func:`iteration_rows`), its cost and the labelled cells
    (``volume``: Å³ of the relaxed cell the loop sampled from); the summary's ``learning``
    entry (None: no learning document of flow ``name`` in ``store``)."""
    doc, details = stored_learning(store, name)
    if doc is None:
        print(f"no learning document of flow {name!r} in the store")
        return None
    rows = iteration_rows(doc, details)
    cells = [[title, *("-" if r[k] is None else form.format(r[k]) for r in rows)]
             for k, title, form in COLUMNS]  # fmt: skip
    widths = [max(len(c) for c in column) for column in cells]
    for i in range(len(rows) + 1):
        line = "  ".join(column[i].rjust(w) for column, w in zip(cells, widths, strict=True))
        flags = "flags" if i == 0 else ",".join(rows[i - 1]["flags"]) or "-"
        print(f"{line}  {flags}")
    costs = [r.wall_time_s for r in doc.labels if r.wall_time_s]
    base = base_force_mae(store, doc, model, dtype)
    print(f"(ΔF: committee force disagreement, eV/Å; F MAE eV/Å and E MAE meV/atom: committee "
          f"mean on held-out labels; {model} before learning: F MAE "
          f"{'-' if base is None else f'{base:.3f}'} eV/Å on the same labels)")  # fmt: skip
    if costs:
        print(f"{doc.labeller} labels: {len(costs)}, {np.mean(costs):.0f} s each "
              f"({min(costs):.0f}–{max(costs):.0f}), {np.sum(costs):.0f} s in all; "
              f"{doc.n_failed_labels} failed")  # fmt: skip
    cells = labelled_cells(store, doc, volume)
    text = [
        f"{c['volume_ratio']:.3f} ("
        + ("-" if c["pressure"] is None else f"{c['pressure']:+.2f}")
        + ")"
        for c in cells
    ]
    print("labelled cells, V/V_relaxed (label pressure GPa): " + ", ".join(text))
    stop = "below" if doc.threshold_reached else "NOT below"
    print(f"loop stopped: {doc.stop_reason} (disagreement {stop} {doc.threshold} eV/Å); MD "
          f"with member 0 of the final committee ({doc.committee_sha256[0][:12]}…)")  # fmt: skip
    flags = list(doc.flags) + ([] if doc.threshold_reached else ["learning_threshold_not_reached"])
    return dict(labeller=doc.labeller, settings=doc.labeller_settings, n_labels=doc.n_labels,
                n_failed=doc.n_failed_labels, label_seconds=costs, base_force_mae=base,
                stop_reason=doc.stop_reason, iterations=rows, labelled_cells=cells,
                flags=flags)  # fmt: skip


def md_costs(store, name: str) -> dict[float, float]:
    """T (K) → s of wall time of the flow's MD at T (newest)."""
    docs = _newest(store, "MDTemperatureDocument", name,
                   ["output.temperature", "output.elapsed_s", "completed_at"])  # fmt: skip
    return {d["output"]["temperature"]: d["output"]["elapsed_s"] for d in docs}
