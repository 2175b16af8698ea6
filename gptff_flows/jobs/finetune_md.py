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
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from ase import units
from ase.md.velocitydistribution import Stationary, thermalize_momenta
from jobflow import CURRENT_JOB, JobConfig, job
from pymatgen.core import Structure
from pymatgen.io.ase import AseAtomsAdaptor

from gptff_core.errors import GPTFFInputError
from gptff_flows.analysis.arrhenius import fit_arrhenius_temperatures
from gptff_flows.analysis.diffusion import analyze_diffusion
from gptff_flows.analysis.md_verdict import MAX_VOLUME_CHANGE, check_temperature
from gptff_flows.analysis.plotting import plot_arrhenius, plot_msd
from gptff_flows.jobs.md import DYNAMICS, KBAR, conserved_drift, record_arrays, recording_dynamics
from gptff_flows.schemas.base import GPTFFProvenance
from gptff_flows.schemas.finetune_md import (
    CheckpointBlob,
    FineTuneDocument,
    FineTuneMDDocument,
    MDTemperatureDocument,
    TemperatureRow,
    pack_trajectory,
    verdict_flags,
)

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------- training data


def _step_frames(step: dict, source: str, index: int, group: str):
    """A frame from one ionic step of an atomate2 document (stress kbar, VASP sign)."""
    from gptff_core.training.datasets import make_frame, vasp_stress_to_ase

    structure = step.get("structure") or step.get("struct_or_mol")
    if structure is None:
        return None
    if isinstance(structure, dict):
        structure = Structure.from_dict(structure)
    energy = step.get("e_0_energy", step.get("energy", step.get("e_fr_energy")))
    stress = step.get("stress")
    stress = None if stress is None else vasp_stress_to_ase(stress)
    return make_frame(
        structure,
        energy,
        step.get("forces"),
        stress,
        source=source,
        index=index,
        group=group,
    )


def frames_from_documents(documents: Sequence[dict]) -> list:
    """Training frames from job-store documents (or their ``output``).

    Reads, in this order of preference: ``calcs_reversed[*].output.ionic_steps`` (atomate2 VASP
    task documents), ``output.ionic_steps`` or ``ionic_steps`` (atomate2 force-field documents),
    else the document's ``structure`` with ``energy``/``forces``/``stress`` (or those under
    ``output``). Stresses are read as kbar with VASP's sign (atomate2's convention). Each
    document is one trajectory for the train/validation split.

    Raises:
        GPTFFInputError: a document with no labelled structure.
    """
    frames = []
    for k, document in enumerate(documents):
        doc = document.get("output", document) if isinstance(document, dict) else document
        if hasattr(doc, "model_dump"):
            doc = doc.model_dump()
        uuid = document.get("uuid", f"document {k}") if isinstance(document, dict) else k
        source, steps = f"store:{uuid}", []
        for calc in doc.get("calcs_reversed") or []:
            steps += ((calc.get("output") or {}).get("ionic_steps")) or []
        if not steps:
            inner = doc.get("output") if isinstance(doc.get("output"), dict) else {}
            steps = doc.get("ionic_steps") or inner.get("ionic_steps") or []
        if not steps:
            inner = doc.get("output") if isinstance(doc.get("output"), dict) else doc
            steps = [{**inner, "structure": doc.get("structure") or inner.get("structure")}]
        found = [_step_frames(step, source, i, source) for i, step in enumerate(steps)]
        found = [f for f in found if f is not None and f.energy is not None]
        if not found:
            raise GPTFFInputError(f"{source}: no labelled structure (structure and energy)")
        frames += found
    return frames


def _collect_frames(train_files, train_documents, train_query, file_format):
    from gptff_core.training.datasets import read_datasets

    frames, sources = [], []
    if train_files:
        frames += read_datasets([str(p) for p in train_files], file_format)
        sources += [str(p) for p in train_files]
    documents = list(train_documents or [])
    if train_query:
        store = CURRENT_JOB.store
        if store is None:
            raise GPTFFInputError("train_query needs a job store (run the flow with jobflow)")
        found = list(store.query(train_query, load=True))
        if not found:
            raise GPTFFInputError(f"train_query {train_query} matched no document in the store")
        documents += found
    if documents:
        frames += frames_from_documents(documents)
        sources += [f"{len(documents)} store document(s)"]
    if not frames:
        raise GPTFFInputError("no training data: give train_files, train_documents or train_query")
    return frames, sources


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

    frames, sources = _collect_frames(train_files, train_documents, train_query, file_format)
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


