"""Jobs of the fine-tune-then-MD flow (composed by :mod:`gptff_flows.flows.finetune_md`).

* :func:`finetune_job` — fine-tunes a GPTFF network on frames from files or from job-store
  documents, in a scratch directory it deletes afterwards; the checkpoint leaves the job only as
  a :class:`~gptff_flows.schemas.finetune_md.CheckpointBlob` routed to the ``"data"`` store.
* :func:`md_job` — writes the checkpoint from the store into its own directory (sha256 checked)
  and runs MD at one temperature through atomate2's MD Maker
  (:class:`~gptff_flows.jobs.GPTFFMDMaker`, ASE integrators); frames, energies and the
  thermostat's conserved energy are recorded every ``traj_interval`` steps; the trajectory goes
  to the ``"data"`` store and the diffusion analysis of the production part to the document.
* :func:`summary_job` — Arrhenius fit over the usable temperatures (a temperature whose mean T
  missed its target is flagged ``temperature_not_reached`` by the MD job and left out), σ(300 K),
  plots, the summary document and its verdict flags.

Units: time step fs, temperature K, pressure GPa (converted to atomate2's kbar with ase.units),
energies eV, D cm²/s, σ mS/cm.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import numpy as np
from ase import units
from ase.md.velocitydistribution import Stationary, thermalize_momenta
from jobflow import CURRENT_JOB, JobConfig, job
from pymatgen.core import Structure
from pymatgen.io.ase import AseAtomsAdaptor

from gptff_core.errors import GPTFFInputError
from gptff_flows.analysis.arrhenius import ArrheniusFit, fit_arrhenius_temperatures
from gptff_flows.analysis.diffusion import DiffusionResult
from gptff_flows.analysis.plotting import plot_arrhenius, plot_msd
from gptff_flows.jobs.md import DYNAMICS, KBAR
from gptff_flows.jobs.md_temperature import temperature_document
from gptff_flows.jobs.training_data import collect_frames, frames_from_documents
from gptff_flows.schemas.base import GPTFFProvenance, formula_fields
from gptff_flows.schemas.finetune_md import (
    CheckpointBlob,
    FineTuneDocument,
    FineTuneMDDocument,
    MDTemperatureDocument,
    TemperatureRow,
    verdict_flags,
)
from gptff_flows.schemas.md_trajectory import trajectory_arrays

__all__ = ["finetune_job", "frames_from_documents", "md_job", "summary_job"]

logger = logging.getLogger(__name__)


@job(data=["checkpoint"], config=JobConfig(expose_store=True))
def finetune_job(
    train_files: list[str] | None = None,
    train_documents: list | None = None,
    train_query: dict | None = None,
    valid_files: list[str] | None = None,
    file_format: str | None = None,
    base_model: str = "gptff-v2",
    recipe: dict | None = None,
    valid_fraction: float = 0.1,
    dtype: str = "float32",
    smooth: bool | None = True,
    device: str = "cpu",
    seed: int = 0,
) -> FineTuneDocument:
    """Fine-tune ``base_model``; the checkpoint travels in the job store's "data" store.

    ``smooth``: train (and record) with the C² envelopes (True), without (False), or with the
    base model's setting (None); the flow passes the value its MD uses.

    Training runs in a scratch directory that is deleted when the job ends: later jobs can only
    get the network from the store.
    """
    from gptff_core.calculator import GPTFFCalculator
    from gptff_core.training import Recipe, Trainer, read_datasets, split_frames
    from gptff_core.training.datasets import fingerprint

    frames, sources = collect_frames(train_files, train_documents, train_query, file_format)
    if valid_files:
        train, valid = frames, read_datasets([str(p) for p in valid_files], file_format)
    else:
        train, valid = split_frames(frames, valid_fraction, seed=seed)
    recipe_obj = Recipe(**(recipe or {}))
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gptff-finetune-") as scratch:
        trainer = Trainer(
            base_model, recipe_obj, device=device, dtype=dtype, smooth=smooth, progress=False
        )
        result = trainer.fit(train, valid, scratch)
        blob = CheckpointBlob.from_file(result.best_checkpoint)
        calculator = GPTFFCalculator(
            model=str(result.best_checkpoint), dtype=dtype, smooth=smooth, device=device
        )
        provenance = GPTFFProvenance.from_calculator(calculator, "finetune", base_model)
    logger.info("fine-tuned %s: checkpoint sha256 %s", base_model, blob.sha256)
    return FineTuneDocument(
        base_model=str(base_model),
        n_train=len(train),
        n_valid=len(valid),
        data_sources=sources,
        data_fingerprint=fingerprint(train),
        recipe=recipe_obj.to_dict(),
        before=result.before,
        after=result.after,
        best_epoch=result.best_epoch,
        checkpoint_sha256=blob.sha256,
        checkpoint_size_bytes=blob.size_bytes,
        checkpoint=blob,
        elapsed_s=time.perf_counter() - start,
        gptff=provenance,
    )


# ---------------------------------------------------------------------- MD


def _network(checkpoint, model: str | None) -> tuple[str, str]:
    """(checkpoint path or model name to load, provenance label): the fine-tuned checkpoint
    written from the store blob into the job's directory (sha256 checked), or ``model``."""
    if checkpoint is None:
        if model is None:
            raise GPTFFInputError("md_job needs a fine-tuned checkpoint or a model")
        return str(model), str(model)
    blob = CheckpointBlob.model_validate(checkpoint)
    return str(blob.write(Path.cwd())), f"finetuned:{blob.sha256}"


