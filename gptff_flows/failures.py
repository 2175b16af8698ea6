"""What a failed GPTFF job leaves behind, and the cause a user sees.

* :class:`MDFailureDocument` — an MD run that failed part-way (GPTFF refused a collapsed
  structure, a non-finite energy or position): the cause, the steps completed and every finite
  frame so far. :func:`store_failure` writes it into the running job's store as a document of its
  own, ``"<job name> (failed)"`` (metadata ``gptff_status: "failed"``; the trajectory in the
  ``"data"`` store), without the job's input hash, so resuming a flow reruns the failed job.
* :func:`collect_job_failures` — jobflow reports a failed job only in its log; this collects
  ``job '<name>' failed: <exception>`` for each, and :func:`raise_with_causes` turns jobflow's
  "Flow did not finish running successfully" into a :class:`~gptff_core.errors.ComputationError`
  that names them.

Units: time step fs, temperature K, positions and cells Å, energies eV.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import datetime
from typing import Literal
from uuid import uuid4

import numpy as np
from atomate2.ase.md import MDEnsemble
from atomate2.ase.utils import TrajectoryObserver
from jobflow import CURRENT_JOB
from pydantic import BaseModel, Field
from pymatgen.core import Lattice, Structure

from gptff_core.errors import ComputationError
from gptff_flows.schemas.base import GPTFFProvenance

logger = logging.getLogger(__name__)


class MDFailureDocument(BaseModel):
    """What a GPTFF MD run that failed part-way leaves in the job store (a document of its own,
    named ``"<job name> (failed)"``, metadata ``gptff_status: "failed"``)."""

    status: Literal["failed"] = "failed"
    job_name: str = Field(description="name of the MD job that failed")
    job_uuid: str | None = Field(None, description="uuid of that job (None: run outside jobflow)")
    error: str = Field(description="the cause: exception type and message")
    steps_completed: int = Field(description="MD steps completed before the failure")
    n_steps: int = Field(description="MD steps requested")
    time_step: float | None = Field(None, description="fs")
    temperature: float | None = Field(None, description="K, target at the start")
    ensemble: str = Field(description="'nve', 'nvt' or 'npt'")
    formula_pretty: str = Field(description="reduced formula")
    chemsys: str = Field(description="chemical system")
    nsites: int = Field(description="atoms simulated")
    n_frames: int = Field(description="frames kept (every finite frame up to the failure)")
    last_structure: Structure | None = Field(None, description="last finite frame")
    trajectory: dict | None = Field(
        None,
        description="frames so far (npz; in the 'data' store; read with "
        "gptff_flows.schemas.finetune_md.load_trajectory): positions Å, cells Å, numbers, "
        "steps, time_fs, potential_energy eV, temperature K (and what the MD job recorded)",
    )
    gptff: GPTFFProvenance | None = Field(None, description="the network that was running")


def observer_arrays(runner) -> dict:
    """Frames of atomate2's trajectory observer attached to ``runner``: ``positions`` (Å),
    ``cells`` (Å), ``steps``, ``potential_energy`` (eV), ``temperature`` (K); {} without one."""
    for function, interval, _, _ in getattr(runner, "observers", []):
        if isinstance(function, TrajectoryObserver):
            lists = [function.atom_positions, function.cells, function.energies]
            lists.append(function.temperatures)
            n = min(len(values) for values in lists)
            return dict(
                positions=np.asarray(function.atom_positions[:n], dtype=float).reshape(n, -1, 3),
                cells=np.asarray(function.cells[:n], dtype=float).reshape(n, 3, 3),
                steps=np.arange(n) * int(interval),
                potential_energy=np.asarray(function.energies[:n], dtype=float),
                temperature=np.asarray(function.temperatures[:n], dtype=float),
            )
    return {}


def failure_document(
    maker, structure, error: BaseException, runner, arrays: dict
) -> MDFailureDocument:
    """The :class:`MDFailureDocument` of ``maker``'s (a GPTFF MD Maker) failed run from
    ``structure``; ``arrays`` as :func:`observer_arrays` gives them (frames with a non-finite
    value are dropped)."""
    from gptff_flows.schemas.finetune_md import pack_trajectory

    finite = np.ones(len(arrays.get("steps", [])), dtype=bool)
    for key in ("positions", "cells", "potential_energy"):
        if key in arrays and finite.size:
            values = np.asarray(arrays[key], dtype=float).reshape(finite.size, -1)
            finite &= np.isfinite(values).all(axis=1)
    kept = {key: np.asarray(value)[finite] for key, value in arrays.items()}
    last = None
    if finite.any():
        species = [site.specie for site in structure]
        last = Structure(
            Lattice(kept["cells"][-1]), species, kept["positions"][-1], coords_are_cartesian=True
        )
    time_step = float(maker.time_step) if maker.time_step is not None else None
    if finite.any() and time_step is not None:
        kept["time_fs"] = kept["steps"] * time_step
    kept["numbers"] = np.array(structure.atomic_numbers)
    provenance = None
    if getattr(maker, "_calculator", None) is not None:
        provenance = GPTFFProvenance.from_calculator(maker.calculator, "md", maker.model)
    current = CURRENT_JOB.job
    return MDFailureDocument(
        job_name=current.name if current is not None else maker.name,
        job_uuid=current.uuid if current is not None else None,
        error=f"{type(error).__name__}: {' '.join(str(error).split())}",
        steps_completed=int(getattr(runner, "nsteps", 0)),
        n_steps=int(maker.n_steps),
        time_step=time_step,
        temperature=_start_temperature(maker),
        ensemble=MDEnsemble(maker.ensemble).value,
        formula_pretty=structure.composition.reduced_formula,
        chemsys=structure.composition.chemical_system,
        nsites=len(runner.atoms) if runner is not None else len(structure),
        n_frames=int(finite.sum()),
        last_structure=last,
        trajectory=pack_trajectory(**kept) if finite.any() else None,
        gptff=provenance,
    )


def _start_temperature(maker) -> float | None:
    """K, the target temperature at the start of ``maker``'s run (None: not set)."""
    temperature = maker.temperature
    if isinstance(temperature, list | tuple):
        temperature = temperature[0] if temperature else None
    return None if temperature is None else float(temperature)


