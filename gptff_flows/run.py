"""Running GPTFF flows: locally into a job store, or on a jobflow-remote project.

Both entry points label every job with the top-level flow's name and uuid (``metadata.flow_name``,
``metadata.flow_uuid``; a Maker's own label is kept), so :mod:`gptff_flows.queries` can find
results by flow. Each job's output is written to the store when that job finishes, so a crash
loses at most the job that was running; ``run_flow(..., resume=True)`` then reruns only the jobs
whose results are missing.
"""

from __future__ import annotations

import logging
import os
import tempfile

from jobflow import Flow, Job, JobStore, run_locally

from gptff_flows.stores import describe_store, open_job_store

logger = logging.getLogger(__name__)


def label_flow(flow: Flow | Job) -> Flow | Job:
    """Add ``flow_name``/``flow_uuid`` metadata to every job of ``flow`` that lacks them."""
    jobs = [flow] if isinstance(flow, Job) else [job for job, _ in flow.iterflow()]
    for job in jobs:
        job.metadata.setdefault("flow_name", flow.name)
        job.metadata.setdefault("flow_uuid", flow.uuid)
    return flow


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
            (``None``: ``$GPTFF_STORE``, else the embedded default store).
        work_dir: directory the jobs run in (scratch files land there); default a temporary
            directory, removed afterwards (results are in the store, not in files).
        log: show jobflow's own log lines.
        resume: reuse the stored results of jobs that already completed in an earlier run of a
            flow of the same name (see :func:`reuse_completed`); the flow's name must encode
            everything that determines its results, as the ``workflows/`` campaigns' names do.

    Returns:
        jobflow's responses, ``{job uuid: {index: Response}}`` (reused jobs have none).

    Raises:
        RuntimeError: a job failed (jobflow's message names it; completed jobs stay stored).
    """
    store = store if isinstance(store, JobStore) else open_job_store(store)
    if isinstance(flow, list):
        flow = Flow(flow)
    logger.info("running %s into %s", flow.name, describe_store(store))
    label_flow(flow)
    reused = reuse_completed(flow, store) if resume else []
    if reused:
        logger.info("reusing %d completed job(s) from the store: %s", len(reused),
                    ", ".join(reused))  # fmt: skip
    options = dict(store=store, ensure_success=True, log=log,
                   allow_external_references=bool(reused))  # fmt: skip
    if work_dir is not None:
        return run_locally(flow, root_dir=work_dir, **options)
    with tempfile.TemporaryDirectory(prefix="gptff-jobs-") as scratch:
        return run_locally(flow, root_dir=scratch, **options)


def reuse_completed(flow: Flow, store: JobStore) -> list[str]:
    """Take out of ``flow`` the jobs already completed in an earlier run; their names.

    A job is completed when the store holds a job document with its name whose
    ``metadata.flow_name`` is ``flow.name`` (jobflow stores only successful jobs). The newest
    such document is copied under the job's uuid, so the remaining jobs resolve their references
    to it as if it had just run; blobs (trajectories, checkpoints) are shared, not copied. For
    flat flows whose jobs are all known in advance (no job replaces itself with a new flow).
    """
    store.connect()
    done = []
    for index, job in enumerate(flow.jobs):
        if not isinstance(job, Job) or job.uuid in _referenced_by_output(flow):
            continue
        found = store.query_one(
            {"name": job.name, "metadata.flow_name": flow.name},
            sort={"completed_at": -1},
            load=False,
        )
        if found is None:
            continue
        found.pop("_id", None)
        found |= {"uuid": job.uuid, "index": 1}
        found["metadata"] = {**found.get("metadata", {}), "flow_uuid": flow.uuid}
        store.docs_store.update(found, key=["uuid", "index"])
        done.append(index)
    names = [flow.jobs[i].name for i in done]
    if done:
        flow.remove_jobs(done)
    return names


def _referenced_by_output(flow: Flow) -> set[str]:
    """uuids of the jobs the flow's output refers to (they always run: jobflow keeps them)."""
    from jobflow.core.reference import find_and_get_references

    return {ref.uuid for ref in find_and_get_references(flow.output)}


def submit_flow(flow: Flow | Job, worker: str, project: str | None = None, **kwargs) -> list:
    """Submit ``flow`` to a jobflow-remote project's ``worker``; returns the job db ids.

    ``kwargs`` go to :func:`jobflow_remote.submit_flow` (``exec_config``, ``resources``, ...).
    See ``workflows/jobflow_remote/`` for a project with a local and a SLURM worker.
    """
    from jobflow_remote import submit_flow as jfr_submit_flow

    label_flow(flow)
    return jfr_submit_flow(flow, worker=worker, project=project, **kwargs)


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

    from gptff_flows.schemas import GPTFFProvenance

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
