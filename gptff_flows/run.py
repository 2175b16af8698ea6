"""Running GPTFF flows: locally into a job store, or on a jobflow-remote project.

Both entry points label every job with the top-level flow's name and uuid (``metadata.flow_name``,
``metadata.flow_uuid``; a Maker's own label is kept) and with the hash of its inputs
(``metadata.input_hash``, :func:`input_hashes`), so :mod:`gptff_flows.queries` can find results by
flow and ``run_flow(..., resume=True)`` can recognise a job that already ran. Each job's output is
written to the store when that job finishes, so a crash loses at most the job that was running;
resuming then reruns only the jobs whose results are missing, and stores nothing twice.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import logging
import os
import tempfile
import types
from collections.abc import Iterator
from contextlib import contextmanager

from jobflow import Flow, Job, JobStore, Response, run_locally

from gptff_core.errors import StoreError
from gptff_flows.stores import describe_store, one_line, open_job_store, recorded_failure

logger = logging.getLogger(__name__)

INPUT_HASH = "input_hash"
"""Job metadata key: sha256 of the job's function, Maker and inputs (:func:`input_hashes`)."""
REPLACED_AT = "gptff_replaced_at"
"""Job metadata key: the index of a run that replaced itself with new jobs (its own document
is then not the job's result; the replacement's last document, one index higher, is)."""


def all_jobs(flow: Flow | Job) -> Iterator[Job]:
    """Every job of ``flow``, nested flows included."""
    if isinstance(flow, Job):
        yield flow
        return
    for item in flow.jobs:
        yield from all_jobs(item)


def label_flow(flow: Flow | Job) -> Flow | Job:
    """Add ``flow_name``/``flow_uuid`` metadata to every job of ``flow`` that lacks them, and
    the job's :data:`INPUT_HASH`."""
    hashes = input_hashes(flow)
    for job in all_jobs(flow):
        job.metadata.setdefault("flow_name", flow.name)
        job.metadata.setdefault("flow_uuid", flow.uuid)
        job.metadata[INPUT_HASH] = hashes[job.uuid]
    return flow


def input_hashes(flow: Flow | Job) -> dict[str, str]:
    """``{job uuid: sha256 hex}`` of every job of ``flow``: a hash of the job's function (module
    and qualified name), its Maker's fields and its arguments, where a reference to another job's
    output counts as that job's hash (recursively) plus the attributes taken from it. Two jobs
    with the same hash compute the same thing from the same inputs, whatever their uuids. Files
    named by path are hashed by path, not by content; a reference to a job outside ``flow``
    counts by its uuid."""
    jobs = {job.uuid: job for job in all_jobs(flow)}
    hashes: dict[str, str] = {}

    def of(uuid: str) -> str:
        if uuid not in jobs:
            return f"external {uuid}"
        if uuid not in hashes:
            job = jobs[uuid]
            function = getattr(job.function, "original", job.function)
            payload = {
                "function": f"{function.__module__}.{function.__qualname__}",
                "maker": _canonical(job.maker, of),
                "args": _canonical(list(job.function_args), of),
                "kwargs": _canonical(job.function_kwargs, of),
            }
            text = json.dumps(payload, sort_keys=True, default=repr, separators=(",", ":"))
            hashes[uuid] = hashlib.sha256(text.encode()).hexdigest()
        return hashes[uuid]

    for uuid in jobs:
        of(uuid)
    return hashes


def _canonical(value, of):
    """``value`` as JSON-ready data, each output reference replaced by its job's hash."""
    from monty.json import jsanitize

    try:
        data = jsanitize(value, strict=True, enum_values=True)
    except Exception:  # not MSONable: its text stands in (a memory address never matches)
        data = jsanitize(value, strict=False, enum_values=True)
    return _replace_references(data, lambda ref: {"job": of(ref["uuid"]),
                                                  "attributes": ref.get("attributes")})  # fmt: skip


def _replace_references(data, replace):
    """``data`` (jsanitized) with every serialised ``OutputReference`` passed through
    ``replace``."""
    if isinstance(data, dict):
        if data.get("@class") == "OutputReference" and "uuid" in data:
            return replace(data)
        return {k: _replace_references(v, replace) for k, v in data.items()}
    if isinstance(data, list):
        return [_replace_references(v, replace) for v in data]
    return data


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
    if isinstance(flow, list):
        flow = Flow(flow)
    elif isinstance(flow, Job):
        flow = Flow([flow], output=flow.output, name=flow.name)
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
    options = dict(store=store, ensure_success=True, log=log,
                   allow_external_references=bool(reused))  # fmt: skip
    from gptff_flows.failures import collect_job_failures, raise_with_causes

    failures = None
    try:
        with _marking_replacements(flow), collect_job_failures() as failures:
            if work_dir is not None:
                return responses | run_locally(flow, root_dir=work_dir, **options)
            with tempfile.TemporaryDirectory(prefix="gptff-jobs-") as scratch:
                return responses | run_locally(flow, root_dir=scratch, **options)
    except RuntimeError as exc:
        if (failure := recorded_failure(store)) is not None:
            raise failure from exc
        raise_with_causes(failures, exc)  # names each failed job and its cause
        raise