def _md_maker(network: str, temperature: float, settings: dict):
    """The atomate2 MD Maker (GPTFF) that runs :data:`~gptff_flows.jobs.md.DYNAMICS` of the
    ensemble at ``temperature`` (K), recording a frame every ``traj_interval`` steps."""
    from gptff_flows.jobs import GPTFFMDMaker

    ensemble = settings["ensemble"]
    md_kwargs = {}
    if ensemble != "nve":
        md_kwargs["tdamp"] = settings["tdamp"] * units.fs
    if ensemble == "npt":
        md_kwargs["pdamp"] = settings["pdamp"] * units.fs
    calculator_kwargs = {**(settings.get("calculator_kwargs") or {}), "skin": settings["skin"]}
    return GPTFFMDMaker(
        model=network,
        dtype=settings["dtype"],
        smooth=settings["smooth"],
        device=settings["device"],
        dispersion=settings.get("dispersion", False),
        calculator_kwargs=calculator_kwargs,
        ensemble=ensemble,
        dynamics=DYNAMICS[ensemble],
        temperature=temperature,
        pressure=settings["pressure"] * units.GPa / KBAR if ensemble == "npt" else None,
        time_step=settings["time_step"],
        n_steps=settings["equilibration_steps"] + settings["n_steps"],
        ase_md_kwargs=md_kwargs,
        traj_interval=settings["traj_interval"],
        use_emmet_models=False,  # a pymatgen Trajectory
    )


def _md_cell(structure: Structure, temperature: float, settings: dict) -> Structure:
    """The ``supercell`` of ``structure`` with Maxwell–Boltzmann velocities at ``temperature``
    (K, ``seed``) and no net momentum."""
    cell = structure.copy()
    cell.make_supercell(settings["supercell"])
    atoms = AseAtomsAdaptor.get_atoms(cell)
    thermalize_momenta(
        atoms, temperature_K=temperature, rng=np.random.default_rng(settings["seed"])
    )
    Stationary(atoms)
    cell.add_site_property("velocities", atoms.get_velocities().tolist())
    return cell


@job(data=["trajectory"], config=JobConfig(expose_store=True))
def md_job(
    checkpoint: CheckpointBlob | dict | None,
    structure: Structure,
    temperature: float,
    settings: dict,
    model: str | None = None,
) -> MDTemperatureDocument:
    """MD at ``temperature`` (K) with the checkpoint from the store, then diffusion analysis.

    ``checkpoint`` None: the MD runs with ``model`` (registry name or path) as it is.

    ``settings`` (from :class:`~gptff_flows.flows.finetune_md.FineTuneMDMaker`): ``ensemble``,
    ``time_step`` fs, ``n_steps``, ``equilibration_steps``, ``traj_interval``, ``supercell``,
    ``pressure`` GPa, ``tdamp``/``pdamp`` fs, ``seed``, ``species``, ``charge``, ``dtype``,
    ``smooth`` (True/False, as resolved by the Maker), ``device``, ``skin`` Å, ``n_blocks``,
    ``calculator_kwargs`` (optional).

    The run is atomate2's (:class:`~gptff_flows.jobs.GPTFFMDMaker`); its pymatgen trajectory,
    with the thermostat's conserved energy per frame, goes to the data store. A run that fails
    part-way stores its frames so far and the cause (see
    :class:`~gptff_flows.failures.MDFailureDocument`) and raises
    :class:`~gptff_core.errors.ComputationError` naming the cause.
    """
    network, source = _network(checkpoint, model)
    cell = _md_cell(structure, temperature, settings)
    maker = _md_maker(network, temperature, settings)
    logger.info(
        "%s MD at %g K: %d steps of %g fs", settings["ensemble"].upper(), temperature,
        maker.n_steps, settings["time_step"],
    )  # fmt: skip
    start = time.perf_counter()
    result = maker.run_ase(cell)  # a failure: ComputationError, the frames so far stored
    elapsed = time.perf_counter() - start
    provenance = GPTFFProvenance.from_calculator(maker.calculator, "md", source)
    arrays = trajectory_arrays(result.trajectory)
    return temperature_document(
        cell, temperature, settings, arrays, elapsed, provenance, trajectory=result.trajectory
    )


