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
from pydantic import Field
from pymatgen.core import Lattice, Structure
from pymatgen.core.trajectory import Trajectory

from gptff_core.errors import ComputationError
from gptff_flows.schemas.base import GPTFFDocument, GPTFFProvenance, formula_fields
from gptff_flows.schemas.md_trajectory import TRAJECTORY_DOCUMENT_VERSION, add_thermo

logger = logging.getLogger(__name__)


class MDFailureDocument(GPTFFDocument):
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
    n_frames: int = Field(description="frames kept (every finite frame up to the failure)")
    last_structure: Structure | None = Field(None, description="last finite frame")
    trajectory: Trajectory | dict | None = Field(
        None,
        description="frames so far (in the 'data' store): a pymatgen Trajectory as atomate2 "
        "records it, with step, kinetic_energy and conserved_energy (eV) per frame (document "
        "version 2), or npz arrays (version 1); read with "
        "gptff_flows.schemas.md_trajectory.load_trajectory",
    )
    gptff: GPTFFProvenance | None = Field(None, description="the network that was running")
    document_version: int = Field(
        1,
        description="2: trajectory is a pymatgen Trajectory (atomate2's format); 1 (documents "
        "without this field): npz arrays, base64",
    )


def _trajectory_observer(runner) -> TrajectoryObserver | None:
    """atomate2's trajectory observer attached to ``runner`` (an ASE integrator), if any."""
    for function, *_ in getattr(runner, "observers", []):
        if isinstance(function, TrajectoryObserver):
            return function
    return None


def _is_finite(*values) -> bool:
    return all(np.isfinite(np.asarray(value, dtype=float)).all() for value in values)


def partial_trajectory(runner, thermo, time_step: float | None) -> Trajectory | None:
    """The frames atomate2's trajectory observer on ``runner`` (a failed run's integrator)
    recorded so far, as its pymatgen ``Trajectory`` with ``thermo``'s quantities (a
    :class:`~gptff_flows.jobs.md.ThermoObserver` or None; see
    :func:`~gptff_flows.schemas.md_trajectory.add_thermo`) and ``time_step`` (fs). A frame
    recorded only in part, or with a non-finite position, cell or energy, is left out (from the
    observers' lists too); None when no frame is left."""
    observer = _trajectory_observer(runner)
    if observer is None or not observer.atom_positions:
        return None
    series = [observer.energies, observer.forces, observer.stresses, observer.magmoms]
    series += [observer.atom_positions, observer.cells, observer.velocities, observer.temperatures]
    if thermo is not None:
        series += [thermo.steps, thermo.kinetic_energies, thermo.conserved_energies]
    recorded = [values for values in series if values]
    keep = [
        i
        for i in range(min(map(len, recorded)))
        if _is_finite(observer.atom_positions[i], observer.cells[i], observer.energies[i])
    ]
    if not keep:
        return None
    for values in recorded:
        values[:] = [values[i] for i in keep]
    trajectory = observer.to_pymatgen_trajectory(filename=None)
    if thermo is None:
        trajectory.time_step = time_step
        return trajectory
    return add_thermo(trajectory, thermo, time_step)


def failure_document(maker, structure, error: BaseException, runner) -> MDFailureDocument:
    """The :class:`MDFailureDocument` of ``maker``'s (a GPTFF MD Maker) failed run from
    ``structure`` whose integrator was ``runner``: the frames of :func:`partial_trajectory`."""
    time_step = float(maker.time_step) if maker.time_step is not None else None
    trajectory = partial_trajectory(runner, getattr(maker, "_thermo", None), time_step)
    last = None
    if trajectory is not None:
        lattice = trajectory.lattice if trajectory.constant_lattice else trajectory.lattice[-1]
        last = Structure(Lattice(lattice), trajectory.species, trajectory.coords[-1])
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
        **formula_fields(structure, nsites=len(runner.atoms) if runner is not None else None),
        n_frames=0 if trajectory is None else len(trajectory),
        last_structure=last,
        trajectory=trajectory,
        gptff=provenance,
        document_version=TRAJECTORY_DOCUMENT_VERSION,
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