def reuse_completed(flow: Flow, store: JobStore) -> tuple[Flow, list[str], dict]:
    """The part of ``flow`` still to run: ``(flow to run, names of the jobs reused, responses)``.

    A job is reused when the store holds a finished run with the same :data:`INPUT_HASH` and
    ``metadata.flow_name`` (the newest, if several; a run that replaced itself counts once its
    replacement finished). The flow to run is a copy of ``flow`` without the reused jobs (nor the
    nested flows they leave empty), whose remaining jobs refer to the stored runs by their uuids
    (jobflow resolves them from the store): no document is copied. ``responses`` holds the
    stored output of each reused job the flow's output refers to (see :func:`run_flow`).
    ``flow`` must be labelled (:func:`label_flow`) and is not changed.
    """
    store.connect()
    done = _completed_runs(store, list(all_jobs(flow)))
    if not done:
        return flow, [], {}
    names = [job.name for job in all_jobs(flow) if job.uuid in done]
    responses = _stored_responses(flow, store, done)
    remaining = copy.deepcopy(flow)
    for job in all_jobs(remaining):
        if job.uuid not in done:
            job.function_args = tuple(_retarget(a, done) for a in job.function_args)
            job.function_kwargs = {k: _retarget(v, done) for k, v in job.function_kwargs.items()}
    _remove_jobs(remaining, set(done))
    return remaining, names, responses


def _completed_runs(store: JobStore, jobs: list[Job]) -> dict[str, str]:
    """``{job uuid: uuid of its newest finished stored run}`` for the ``jobs`` that have one."""
    key = f"metadata.{INPUT_HASH}"
    wanted = sorted({job.metadata[INPUT_HASH] for job in jobs})
    fields = ["uuid", "completed_at", key, "metadata.flow_name"]
    found = list(store.query({key: {"$in": wanted}}, properties=fields))
    last: dict[str, dict] = {}  # each run's document of highest index: its final result
    runs = sorted({doc["uuid"] for doc in found})
    for doc in store.query({"uuid": {"$in": runs}}, ["uuid", "index", f"metadata.{REPLACED_AT}"]):
        if doc["uuid"] not in last or doc["index"] > last[doc["uuid"]]["index"]:
            last[doc["uuid"]] = doc
    newest: dict[tuple, tuple] = {}
    for doc in found:
        if not _finished(store, last[doc["uuid"]]):
            continue
        meta = doc["metadata"]
        label = (meta[INPUT_HASH], meta.get("flow_name"))
        newest[label] = max(
            newest.get(label, ("", "")), (doc.get("completed_at") or "", doc["uuid"])
        )
    labels = {job.uuid: (job.metadata[INPUT_HASH], job.metadata.get("flow_name")) for job in jobs}
    return {uuid: newest[label][1] for uuid, label in labels.items() if label in newest}


def _finished(store: JobStore, final: dict) -> bool:
    """Whether the run whose document of highest index is ``final`` has its result: a run that
    replaced itself has it once the replacement's results, which its last document refers to,
    are all stored (jobflow stores that document even when they failed)."""
    from jobflow.core.reference import find_and_get_references

    replaced_at = (final.get("metadata") or {}).get(REPLACED_AT)
    if replaced_at is None:
        return True
    if replaced_at == final["index"]:
        return False  # the replacement's own last document was never written
    doc = store.query_one({"uuid": final["uuid"], "index": final["index"]}, ["output"])
    wanted = {ref.uuid for ref in find_and_get_references(doc.get("output"))}
    found = {d["uuid"] for d in store.query({"uuid": {"$in": sorted(wanted)}}, ["uuid"])}
    return wanted <= found


def _retarget(value, done: dict[str, str]):
    """``value`` with its references to reused jobs pointed at their stored runs' uuids."""
    from jobflow.core.reference import find_and_get_references
    from monty.json import MontyDecoder, jsanitize

    if not any(ref.uuid in done for ref in find_and_get_references(value)):
        return value
    data = jsanitize(value, strict=True, enum_values=True, allow_bson=True)
    data = _replace_references(data, lambda ref: ref | {"uuid": done.get(ref["uuid"],
                                                                         ref["uuid"])})  # fmt: skip
    return MontyDecoder().process_decoded(data)


def _stored_responses(flow: Flow, store: JobStore, done: dict[str, str]) -> dict:
    from jobflow.core.reference import find_and_get_references
    from monty.json import MontyDecoder

    responses = {}
    for ref in find_and_get_references(flow.output):
        if ref.uuid in done and ref.uuid not in responses:
            output = store.get_output(done[ref.uuid], which="last", load=True)
            responses[ref.uuid] = {1: Response(output=MontyDecoder().process_decoded(output))}
    return responses