def _md_maker(network: str, dynamics: type, temperature: float, settings: dict):
    """The atomate2 MD Maker (GPTFF) that runs ``dynamics`` at ``temperature`` (K)."""
    from gptff_flows.jobs import GPTFFMDMaker

    ensemble = settings["ensemble"]
    md_kwargs = {}
    if ensemble != "nve":
        md_kwargs["tdamp"] = settings["tdamp"] * units.fs
    if ensemble == "npt":
        md_kwargs["pdamp"] = settings["pdamp"] * units.fs
    total_steps = settings["equilibration_steps"] + settings["n_steps"]
    return GPTFFMDMaker(
        model=network,
        dtype=settings["dtype"],
        smooth=settings["smooth"],
        device=settings["device"],
        calculator_kwargs={"skin": settings["skin"]},
        ensemble=ensemble,
        dynamics=dynamics,
        temperature=temperature,
        pressure=settings["pressure"] * units.GPa / KBAR if ensemble == "npt" else None,
        time_step=settings["time_step"],
        n_steps=total_steps,
        ase_md_kwargs=md_kwargs,
        traj_interval=total_steps,  # the recorder keeps the frames; atomate2's observer idles
    )


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
    ``smooth`` (True/False, as resolved by the Maker), ``device``, ``skin`` Å, ``n_blocks``.

    A run that fails part-way stores its frames so far and the cause (see
    :class:`~gptff_flows.jobs.MDFailureDocument`) and raises
    :class:`~gptff_core.errors.ComputationError` naming the cause.
    """
    network, source = _network(checkpoint, model)
    ensemble = settings["ensemble"]
    cell = structure.copy()
    cell.make_supercell(settings["supercell"])
    atoms = AseAtomsAdaptor.get_atoms(cell)
    thermalize_momenta(
        atoms, temperature_K=temperature, rng=np.random.default_rng(settings["seed"])
    )
    Stationary(atoms)
    cell.add_site_property("velocities", atoms.get_velocities().tolist())
    total_steps = settings["equilibration_steps"] + settings["n_steps"]
    dynamics = recording_dynamics(DYNAMICS[ensemble], settings["traj_interval"], total_steps)
    maker = _md_maker(network, dynamics, temperature, settings)
    logger.info(
        "%s MD at %g K: %d steps of %g fs", ensemble.upper(), temperature, total_steps,
        settings["time_step"],
    )  # fmt: skip
    start = time.perf_counter()
    try:
        maker.run_ase(cell)
    except Exception as error:
        runner = getattr(maker, "_md_runner", None)
        if runner is None:
            raise
        arrays = record_arrays(runner.records, settings["time_step"])
        raise maker.md_failure(cell, error, arrays) from error
    elapsed = time.perf_counter() - start
    arrays = record_arrays(dynamics.instances[-1].records, settings["time_step"])
    provenance = GPTFFProvenance.from_calculator(maker.calculator, "md", source)
    return _temperature_document(cell, temperature, settings, arrays, elapsed, provenance)


def _temperature_document(
    cell: Structure,
    temperature: float,
    settings: dict,
    arrays: dict[str, np.ndarray],
    elapsed: float,
    provenance: GPTFFProvenance,
) -> MDTemperatureDocument:
    """Analyse the production frames of ``arrays`` (:func:`_record_arrays`): mean T checked
    against ``temperature`` (K), drift, diffusion; the document with the packed trajectory."""
    ensemble = settings["ensemble"]
    production = arrays["steps"] >= settings["equilibration_steps"]
    n_atoms = len(cell)
    time_fs, temps = arrays["time_fs"][production], arrays["temperature"][production]
    drift, deviation = conserved_drift(time_fs, arrays["conserved_energy"][production], n_atoms)
    cells = arrays["cells"][production]
    check = check_temperature(
        temperature, temps, n_atoms, float(np.ptp(time_fs)), correlation_fs=settings["tdamp"]
    )
    flags = [] if check.reached else ["temperature_not_reached"]
    mean_volume = float(np.abs(np.linalg.det(cells)).mean()) if len(cells) else cell.volume
    if ensemble == "npt" and abs(mean_volume / cell.volume - 1.0) > MAX_VOLUME_CHANGE:
        flags.append("volume_unstable")
    diffusion = None
    if production.sum() >= 3:
        frac = np.einsum("fai,fij->faj", arrays["positions"][production], np.linalg.inv(cells))
        diffusion = analyze_diffusion(
            cell,
            frac,
            settings["species"],
            temperature,
            settings["time_step"] * settings["traj_interval"],
            lattices=cells,
            charge=settings["charge"],
            n_blocks=settings["n_blocks"],
        )
        diffusion.flags += flags  # the Arrhenius fit leaves such temperatures out
        flags = list(diffusion.flags)
    else:
        flags.append("no_production_frames")
    trajectory = {key: value for key, value in arrays.items() if key != "positions"}
    trajectory["positions"] = arrays["positions"].astype(np.float32)
    trajectory["numbers"] = np.array(cell.atomic_numbers)
    return MDTemperatureDocument(
        formula_pretty=cell.composition.reduced_formula,
        chemsys=cell.composition.chemical_system,
        nsites=n_atoms,
        temperature=float(temperature),
        ensemble=ensemble,
        dynamics=DYNAMICS[ensemble].__name__,
        pressure=settings["pressure"] if ensemble == "npt" else None,
        time_step=settings["time_step"],
        n_steps=settings["n_steps"],
        equilibration_steps=settings["equilibration_steps"],
        traj_interval=settings["traj_interval"],
        supercell=[int(n) for n in settings["supercell"]],
        seed=settings["seed"],
        mean_temperature=check.mean,
        std_temperature=float(temps.std()),
        temperature_check=check,
        mean_pressure=float(arrays["pressure"][production].mean()),
        mean_volume=mean_volume,
        conserved_quantity="total energy"
        if ensemble == "nve"
        else f"{DYNAMICS[ensemble].__name__} conserved energy",
        conserved_drift=drift,
        conserved_max_deviation=deviation,
        diffusion=diffusion,
        flags=flags,
        elapsed_s=elapsed,
        ms_per_step=1e3 * elapsed / max(settings["equilibration_steps"] + settings["n_steps"], 1),
        trajectory=pack_trajectory(**trajectory),
        gptff=provenance,
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
    if results:
        arrhenius = fit_arrhenius_temperatures(results, structure)
    else:
        from gptff_flows.analysis.arrhenius import ArrheniusFit

        arrhenius = ArrheniusFit(
            species=species,
            temperatures=[],
            diffusivities=[],
            flags=["no_diffusion_results"],
            reason="no Ea: no temperature has production frames to analyse",
        )
    plots = {}
    if plot_dir is not None and results:
        uuid = CURRENT_JOB.job.uuid[:8] if CURRENT_JOB.job is not None else "local"
        stem = f"{structure.composition.reduced_formula}_{species}_{uuid}"
        plots["msd"] = str(plot_msd(results, Path(plot_dir) / f"msd_{stem}.png"))
        plots["arrhenius"] = str(
            plot_arrhenius(arrhenius, results, Path(plot_dir) / f"arrhenius_{stem}.png")
        )
    provenance = docs[0].gptff.model_copy(update={"job_type": "finetune_md"})
    return FineTuneMDDocument(
        formula_pretty=structure.composition.reduced_formula,
        chemsys=structure.composition.chemical_system,
        nsites=docs[0].nsites,
        species=species,
        structure=structure,
        finetune=None
        if finetune_doc is None
        else {
            "before": finetune_doc.before,
            "after": finetune_doc.after,
            "best_epoch": finetune_doc.best_epoch,
            "n_train": finetune_doc.n_train,
            "n_valid": finetune_doc.n_valid,
            "base_model": finetune_doc.base_model,
            "checkpoint_sha256": finetune_doc.checkpoint_sha256,
            "data_fingerprint": finetune_doc.data_fingerprint,
        },
        temperatures=rows,
        arrhenius=arrhenius,
        flags=verdict_flags(rows, arrhenius),
        activation_energy=arrhenius.activation_energy,
        activation_energy_error=arrhenius.activation_energy_error,
        conductivity_300K=arrhenius.conductivity_300K,
        plots=plots,
        inputs={**inputs, "data_fingerprint": finetune_doc and finetune_doc.data_fingerprint},
        gptff=provenance,
    )
