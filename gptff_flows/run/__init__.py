"""Running GPTFF flows: locally into a job store, or on a jobflow-remote project.

Both entry points label every job with the top-level flow's name and uuid (``metadata.flow_name``,
``metadata.flow_uuid``; a Maker's own label is kept) and with the hash of its inputs
(``metadata.input_hash``, :func:`input_hashes`), so :mod:`gptff_flows.queries` can find results by
flow and ``run_flow(..., resume=True)`` can recognise a job that already ran. Each job's output is
written to the store when that job finishes, so a crash loses at most the job that was running;
resuming then reruns only the jobs whose results are missing, and stores nothing twice.

The labels are made in :mod:`gptff_flows.run.labels`, resuming in :mod:`gptff_flows.run.resume`,
submission to jobflow-remote in :mod:`gptff_flows.run.remote`; their public names are importable
from here too.
"""

from __future__ import annotations

import logging
import os
import tempfile

from jobflow import Flow, Job, JobStore, run_locally

from gptff_flows.run.labels import INPUT_HASH, all_jobs, input_hashes, label_flow  # noqa: F401
from gptff_flows.run.remote import check_remote_project, submit_flow  # noqa: F401
from gptff_flows.run.resume import REPLACED_AT, marking_replacements, reuse_completed  # noqa: F401
from gptff_flows.stores import describe_store, open_job_store, recorded_failure

logger = logging.getLogger(__name__)


def run_flow(
    flow: Flow | Job | list[Flow | Job],
    store: JobStore | str | os.PathLike | None = None,
    *,
    work_dir: str | os.PathLike | None = None,
    log: bool = False,
    resume: bool = False,
) -> dict:
    """Run ``flow`` here, writing each job's output to ``store`` as the job finishes.

    Args:
        flow: a jobflow Flow or Job (e.g. from a GPTFF Maker), or a list of them (run as one
            Flow).
        store: a JobStore, or a location for :func:`~gptff_flows.stores.open_job_store`
            (``None``: ``$GPTFF_STORE``, else the embedded default store), checked before any
            job runs.
        work_dir: directory the jobs run in (scratch files land there); default a temporary
            directory, removed afterwards (results are in the store, not in files).
        log: show jobflow's own log lines.
        resume: reuse the stored result of every job that already completed with the same
            inputs in a flow of the same name (see :func:`reuse_completed`); nothing is stored
            twice, and resuming a completed flow runs nothing.

    Returns:
        jobflow's responses, ``{job uuid: {index: Response}}``. A reused job has none, except
        the jobs the flow's output refers to: their stored output is given as
        ``{1: Response(output=...)}``, so ``responses[flow.output.uuid][1].output`` always works.

    Raises:
        ComputationError: a job failed (a RuntimeError naming each failed job and its cause;
            completed jobs stay stored).
        StoreError: the store cannot be opened, read or written (also when that made a job fail).
    """
    store = store if isinstance(store, JobStore) else open_job_store(store)
    flow = _as_flow(flow)
    logger.info("running %s into %s", flow.name, describe_store(store))
    label_flow(flow)
    reused, responses = [], {}
    if resume:
        flow, reused, responses = reuse_completed(flow, store)
    if reused:
        logger.info("reusing %d completed job(s) from the store: %s", len(reused),
                    ", ".join(reused))  # fmt: skip
    if next(all_jobs(flow), None) is None:
        return responses
    return responses | _run_here(flow, store, work_dir, log, external=bool(reused))


def _as_flow(flow: Flow | Job | list[Flow | Job]) -> Flow:
    """``flow`` as one Flow: a list becomes a Flow of its items, a Job a Flow of that job with
    its output and name."""
    if isinstance(flow, list):
        return Flow(flow)
    if isinstance(flow, Job):
        return Flow([flow], output=flow.output, name=flow.name)
    return flow


def _run_here(
    flow: Flow, store: JobStore, work_dir: str | os.PathLike | None, log: bool, external: bool
) -> dict:
    """jobflow's ``run_locally`` of ``flow`` into ``store`` in ``work_dir`` (``None``: a
    temporary directory, removed afterwards); ``external``: the flow refers to stored runs.

    Raises:
        StoreError: the store failed (also when jobflow reported it only as a failed job).
        ComputationError: a job failed; the message names each failed job and its cause.
    """
    from gptff_flows.failures import collect_job_failures, raise_with_causes

    options = dict(store=store, ensure_success=True, log=log, allow_external_references=external)
    failures = None
    try:
        with marking_replacements(flow), collect_job_failures() as failures:
            if work_dir is not None:
                return run_locally(flow, root_dir=work_dir, **options)
            with tempfile.TemporaryDirectory(prefix="gptff-jobs-") as scratch:
                return run_locally(flow, root_dir=scratch, **options)
    except RuntimeError as exc:
        if (failure := recorded_failure(store)) is not None:
            raise failure from exc
        raise_with_causes(failures, exc)  # names each failed job and its cause
        raise


def record_relaxation(
    store: JobStore,
    atoms,
    energy: float,
    converged: bool,
    n_steps: int,
    calculator,
    model: str,
    source: str = "gptff relax",
) -> str:
    """Store a relaxation made outside jobflow (``gptff relax --store``); returns its uuid.

    The document has the key paths of a :class:`~gptff_flows.jobs.GPTFFRelaxMaker` output that
    :func:`gptff_flows.queries.relaxations` reads: ``energy`` in eV, the relaxed ``atoms``
    (ASE), ``n_steps`` optimizer steps, and the provenance of ``calculator``.
    """
    from datetime import datetime
    from uuid import uuid4

    from pymatgen.io.ase import AseAtomsAdaptor

    from gptff_flows.schemas.base import GPTFFProvenance

    structure = AseAtomsAdaptor.get_structure(atoms)
    provenance = GPTFFProvenance.from_calculator(calculator, "relax", model)
    output = {
        "formula_pretty": structure.composition.reduced_formula,
        "chemsys": structure.composition.chemical_system,
        "nsites": len(structure),
        "volume": structure.volume,
        "structure": structure.as_dict(),
        "is_force_converged": bool(converged),
        "output": {"energy": energy, "energy_per_atom": energy / len(structure)},
        "gptff": provenance.model_dump(),
    }
    output["output"]["n_steps"] = n_steps
    uuid = str(uuid4())
    doc = {
        "uuid": uuid,
        "index": 1,
        "name": source,
        "output": output,
        "completed_at": datetime.now().isoformat(),
        "metadata": {"flow_name": source},
        "hosts": [],
    }
    store.connect()
    store.docs_store.update(doc, key=["uuid", "index"])
    return uuid
