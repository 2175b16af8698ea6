"""Labels on every job of a flow: which flow it belongs to, and the hash of its inputs.

:func:`label_flow` gives each job ``metadata.flow_name`` and ``metadata.flow_uuid`` (the top-level
flow's; a Maker's own label is kept), so :mod:`gptff_flows.queries` finds results by flow, and
``metadata.input_hash`` (:func:`input_hashes`), so that ``run_flow(..., resume=True)``
(:mod:`gptff_flows.run.resume`) recognises a job that already ran with the same inputs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator

from jobflow import Flow, Job

INPUT_HASH = "input_hash"
"""Job metadata key: sha256 of the job's function, Maker and inputs (:func:`input_hashes`)."""


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
    return replace_references(data, lambda ref: {"job": of(ref["uuid"]),
                                                  "attributes": ref.get("attributes")})  # fmt: skip


def replace_references(data, replace):
    """``data`` (jsanitized) with every serialised ``OutputReference`` passed through
    ``replace``."""
    if isinstance(data, dict):
        if data.get("@class") == "OutputReference" and "uuid" in data:
            return replace(data)
        return {k: replace_references(v, replace) for k, v in data.items()}
    if isinstance(data, list):
        return [replace_references(v, replace) for v in data]
    return data
