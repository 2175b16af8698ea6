"""Active learning: correct GPTFF against first-principles labels it chooses itself.

:class:`ActiveLearningMaker` builds a flow that decides its size at run time
(:mod:`gptff_flows.jobs.learn`). Each iteration

1. **samples** MD at the ``temperatures`` (NVT, or NPT where the volume matters) from each input
   structure's ``supercell``: with the base model at iteration 0, with the committee's mean
   force field afterwards, recording a frame every ``sample_interval`` steps with the
   committee's frame uncertainty (the largest per-atom force disagreement of its members, eV/Å);
2. **stops** (iteration ≥ 1) when the mean uncertainty of the sampled frames is below
   ``threshold``: the committee is trusted where its MD goes;
3. **selects** ``frames_per_iteration`` frames: the most uncertain ones that are at least
   ``min_distance`` apart (:mod:`gptff_flows.analysis.selection`; at iteration 0, with no
   committee yet, farthest-point sampling), and holds ``holdout_fraction`` of them out of
   training, for evaluation;
4. **labels** them (``labeller``: ``"emt"``, ``"gpaw"`` or ``"vasp"``,
   :mod:`gptff_flows.jobs.labels`), one job per frame, after looking each frame key up in the
   store: a label is never computed twice, and a failed label (SCF not converged) is recorded
   and left out;
5. **fine-tunes the committee** — ``committee_size`` members, member k with seed ``seed + k``,
   each from the base ``model`` — on every training label so far, with ``recipe``; and
   **evaluates** it on every held-out label so far (force MAE of the committee mean, eV/Å;
   energy MAE, meV/atom; the members' disagreement there, eV/Å);

until the threshold is reached or ``iterations`` are done. The flow is a job per iteration
(an iteration after the stop does nothing) and a summary; each iteration's output is a
:class:`~gptff_flows.schemas.learn.LearningIterationDocument`, the flow's a
:class:`~gptff_flows.schemas.learn.LearningDocument` naming the final committee (checkpoints in
the ``"data"`` store).

Resuming: ``run_flow(..., resume=True)`` after a kill reuses every finished iteration and reruns
the one that was cut. Its MD velocities are seeded from (``seed``, iteration, structure,
temperature), its model is the stored committee and the selection is deterministic, so it
samples the frames it sampled before and finds their labels in the store; a committee stored
with the same training labels and settings is reused, not retrained.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from ase import Atoms
from jobflow import Flow, Maker
from pymatgen.core import Structure
from pymatgen.io.ase import AseAtomsAdaptor

from gptff_core.committee import COMMITTEE_SIZE
from gptff_core.errors import GPTFFInputError
from gptff_flows.flows.finetune_md import FAST_RECIPE
from gptff_flows.jobs.force_field import require_periodic
from gptff_flows.jobs.learn import learn_iteration, learn_summary
from gptff_flows.options import GPTFFOptions, require_int, require_number

logger = logging.getLogger(__name__)

ENSEMBLES = ("nvt", "npt")


@dataclass
class ActiveLearningMaker(GPTFFOptions, Maker):
    """Sample MD, label the most uncertain frames, fine-tune a committee, repeat.

    ``model`` (the base network every committee is fine-tuned from), ``dtype``, ``device`` and
    ``calculator_kwargs`` (of the MD calculators) are
    :class:`~gptff_flows.options.GPTFFOptions`'; ``smooth`` None means on (training and MD
    with the C² envelopes, as :class:`~gptff_flows.flows.finetune_md.FineTuneMDMaker`).
    ``dispersion=True`` is refused (:meth:`check_options`): the loop fits the committee to the
    labeller's first-principles energies and forces, samples with it and measures its errors
    against them, so D3 belongs to none of these steps (with labels that already contain van der
    Waals, optB88-vdW as in the GPTFF paper, it would also be counted twice). Add D3 when the
    final model is used, e.g. :func:`~gptff_flows.flows.finetune_md.learned_md_flow` with
    ``FineTuneMDMaker(dispersion=True)``, and only for labels without dispersion (PBE).

    Args:
        name: flow name.
        labeller: ``"emt"`` (ASE's EMT; tests), ``"gpaw"`` or ``"vasp"``.
        labeller_settings: the labeller's settings (see :mod:`gptff_flows.jobs.labels`).
        temperatures: K, one MD per structure and temperature in each iteration.
        ensemble: ``"nvt"`` (Nosé–Hoover chain) or ``"npt"`` (MTK; the cell follows).
        md_steps: MD steps per run.
        time_step: fs.
        sample_interval: steps between recorded frames.
        supercell: repetitions of each input cell along a, b, c (the labelled cells).
        pressure: GPa, NPT target.
        iterations: label-and-train rounds at most (iteration 0 included).
        frames_per_iteration: frames selected and labelled per iteration.
        committee_size: members (≥ 2), see :data:`gptff_core.committee.COMMITTEE_SIZE`.
        threshold: eV/Å; stop when the sampled frames' mean committee uncertainty is below
            (default 0.05 eV/Å, the lower trust level DP-GEN commonly puts on the largest
            per-atom force deviation).
        holdout_fraction: fraction of each iteration's labels kept out of training and used to
            evaluate (0: no evaluation).
        min_distance: Å, smallest structural distance between two selected frames
            (:func:`~gptff_flows.analysis.selection.frame_distance`).
        recipe: :class:`~gptff_core.training.Recipe` fields of each member's fine-tuning
            (its ``seed`` is replaced by the member's).
        seed: seeds the MD velocities, the hold-out choice and the members (``seed + k``).
        skin: Å, neighbour-list skin of the MD calculators.
        retry_failed_labels: compute again a label stored as failed (default: reuse the
            failure, as the same settings would fail again).
    """

    name: str = "GPTFF active learning"
    labeller: str = "emt"
    labeller_settings: dict = field(default_factory=dict)
    temperatures: list[float] = field(default_factory=lambda: [600.0, 800.0])
    ensemble: str = "nvt"
    md_steps: int = 200
    time_step: float = 2.0
    sample_interval: int = 10
    supercell: list[int] = field(default_factory=lambda: [1, 1, 1])
    pressure: float = 0.0
    iterations: int = 3
    frames_per_iteration: int = 10
    committee_size: int = COMMITTEE_SIZE
    threshold: float = 0.05
    holdout_fraction: float = 0.2
    min_distance: float = 0.05
    recipe: dict = field(default_factory=lambda: dict(FAST_RECIPE))
    seed: int = 0
    skin: float = 1.0
    retry_failed_labels: bool = False

    def check_options(self) -> None:
        """:meth:`GPTFFOptions.check_options`, refusing ``dispersion=True`` with the reason (see
        the class docstring)."""
        if self.dispersion is True:
            raise GPTFFInputError(
                "dispersion=True is refused by ActiveLearningMaker: the committee is fitted to "
                "and judged against the first-principles labels, which D3 is not part of (and "
                "vdW labels such as optB88-vdW already include); add D3 to the MD with the final "
                "model instead (FineTuneMDMaker(dispersion=True)), for labels without dispersion"
            )
        super().check_options()

    def _check_md(self) -> None:
        """Refuse MD settings the loop cannot run (the message names the field and unit)."""
        if self.ensemble not in ENSEMBLES:
            raise GPTFFInputError(
                f"ensemble must be one of {', '.join(ENSEMBLES)}, got {self.ensemble!r}"
            )
        temperatures = list(self.temperatures)
        if not temperatures:
            raise GPTFFInputError("temperatures must be positive numbers (K), got []")
        for k, temperature in enumerate(temperatures):
            require_number(f"temperatures[{k}]", temperature, "K")
        if require_number("time_step", self.time_step, "fs") > 10:
            raise GPTFFInputError(f"time_step is in fs; {self.time_step} fs is far too long")
        require_int("md_steps", self.md_steps)
        require_int("sample_interval", self.sample_interval)
        if self.sample_interval > self.md_steps:
            raise GPTFFInputError(
                f"sample_interval ({self.sample_interval} steps) is longer "
                f"than md_steps ({self.md_steps}): no frame would be sampled"
            )
        require_number("pressure", self.pressure, "GPa", minimum=-1e3)
        require_number("skin", self.skin, "Å")
        if len(self.supercell) != 3:
            raise GPTFFInputError(f"supercell must be three integers ≥ 1, got {self.supercell!r}")
        for k, n in enumerate(self.supercell):
            require_int(f"supercell[{k}]", n)

    def _check_loop(self, n_structures: int) -> None:
        """Refuse loop settings that cannot work (sizes, threshold, recipe)."""
        from gptff_core.training import Recipe

        require_int("iterations", self.iterations)
        k = require_int("frames_per_iteration", self.frames_per_iteration)
        require_int("committee_size", self.committee_size, minimum=2)
        require_number("threshold", self.threshold, "eV/Å")
        require_number("min_distance", self.min_distance, "Å", inclusive=True)
        if not 0 <= self.holdout_fraction < 1:
            raise GPTFFInputError(
                f"holdout_fraction must be in [0, 1), got {self.holdout_fraction}"
            )
        if self.holdout_fraction > 0 and k < 2:
            raise GPTFFInputError(
                "frames_per_iteration must be ≥ 2 to hold labels out (or set holdout_fraction=0)"
            )
        require_int("seed", self.seed, minimum=0)
        per_run = self.md_steps // self.sample_interval
        candidates = n_structures * len(self.temperatures) * per_run
        if candidates < k:
            raise GPTFFInputError(
                f"{candidates} frames are sampled per iteration ({n_structures} structure(s) × "
                f"{len(self.temperatures)} temperature(s) × {per_run}), fewer than "
                f"frames_per_iteration={k}: raise md_steps or lower sample_interval"
            )
        if not isinstance(self.recipe, dict):
            raise GPTFFInputError(f"recipe must be a dict of Recipe fields, got {self.recipe!r}")
        try:
            Recipe(**self.recipe)
        except TypeError as exc:
            raise GPTFFInputError(f"recipe: {exc}") from None

    def _validate(self, structures: list[Structure]) -> None:
        """Refuse what the loop cannot run, before any work (the message names the field)."""
        from gptff_flows.jobs.labels import check_labeller

        if not structures:
            raise GPTFFInputError("no structure given: pass at least one periodic structure")
        for structure in structures:
            require_periodic(structure)
            check_labeller(self.labeller, self.labeller_settings, structure=structure)
        self._check_md()
        self._check_loop(len(structures))
        self.check_options()
        self.check_calculator_kwargs(reserved=("skin",))

    def resolved_smooth(self) -> bool:
        """Whether training and MD use the C² envelopes: ``smooth``, or True when None."""
        self.check_options()
        return True if self.smooth is None else self.smooth

    def settings(self) -> dict:
        """The settings every job of the loop receives (units as the fields')."""
        return dict(
            name=self.name,
            labeller=self.labeller,
            labeller_settings=dict(self.labeller_settings),
            temperatures=[float(t) for t in self.temperatures],
            ensemble=self.ensemble,
            md_steps=self.md_steps,
            time_step=float(self.time_step),
            sample_interval=self.sample_interval,
            supercell=list(self.supercell),
            pressure=float(self.pressure),
            iterations=self.iterations,
            frames_per_iteration=self.frames_per_iteration,
            committee_size=self.committee_size,
            threshold=float(self.threshold),
            holdout_fraction=float(self.holdout_fraction),
            min_distance=float(self.min_distance),
            recipe=dict(self.recipe),
            seed=self.seed,
            model=str(self.model),
            dtype=self.dtype,
            smooth=self.resolved_smooth(),
            device=self.device,
            calculator_kwargs=dict(self.calculator_kwargs),
            skin=float(self.skin),
            retry_failed_labels=bool(self.retry_failed_labels),
        )

    def make(self, structures: Structure | Atoms | Sequence[Structure | Atoms]) -> Flow:
        """The loop for ``structures`` (pymatgen Structures or ASE Atoms, periodic); its output
        is the :class:`~gptff_flows.schemas.learn.LearningDocument`.

        Raises:
            GPTFFInputError: a field or a structure the loop cannot use (before any work).
        """
        if isinstance(structures, Structure | Atoms):
            structures = [structures]
        structures = [
            AseAtomsAdaptor.get_structure(s) if isinstance(s, Atoms) else s for s in structures
        ]
        self._validate(structures)
        options = self.settings()
        iterations, previous = [], None
        for k in range(self.iterations):
            iteration = learn_iteration(k, structures, options, previous)
            iteration.name = f"{self.name} iteration {k}"
            iteration.update_metadata(
                {"gptff_role": "learn_iteration", "learn_iteration": k}, dynamic=False
            )
            iterations.append(iteration)
            previous = iteration.output
        summary = learn_summary(structures, options, [j.output for j in iterations])
        summary.name = f"{self.name} summary"
        summary.update_metadata({"gptff_role": "learn_summary"}, dynamic=False)
        return Flow([*iterations, summary], output=summary.output, name=self.name)