# ---------------------------------------------------------------------- summary


def _row(doc: MDTemperatureDocument) -> TemperatureRow:
    """The summary row of one temperature (K, GPa, eV/atom/ps, cm²/s, mS/cm) with its flags."""
    diffusion, check = doc.diffusion, doc.temperature_check
    flags = doc.flags or (diffusion.flags if diffusion else ["no_production_frames"])
    return TemperatureRow(
        temperature=doc.temperature,
        mean_temperature=doc.mean_temperature,
        temperature_tolerance=check.tolerance if check else None,
        temperature_reason=check.reason if check else None,
        mean_pressure=doc.mean_pressure,
        conserved_drift=doc.conserved_drift,
        diffusivity=diffusion.diffusivity if diffusion else None,
        diffusivity_error=diffusion.diffusivity_error if diffusion else None,
        conductivity=diffusion.conductivity if diffusion else None,
        conductivity_error=diffusion.conductivity_error if diffusion else None,
        flags=list(flags),
    )


def _arrhenius(results: list[DiffusionResult], structure: Structure, species: str):
    """The Arrhenius fit over ``results`` (Ea eV, σ(300 K) mS/cm), or a fit that says there is
    none (``no_diffusion_results``)."""
    if results:
        return fit_arrhenius_temperatures(results, structure)
    return ArrheniusFit(
        species=species,
        temperatures=[],
        diffusivities=[],
        flags=["no_diffusion_results"],
        reason="no Ea: no temperature has production frames to analyse",
    )


def _plots(results, arrhenius, structure: Structure, species: str, plot_dir) -> dict[str, str]:
    """PNG plots of the MSD and of the Arrhenius fit in ``plot_dir`` (None or no results:
    none), named after the formula, species and job; {"msd": path, "arrhenius": path}."""
    if plot_dir is None or not results:
        return {}
    uuid = CURRENT_JOB.job.uuid[:8] if CURRENT_JOB.job is not None else "local"
    stem = f"{structure.composition.reduced_formula}_{species}_{uuid}"
    return {
        "msd": str(plot_msd(results, Path(plot_dir) / f"msd_{stem}.png")),
        "arrhenius": str(
            plot_arrhenius(arrhenius, results, Path(plot_dir) / f"arrhenius_{stem}.png")
        ),
    }


def _finetune_summary(doc: FineTuneDocument | None) -> dict | None:
    """What the summary keeps of the fine-tuning (metrics, frames, checkpoint sha256)."""
    if doc is None:
        return None
    keys = ("before", "after", "best_epoch", "n_train", "n_valid", "base_model")
    return {key: getattr(doc, key) for key in (*keys, "checkpoint_sha256", "data_fingerprint")}


@job
def summary_job(
    finetune: dict | None,
    md_outputs: list,
    structure: Structure,
    inputs: dict,
    plot_dir: str | None = None,
) -> FineTuneMDDocument:
    """Arrhenius fit over the temperatures, σ(300 K), plots, and the summary document.

    ``finetune`` None: the MD ran with the model as it is, not fine-tuned."""
    finetune_doc = None if finetune is None else FineTuneDocument.model_validate(finetune)
    docs = sorted(
        (MDTemperatureDocument.model_validate(d) for d in md_outputs),
        key=lambda d: d.temperature,
    )
    results = [d.diffusion for d in docs if d.diffusion is not None]
    rows = [_row(d) for d in docs]
    species = inputs["species"]
    arrhenius = _arrhenius(results, structure, species)
    return FineTuneMDDocument(
        **formula_fields(structure, nsites=docs[0].nsites),
        species=species,
        structure=structure,
        finetune=_finetune_summary(finetune_doc),
        temperatures=rows,
        arrhenius=arrhenius,
        flags=verdict_flags(rows, arrhenius),
        activation_energy=arrhenius.activation_energy,
        activation_energy_error=arrhenius.activation_energy_error,
        conductivity_300K=arrhenius.conductivity_300K,
        plots=_plots(results, arrhenius, structure, species, plot_dir),
        inputs={**inputs, "data_fingerprint": finetune_doc and finetune_doc.data_fingerprint},
        gptff=docs[0].gptff.model_copy(update={"job_type": "finetune_md"}),
    )