def _remove_jobs(flow: Flow, uuids: set[str]) -> None:
    """Remove the jobs ``uuids`` from ``flow`` (a copy about to run) and its nested flows, and
    the flows they leave empty. The outputs of these flows are dropped: they may refer to
    removed jobs, and ``run_locally`` needs only the jobs."""
    for item in flow.jobs:
        if isinstance(item, Flow):
            _remove_jobs(item, uuids)
    flow.output = None
    gone = [i for i, item in enumerate(flow.jobs)
            if (isinstance(item, Job) and item.uuid in uuids)
            or (isinstance(item, Flow) and not item.jobs)]  # fmt: skip
    if gone:
        flow.remove_jobs(gone)


def _marking_replacement(job: Job, inner):
    """``job``'s function, recording in its metadata a call that replaced the job."""

    @functools.wraps(inner, assigned=("__module__", "__name__", "__qualname__"), updated=())
    def run(*args, **kwargs):
        function = getattr(inner, "original", inner)
        bound = getattr(inner, "__self__", None)
        if bound is not None and not isinstance(bound, types.ModuleType):
            function = types.MethodType(function, bound)  # a Maker's method, as jobflow does
        returned = function(*args, **kwargs)
        replaced = isinstance(returned, Response) and returned.replace is not None
        if replaced or isinstance(returned, Flow | Job) or _all_jobs_or_flows(returned):
            job.metadata[REPLACED_AT] = job.index
        return returned

    return run


def _all_jobs_or_flows(value) -> bool:
    items = list(value.values()) if isinstance(value, dict) else value
    return (
        isinstance(items, list | tuple)
        and bool(items)
        and all(isinstance(x, Flow | Job) for x in items)
    )


@contextmanager
def _marking_replacements(flow: Flow):
    """While the block runs, each job of ``flow`` records a replacement (:data:`REPLACED_AT`)."""
    jobs = list(all_jobs(flow))
    functions = [job.function for job in jobs]
    for job in jobs:
        job.function = _marking_replacement(job, job.function)
    try:
        yield
    finally:
        for job, function in zip(jobs, functions, strict=True):
            job.function = function


def submit_flow(flow: Flow | Job, worker: str, project: str | None = None, **kwargs) -> list:
    """Submit ``flow`` to a jobflow-remote project's ``worker``; returns the job db ids.

    The project is checked first (:func:`check_remote_project`). ``kwargs`` go to
    :func:`jobflow_remote.submit_flow` (``exec_config``, ``resources``, ...). See
    ``workflows/jobflow_remote/`` for a project with a local and a SLURM worker.

    Raises:
        StoreError: no such project, a project file that does not parse, an unknown worker, or
            a queue database that does not answer.
    """
    from jobflow_remote import submit_flow as jfr_submit_flow

    check_remote_project(project, worker)
    label_flow(flow)
    try:
        return jfr_submit_flow(flow, worker=worker, project=project, **kwargs)
    except Exception as exc:
        if type(exc).__module__.startswith(("jobflow_remote", "pymongo", "maggma")):
            raise StoreError(
                f"jobflow-remote could not take the flow ({type(exc).__name__}: "
                f"{one_line(exc)}); check the project with `jf project check`"
            ) from exc
        raise


_HOW_TO_CREATE = (
    "create one with `jf project generate NAME` (or copy workflows/jobflow_remote/gptff.yaml) into "
    "{folder}, and select it with --project NAME or $JFREMOTE_PROJECT"
)


def check_remote_project(project: str | None = None, worker: str | None = None) -> None:
    """Refuse to submit unless jobflow-remote has ``project`` (default: its selected project)
    with ``worker``: :class:`StoreError`, one line saying how to create or select one."""
    from jobflow_remote import SETTINGS
    from jobflow_remote.config.manager import ConfigManager

    folder = SETTINGS.projects_folder
    how = _HOW_TO_CREATE.format(folder=folder)
    try:
        manager = ConfigManager()
    except Exception as exc:  # two projects with one name, an unreadable folder
        raise StoreError(f"jobflow-remote projects in {folder}: {one_line(exc)}") from None
    name = project or SETTINGS.project
    known = sorted(manager.projects_data)
    if not known:
        raise StoreError(
            f"no jobflow-remote project in {folder} (or none that parses: `jf project check`); "
            f"{how}"
        )
    if name is None and len(known) > 1:
        raise StoreError(
            f"several jobflow-remote projects ({', '.join(known)}): choose one with --project "
            "or $JFREMOTE_PROJECT"
        )
    name = name or known[0]
    if name not in manager.projects_data:
        raise StoreError(
            f"no jobflow-remote project {name!r} in {folder} (known: {', '.join(known)}; a "
            f"project file that does not parse is skipped: `jf project check`); {how}"
        )
    workers = manager.projects_data[name].project.workers
    if worker is not None and worker not in workers:
        raise StoreError(
            f"jobflow-remote project {name!r} has no worker {worker!r} (it has: "
            f"{', '.join(sorted(workers)) or 'none'}); give one of those"
        )


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