def store_failure(document: MDFailureDocument) -> str | None:
    """Store ``document`` in the running job's store as ``"<job name> (failed)"`` (its
    trajectory in the ``"data"`` store when there is one); its uuid, None outside jobflow.

    The failed job itself keeps no output, so resuming a flow reruns it."""
    store, current = CURRENT_JOB.store, CURRENT_JOB.job
    if store is None or current is None:
        return None
    uuid = str(uuid4())
    entry = {
        "uuid": uuid,
        "index": 1,
        "name": f"{current.name} (failed)",
        "output": document,
        "completed_at": datetime.now().isoformat(),
        # not the job's input hash: a resume must not take this for the job's result
        "metadata": {k: v for k, v in current.metadata.items() if "hash" not in k}
        | {"gptff_status": "failed", "failed_job": current.uuid},
        "hosts": list(current.hosts or []),
    }
    save = {"data": ["trajectory"]} if "data" in (store.additional_stores or {}) else False
    store.update(entry, key=["uuid", "index"], save=save)
    logger.info("MD job %s failed; its trajectory so far is stored as %s", current.name, uuid)
    return uuid


class JobFailures(logging.Handler):
    """Keeps the cause of each job jobflow reports as failed (it logs them at INFO with the
    traceback) as ``job '<name>' failed: <exception type>: <message>``."""

    def __init__(self, forward: logging.Logger | None = None, threshold: int = 0) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []
        self.forward, self.threshold = forward, threshold

    def emit(self, record: logging.LogRecord) -> None:
        name, found, trace = record.getMessage().partition(" failed with exception:")
        if found:
            lines = [line for line in trace.strip().splitlines() if line.strip()]
            kind, colon, message = (lines[-1] if lines else "unknown").partition(": ")
            if colon and " " not in kind:  # "gptff_core.errors.StructureError" → "StructureError"
                kind = kind.rsplit(".", 1)[-1]
            self.messages.append(f"job '{name}' failed: {kind}{colon}{message}")
        if self.forward is not None and record.levelno >= self.threshold:
            self.forward.handle(record)  # what the user's handlers would have shown anyway


@contextlib.contextmanager
def collect_job_failures():
    """Collect the failures jobflow's local manager logs while the block runs (its INFO records
    are enabled for that; the user's handlers still see only the levels they saw before)."""
    jobflow_logger = logging.getLogger("jobflow.managers.local")
    level, propagate = jobflow_logger.level, jobflow_logger.propagate
    handler = JobFailures()
    if not jobflow_logger.isEnabledFor(logging.INFO):
        handler = JobFailures(jobflow_logger.parent, jobflow_logger.getEffectiveLevel())
        jobflow_logger.setLevel(logging.INFO)
        jobflow_logger.propagate = False
    jobflow_logger.addHandler(handler)
    try:
        yield handler
    finally:
        jobflow_logger.removeHandler(handler)
        jobflow_logger.setLevel(level)
        jobflow_logger.propagate = propagate


def raise_with_causes(failures: JobFailures | None, error: BaseException) -> None:
    """Raise a :class:`~gptff_core.errors.ComputationError` naming each failed job and its
    cause (from ``error``, jobflow's bare RuntimeError); nothing when none was collected."""
    if failures is not None and failures.messages and not isinstance(error, ComputationError):
        raise ComputationError(
            "; ".join(failures.messages) + " (completed jobs stay stored)"
        ) from error
