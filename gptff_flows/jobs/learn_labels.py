"""Labels of the active-learning loop (:mod:`gptff_flows.jobs.learn`): the selected frames'
keys, the store look-up that keeps a label from being computed twice, the label jobs for the
rest (:func:`gptff_flows.jobs.labels.make_label`), and each label's record once it ran.

A frame's key is :func:`gptff_flows.jobs.labels.frame_key` (structure, labeller, settings). A
label stored under that key — by this run before it was killed, or by any other run in the same
store — is reused when converged, and, unless ``retry_failed_labels``, also when failed (the same
settings would fail again). A label job that fails without leaving a document counts as a
failed label.
"""

from __future__ import annotations

import logging

from jobflow import CURRENT_JOB, OutputReference
from pymatgen.io.ase import AseAtomsAdaptor

from gptff_flows.schemas.learn import LabelRecord, SelectedFrame

logger = logging.getLogger(__name__)


INHERITED_METADATA = ("flow_name", "flow_uuid")
"""Metadata a job added at run time takes from the job that adds it (so queries find it by
flow); never the input hash, which names only the jobs of the flow as built."""


def inherit(item, role: str, iteration: int):
    """``item`` (job or flow) labelled with the running job's flow and its ``role``."""
    running = getattr(CURRENT_JOB, "job", None)
    metadata = dict(getattr(running, "metadata", None) or {})
    inherited = {k: metadata[k] for k in INHERITED_METADATA if k in metadata}
    item.update_metadata({**inherited, "gptff_role": role, "learn_iteration": iteration})
    return item


def selected_frame(candidate, distance: float, holdout: bool, options: dict) -> SelectedFrame:
    from gptff_flows.jobs.labels import frame_key

    key = frame_key(candidate.atoms, options["labeller"], options["labeller_settings"])
    return SelectedFrame(
        frame_key=key,
        structure_index=candidate.structure_index,
        temperature=candidate.temperature,
        step=candidate.step,
        uncertainty=candidate.uncertainty,
        distance=None if distance == float("inf") else distance,
        holdout=holdout,
    )


def label_jobs(selected: list[SelectedFrame], candidates, indices, options: dict, iteration: int):
    """(label jobs to run, :class:`LabelRecord` dicts, references to the label documents) of
    the ``selected`` frames: a label stored already (converged, or failed unless
    ``retry_failed_labels``) is reused; the others get a label job (one per key: a frame
    selected twice is labelled once and recorded once)."""
    from gptff_flows.jobs.labels import make_label
    from gptff_flows.queries.learn import stored_labels

    found = stored_labels(
        CURRENT_JOB.store,
        [s.frame_key for s in selected],
        include_failed=not options["retry_failed_labels"],
    )
    jobs, records, documents, seen = [], [], [], set()
    for k, (frame, index) in enumerate(zip(selected, indices, strict=True)):
        if frame.frame_key in seen:  # identical frames (min_distance 0): one label
            continue
        seen.add(frame.frame_key)
        base = dict(frame_key=frame.frame_key, iteration=iteration, holdout=frame.holdout)
        stored = found.get(frame.frame_key)
        if stored is not None:
            records.append(LabelRecord(**base, **stored, reused=True).model_dump())
            documents.append(OutputReference(stored["uuid"]) if stored["converged"] else None)
            continue
        structure = AseAtomsAdaptor.get_structure(candidates[index].atoms)
        name = f"{options['name']} label {iteration}.{k}"
        label = make_label(structure, options["labeller"], options["labeller_settings"], name)
        jobs.append(inherit(label, "learn_label", iteration))
        records.append(
            LabelRecord(**base, uuid=label.output.uuid, converged=False, reused=False).model_dump()
        )
        documents.append(label.output)
    logger.info(
        "iteration %d: %d labels found in the store, %d to compute",
        iteration,
        len(records) - len(jobs),
        len(jobs),
    )
    return jobs, records, documents


def completed(record: dict, document, iteration: int) -> LabelRecord:
    """``record`` with what its label document says when this ``iteration`` computed it (None:
    the label job left no output)."""
    record = LabelRecord(**record)
    if record.reused or record.iteration != iteration:
        return record
    if document is None:
        return record.model_copy(
            update=dict(
                converged=False, error="the label job failed and left no label (see its job)"
            )
        )
    doc = document if isinstance(document, dict) else document.model_dump()
    return record.model_copy(
        update=dict(
            converged=bool(doc.get("converged")),
            error=doc.get("error"),
            wall_time_s=doc.get("wall_time_s"),
        )
    )
