"""Fine-tune, then MD at several temperatures, then diffusion: the paper's Li₃YCl₆ study as a flow.

:class:`FineTuneMDMaker` composes three kinds of jobs
(:mod:`gptff_flows.jobs.finetune_md`):

1. **fine-tune** — GPTFF (``model``, default gptff-v2) fine-tuned on frames from files
   (``train_files``, formats of ``docs/training.md``) or from documents already in the job store
   (``train_documents``: job outputs or references to them, e.g. atomate2 DFT task documents;
   ``train_query``: a store query run by the job). Training happens in a scratch directory that
   is deleted at the end of the job; the checkpoint leaves the job only as a base64 blob in the
   store's ``"data"`` store, with its sha256 in the document.
2. **MD**, one job per temperature — each writes the checkpoint from the store into its own
   directory (sha256 checked) and runs NVT (Nosé–Hoover chain) or NPT (MTK) through atomate2's MD
   Maker with ASE integrators on the ``supercell``; ``equilibration_steps`` are run and
   discarded, then ``n_steps`` of production are analysed (the mean temperature is checked
   against the target: ``temperature_not_reached``); the trajectory goes to the data store. A
   run that fails part-way keeps its frames and the cause in the store and fails the job.
3. **summary** — Arrhenius fit over the usable temperatures (diffusive, framework intact,
   target reached; Ea eV ± error), σ extrapolated to 300 K (mS/cm), PNG plots of the MSD and of
   the Arrhenius fit, and the run's verdict (``flags``).

MD engine: ASE per temperature (atomate2) rather than TorchSim batching all temperatures;
measured on this machine (CPU, 1 thread, Li₃N 2×2×2, 32 atoms, 3 temperatures × 100 steps,
``benchmarks/finetune_md_engines.py``): ASE 61 ms/step, TorchSim 104 ms/step (TorchSim/ASE time
1.7) — the ASE calculator reuses its neighbour list (``skin``) while the TorchSim model rebuilds
it every step, and one CPU core gains nothing from batching. Independent jobs per temperature
also run in parallel on a cluster.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar

from jobflow import Flow, Maker, OutputReference
from pymatgen.core import Structure

from gptff_core.errors import GPTFFInputError
from gptff_flows.analysis.diffusion import MIN_MSD_A2
from gptff_flows.jobs.finetune_md import finetune_job, md_job, summary_job
from gptff_flows.jobs.force_field import require_periodic
from gptff_flows.jobs.md import DYNAMICS
from gptff_flows.options import GPTFFOptions, absolute_dir, require_int, require_number

logger = logging.getLogger(__name__)

ENSEMBLES = ("nvt", "npt", "nve")

FAST_RECIPE = {"epochs": 10}
"""Default recipe overrides: 10 epochs (the paper's recipe otherwise, learning rate 2e-4)."""


def checkpoint_smooth(model: str) -> bool:
    """The smooth setting ``model`` carries: False for the registry's published networks, the
    stored configuration for a checkpoint path (a toolkit checkpoint fine-tuned in smooth mode
    says True).

    Raises:
        CheckpointError: the path is missing or not a readable checkpoint.
    """
    from gptff_core.checkpoint import PROJECT_FORMAT
    from gptff_core.model import GPTFFConfig
    from gptff_core.pretrained import PRETRAINED_MODELS, load_checkpoint_file, resolve_checkpoint

    if isinstance(model, str) and model.strip().lower() in PRETRAINED_MODELS:
        return False  # published checkpoints carry no envelopes
    raw = load_checkpoint_file(resolve_checkpoint(model))
    if raw.get("format") != PROJECT_FORMAT:
        return False
    return bool(GPTFFConfig.from_dict(raw.get("config", {})).smooth)


@dataclass
class FineTuneMDMaker(GPTFFOptions, Maker):
    """Fine-tune GPTFF on your data, run MD at several temperatures, report D, σ and Ea.

    ``model`` (the network fine-tuned), ``dtype``, ``device``, ``dispersion`` and
    ``calculator_kwargs`` (of the MD calculator) are :class:`~gptff_flows.options.GPTFFOptions`';
    ``smooth`` below.

    ``dispersion=True`` adds D3(BJ) for PBE to the MD only: the fine-tuning trains GPTFF alone,
    without D3, on the labels as given, and D3 is added when the fine-tuned network is evaluated.
    That is right for labels from a functional without dispersion (PBE, as the published
    networks'); labels that already contain van der Waals (optB88-vdW, PBE+D3, ...) would count
    it twice, so leave ``dispersion`` off with them. The MD documents record it
    (``gptff.dispersion``, ``gptff.dispersion_settings``).

    Args:
        name: flow name.
        species: mobile element whose diffusion is analysed, e.g. ``"Li"``.
        temperatures: K, one MD job each (at least one; three or more give Ea's error).
        ensemble: ``"nvt"`` (Nosé–Hoover chain), ``"npt"`` (MTK, isotropic+shear cell) or
            ``"nve"`` (velocity Verlet; for checks).
        time_step: fs.
        n_steps: production steps per temperature (analysed).
        equilibration_steps: steps run first and discarded.
        traj_interval: steps between stored frames.
        supercell: repetitions of the input cell along a, b, c.
        pressure: GPa, NPT target.
        tdamp: fs, thermostat time constant (default 100 time steps).
        pdamp: fs, barostat time constant (default 1000 time steps).
        seed: seed of the initial Maxwell–Boltzmann velocities.
        charge: charge (e) of the mobile ion for Nernst–Einstein (None: pymatgen's valence
            guess, +1 for Li/Na).
        n_blocks: blocks of the production run for D's error.
        finetune: ``False`` skips fine-tuning: the MD runs with ``model`` as it is (e.g. the
            published network when no training data exist); the summary says so
            (``finetune`` is None).
        recipe: :class:`~gptff_core.training.Recipe` fields (default :data:`FAST_RECIPE`).
        valid_fraction: fraction of the frames split off for validation (whole trajectories).
        file_format: ASE format name or ``gptff-csv`` for ``train_files`` (None: guessed).
        smooth: C² cutoff envelopes for fine-tuning and MD. None (default): on when fine-tuning
            (the network is trained with them and the MD conserves energy: see
            ``docs/finetune_md.md``), and without fine-tuning the model's own setting (off for
            the published networks: the MD runs exactly the published network). True/False
            force it. :meth:`resolved_smooth` gives the value used; the MD documents record it.
        skin: Å, neighbour-list skin of the MD calculator (not in ``calculator_kwargs``).
        plot_dir: directory of the PNG plots (None: no plots); a relative path is resolved
            against the working directory when the Maker is built.
    """

    name: str = "GPTFF fine-tune MD"
    species: str = "Li"
    temperatures: list[float] = field(default_factory=lambda: [600.0, 800.0, 1000.0])
    ensemble: str = "nvt"
    time_step: float = 2.0
    n_steps: int = 10_000
    equilibration_steps: int = 1_000
    traj_interval: int = 10
    supercell: list[int] = field(default_factory=lambda: [1, 1, 1])
    pressure: float = 0.0
    tdamp: float | None = None
    pdamp: float | None = None
    seed: int = 0
    charge: float | None = None
    n_blocks: int = 5
    finetune: bool = True
    recipe: dict = field(default_factory=lambda: dict(FAST_RECIPE))
    valid_fraction: float = 0.1
    file_format: str | None = None
    skin: float = 1.0
    plot_dir: str | None = None
    supports_dispersion: ClassVar[bool] = True

    def __post_init__(self) -> None:
        self.plot_dir = absolute_dir(self.plot_dir)

    def resolved_smooth(self) -> bool:
        """Whether fine-tuning and MD use the C² envelopes (see ``smooth``).

        Raises:
            GPTFFInputError: a bad ``model``, ``dtype``, ``smooth`` or ``device``; the model's
                checkpoint cannot be read (without fine-tuning, a path's own setting is read
                from it).
        """
        self.check_options()
        if self.smooth is not None:
            return self.smooth
        return True if self.finetune else checkpoint_smooth(self.model)

    def _check_md(self) -> None:
        """Refuse MD settings the flow cannot run (the message names the field and unit)."""
        if self.ensemble not in ENSEMBLES:
            raise GPTFFInputError(
                f"ensemble must be one of {', '.join(ENSEMBLES)}, got {self.ensemble!r}"
            )
        temps = list(self.temperatures)
        if not temps:
            raise GPTFFInputError("temperatures must be positive numbers (K), got []")
        for k, temperature in enumerate(temps):
            require_number(f"temperatures[{k}]", temperature, "K")
        if len(set(temps)) != len(temps):
            raise GPTFFInputError(f"temperatures must differ, got {temps!r}")
        if require_number("time_step", self.time_step, "fs") > 10:
            raise GPTFFInputError(f"time_step is in fs; {self.time_step} fs is far too long")
        require_number("skin", self.skin, "Å")
        require_int("n_steps", self.n_steps)
        require_int("traj_interval", self.traj_interval)
        require_int("equilibration_steps", self.equilibration_steps, minimum=0)
        if self.n_steps // self.traj_interval < 3:
            raise GPTFFInputError(
                f"n_steps/traj_interval = {self.n_steps}/{self.traj_interval} gives fewer than 3 "
                "production frames; lower traj_interval or raise n_steps"
            )
        if len(self.supercell) != 3:
            raise GPTFFInputError(f"supercell must be three integers ≥ 1, got {self.supercell!r}")
        for k, n in enumerate(self.supercell):
            require_int(f"supercell[{k}]", n)

    def _check_analysis(self, structure: Structure) -> None:
        """Refuse fine-tuning and analysis settings the flow cannot use."""
        from gptff_core.training import Recipe

        if not 0 < self.valid_fraction < 1:
            raise GPTFFInputError(f"valid_fraction must be in (0, 1), got {self.valid_fraction}")
        require_int("n_blocks", self.n_blocks, minimum=2)
        if self.charge is not None:
            require_number("charge", self.charge, "e")
        if self.species not in {site.specie.symbol for site in structure}:
            raise GPTFFInputError(
                f"species {self.species!r} is not in {structure.composition.reduced_formula}; "
                "give the mobile element, e.g. Li"
            )
        try:
            Recipe(**self.recipe)
        except TypeError as exc:
            raise GPTFFInputError(f"recipe: {exc}") from None

    def _validate(self, structure: Structure) -> None:
        """Refuse a structure or a field the flow cannot run (the message names the field)."""
        require_periodic(structure)
        self._check_md()
        self._check_analysis(structure)
        self.check_options()
        self.check_calculator_kwargs(reserved=("skin",))

    def settings(self) -> dict:
        """The MD settings every MD job receives (fs, K, GPa, Å); ``calculator_kwargs`` only
        when given (so the MD jobs' input hashes, hence resuming, are those of earlier
        versions)."""
        extra = (
            {"calculator_kwargs": dict(self.calculator_kwargs)} if self.calculator_kwargs else {}
        )
        if self.dispersion:  # likewise only when on
            extra["dispersion"] = True
        return dict(
            ensemble=self.ensemble,
            time_step=float(self.time_step),
            n_steps=self.n_steps,
            equilibration_steps=self.equilibration_steps,
            traj_interval=self.traj_interval,
            supercell=list(self.supercell),
            pressure=float(self.pressure),
            tdamp=float(self.tdamp if self.tdamp is not None else 100 * self.time_step),
            pdamp=float(self.pdamp if self.pdamp is not None else 1000 * self.time_step),
            seed=self.seed,
            species=self.species,
            charge=self.charge,
            dtype=self.dtype,
            smooth=self.resolved_smooth(),
            device=self.device,
            skin=float(self.skin),
            n_blocks=self.n_blocks,
            **extra,
        )

    def _training_data(self, train_files, train_documents, train_query, valid_files):
        """(training files, validation files) as absolute paths, after checking that data are
        given exactly when fine-tuning and that the files exist."""
        has_data = bool(train_files or train_documents or train_query)
        if self.finetune and not has_data:
            raise GPTFFInputError(
                "no training data: give train_files, train_documents or train_query "
                "(or finetune=False to run MD with the model as it is)"
            )
        if not self.finetune and (has_data or valid_files):
            raise GPTFFInputError("finetune=False, but training or validation data were given")
        files = [str(Path(p).resolve()) for p in train_files or []]
        for path in files:
            if not Path(path).is_file():
                raise GPTFFInputError(f"training file {path} does not exist")
        return files, [str(Path(p).resolve()) for p in valid_files or []] or None

    def _finetune_job(self, files, train_documents, train_query, valid, smooth: bool):
        """The fine-tune job (its output's ``checkpoint`` feeds the MD jobs)."""
        finetune = finetune_job(
            train_files=files or None,
            train_documents=train_documents,
            train_query=train_query,
            valid_files=valid,
            file_format=self.file_format,
            base_model=self.model,
            recipe=dict(self.recipe),
            valid_fraction=self.valid_fraction,
            dtype=self.dtype,
            smooth=smooth,
            device=self.device,
            seed=self.seed,
        )
        finetune.name = f"{self.name} fine-tune"
        finetune.update_metadata({"gptff_role": "finetune"})
        return finetune

    def _md_jobs(self, checkpoint, structure: Structure, settings: dict) -> list:
        """One MD job per temperature (K, ascending)."""
        md_jobs = []
        for temperature in sorted(float(t) for t in self.temperatures):
            md = md_job(checkpoint, structure, temperature, settings, model=self.model)
            md.name = f"{self.name} {self.ensemble.upper()} {temperature:g} K"
            md.update_metadata(
                {"gptff_role": "finetune_md_temperature", "temperature": temperature}
            )
            md_jobs.append(md)
        return md_jobs

    def make(
        self,
        structure: Structure,
        train_files: list[str | Path] | None = None,
        train_documents: list | OutputReference | None = None,
        train_query: dict | None = None,
        valid_files: list[str | Path] | None = None,
        checkpoint: OutputReference | dict | None = None,
    ) -> Flow:
        """The flow for ``structure`` (its output is a ``FineTuneMDDocument``).

        Training data: any of ``train_files`` (paths readable where the fine-tune job runs),
        ``train_documents`` (job outputs or references to them) and ``train_query`` (a job-store
        query, e.g. ``{"name": {"$regex": "static"}}``); ``valid_files`` replaces the split.
        ``checkpoint``: a network already fine-tuned, as a
        :class:`~gptff_flows.schemas.finetune_md.CheckpointBlob` or a reference to one (the
        active-learning loop's final model, see :func:`learned_md_flow`); the MD runs with it
        and nothing is fine-tuned here (``finetune`` must be False).
        """
        self._validate(structure)
        if checkpoint is not None and self.finetune:
            raise GPTFFInputError("a checkpoint is given: set finetune=False (the MD uses it)")
        files, valid = self._training_data(train_files, train_documents, train_query, valid_files)
        settings = self.settings()
        jobs = []
        if self.finetune:
            args = (files, train_documents, train_query, valid, settings["smooth"])
            jobs.append(self._finetune_job(*args))
            checkpoint = jobs[0].output.checkpoint
        md_jobs = self._md_jobs(checkpoint, structure, settings)
        inputs = {**asdict(self), "train_files": files, "valid_files": valid}
        if not self.dispersion:  # older runs keep their input hash
            inputs.pop("dispersion", None)
        if checkpoint is not None and not jobs:  # only then: older runs keep their input hash
            inputs["given_checkpoint"] = True
        inputs["smooth"] = settings["smooth"]  # as used, not None
        inputs["train_query"] = train_query
        inputs["dynamics"] = DYNAMICS[self.ensemble].__name__
        inputs["min_msd_A2"] = MIN_MSD_A2
        summary = summary_job(
            jobs[0].output if jobs else None,
            [md.output for md in md_jobs],
            structure,
            inputs,
            plot_dir=self.plot_dir,
        )
        summary.name = f"{self.name} summary"
        summary.update_metadata({"gptff_role": "finetune_md_summary"})
        flow = Flow([*jobs, *md_jobs, summary], output=summary.output, name=self.name)
        flow.update_metadata({"flow_name": self.name})
        return flow


def learned_md_flow(learn_maker, md_maker: FineTuneMDMaker, structure: Structure) -> Flow:
    """The paper's pipeline as one flow: ``learn_maker``'s active-learning loop
    (:class:`~gptff_flows.flows.learn.ActiveLearningMaker`) on ``structure``, then
    ``md_maker``'s MD and diffusion analysis with the loop's final model (its first committee
    member). ``md_maker.finetune`` must be False: the loop did the fine-tuning."""
    learn = learn_maker.make(structure)
    md = md_maker.make(structure, checkpoint=learn.output.committee[0])
    flow = Flow([learn, md], output=md.output, name=f"{learn_maker.name} then {md_maker.name}")
    flow.update_metadata({"flow_name": md_maker.name})
    return flow
