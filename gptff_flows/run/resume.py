"""Resuming a flow: reuse the stored result of every job that already ran with the same inputs.

A job is recognised by its input hash and flow name (:mod:`gptff_flows.run.labels`).
:func:`reuse_completed` cuts the jobs that have a finished stored run out of a copy of the flow
and points the remaining jobs' references at those runs, so nothing is stored twice. A job that
replaced itself with new jobs (a campaign sized at run time) is finished only once its
replacement's results are stored; :func:`marking_replacements` records, while a flow runs, which
run replaced itself (:data:`REPLACED_AT`).
"""

from __future__ import annotations

import copy
import functools
import types
from contextlib import contextmanager

from jobflow import Flow, Job, JobStore, Response

from gptff_flows.run.labels import INPUT_HASH, all_jobs, replace_references

REPLACED_AT = "gptff_replaced_at"
"""Job metadata key: the index of a run that replaced itself with new jobs (its own document
is then not the job's result; the replacement's last document, one index higher, is)."""


def reuse_completed(flow: Flow, store: JobStore) -> tuple[Flow, list[str], dict]:
    """The part of ``flow`` still to run: ``(flow to run, names of the jobs reused, responses)``.

    A job is reused when the store holds a finished run with the same :data:`INPUT_HASH` and
    ``metadata.flow_name`` (the newest, if several; a run that replaced itself counts once its
    replacement finished). The flow to run is a copy of ``flow`` without the reused jobs (nor the
    nested flows they leave empty), whose remaining jobs refer to the stored runs by their uuids
    (jobflow resolves them from the store): no document is copied. ``responses`` holds the
    stored output of each reused job the flow's output refers to (see
    :func:`~gptff_flows.run.run_flow`). ``flow`` must be labelled
    (:func:`~gptff_flows.run.labels.label_flow`) and is not changed.
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
    data = replace_references(data, lambda ref: ref | {"uuid": done.get(ref["uuid"],
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
def marking_replacements(flow: Flow):
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
