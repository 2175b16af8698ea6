"""Jobs of the active-learning loop (composed by :mod:`gptff_flows.flows.learn`).

The flow is one :func:`learn_iteration` job per iteration, each taking the previous one's
output, then :func:`learn_summary`. What each iteration does is decided when it runs:

* :func:`learn_iteration` — samples MD frames with the previous iteration's committee (the base
  model at iteration 0; :mod:`gptff_flows.jobs.learn_sampling`). From iteration 1 on, when the
  committee's mean frame uncertainty is below ``threshold``, it returns a
  :class:`~gptff_flows.schemas.learn.LearningStop`, which the later iterations hand on without
  work. Otherwise it selects frames, looks each label up in the store by its frame key
  (:mod:`gptff_flows.jobs.learn_labels`: a label is never computed twice) and replaces itself
  with a label job per missing frame and :func:`train_iteration`.
* :func:`train_iteration` — fine-tunes the committee from the base model on every training
  label so far (:mod:`gptff_flows.jobs.learn_committee`; a committee stored with the same
  training key is reused), evaluates it on the held-out labels and returns the
  :class:`~gptff_flows.schemas.learn.LearningIterationDocument` (the iteration's output). A
  failed label (not converged, or a label job that left no output) is recorded and left out.
* :func:`learn_summary` — the :class:`~gptff_flows.schemas.learn.LearningDocument`.

Why a job per iteration rather than each iteration replacing itself with the next: an iteration
is finished exactly when its committee is stored, so ``run_flow(..., resume=True)`` after a kill
reuses the finished iterations whole (no MD, no training) and reruns the one that was cut, whose
labels it finds in the store. Checkpoints travel through the store's ``"data"`` store
(:class:`~gptff_flows.schemas.finetune_md.CheckpointBlob`); scratch files live in temporary
directories removed at the end of each job. ``options`` is
:meth:`gptff_flows.flows.learn.ActiveLearningMaker.settings`.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence

from jobflow import CURRENT_JOB, Flow, JobConfig, OnMissing, OutputReference, Response, job
from pymatgen.core import Structure

from gptff_core.errors import ComputationError
from gptff_flows.jobs.learn_committee import (
    committee_provenance,
    fit_or_reuse,
    held_out_metrics,
    write_blobs,
)
from gptff_flows.jobs.learn_labels import completed, inherit, label_jobs, selected_frame
from gptff_flows.jobs.learn_sampling import choose, md_cell, sample
from gptff_flows.schemas.base import formula_fields
from gptff_flows.schemas.learn import (
    IterationSummary,
    LearningDocument,
    LearningIterationDocument,
    LearningStop,
    SamplingSummary,
    SelectedFrame,
)

UNTRAINED = "committee_untrained"
"""Flag of an iteration whose members all kept the reference refit (best epoch 0): they differ
only in metadata and agree everywhere, so their zero disagreement says nothing and the next
iteration does not stop on the threshold."""

__all__ = ["UNTRAINED", "learn_iteration", "learn_summary", "should_stop", "train_iteration"]

logger = logging.getLogger(__name__)


def _calculator(options: dict, committee: list | None, scratch: str, iteration: int):
    """(MD calculator, its description): the base model at iteration 0, else the committee."""
    extra = {**options["calculator_kwargs"], "skin": options["skin"]}
    precision = dict(dtype=options["dtype"], smooth=options["smooth"], device=options["device"])
    if not committee:
        from gptff_core.calculator import GPTFFCalculator

        return GPTFFCalculator(model=options["model"], **precision, **extra), "base model"
    from gptff_core.committee import CommitteeCalculator

    calculator = CommitteeCalculator(write_blobs(committee, scratch), **precision, **extra)
    return calculator, f"committee of iteration {iteration - 1}"


def _as_dict(document) -> dict | None:
    """A resolved job output (a pydantic document or its dict) as a dict."""
    if document is None or isinstance(document, dict):
        return document
    return document.model_dump()


def should_stop(iteration: int, previous: dict | None, mean: float | None, threshold: float):
    """Whether the loop stops at ``iteration``: the mean uncertainty (eV/Å) of the frames the
    previous committee sampled is below ``threshold`` (eV/Å), and that committee was trained
    (not flagged :data:`UNTRAINED`). Never at iteration 0 (no committee yet)."""
    if iteration == 0 or previous is None or mean is None:
        return False
    return UNTRAINED not in previous.get("flags", []) and mean < threshold


@job(data=["committee"], config=JobConfig(expose_store=True))
def learn_iteration(
    iteration: int,
    structures: list[Structure],
    options: dict,
    previous: dict | LearningIterationDocument | LearningStop | None = None,
):
    """Job: one iteration. Samples MD frames with the ``previous`` iteration's committee (the
    base model at iteration 0), selects frames and looks their labels up, and replaces itself
    with the label jobs still needed and :func:`train_iteration` (whose
    :class:`LearningIterationDocument` becomes this job's output). Returns a
    :class:`LearningStop` instead when the sampled mean uncertainty (eV/Å) is below
    ``threshold`` (iteration ≥ 1), and hands on a ``previous`` :class:`LearningStop` unchanged
    without any work (the loop has stopped)."""
    previous = _as_dict(previous)
    if previous is not None and previous.get("stopped"):
        return LearningStop.model_validate(previous)
    committee = previous["committee"] if previous else None
    with tempfile.TemporaryDirectory(prefix="gptff-learn-") as scratch:
        calculator, sampler = _calculator(options, committee, scratch, iteration)
        candidates, sampling = sample(structures, calculator, options, iteration, sampler)
    mean = sampling.mean_uncertainty
    logger.info("iteration %d: %d frames sampled by the %s, mean uncertainty %s eV/Å", iteration,
                len(candidates), sampler, mean)  # fmt: skip
    if should_stop(iteration, previous, mean, options["threshold"]):
        return LearningStop(iteration=iteration, sampling=sampling)
    if not candidates:
        raise ComputationError(f"iteration {iteration}: no MD frame was sampled: "
                               + "; ".join(sampling.md_failures))  # fmt: skip
    labels = [_as_dict(r) for r in (previous["labels"] if previous else [])]
    own = CURRENT_JOB.job.uuid if CURRENT_JOB.job is not None else None
    return Response(replace=_iteration_flow(iteration, structures, options, candidates,
                                            sampling, labels, own))  # fmt: skip


def _iteration_flow(iteration, structures, options, candidates, sampling, labels, own) -> Flow:
    """Selection, then the label jobs of the frames not stored and the committee's training,
    as one flow whose output is the :class:`LearningIterationDocument`."""
    selection, holdout = choose(candidates, options, iteration)
    selected = [
        selected_frame(candidates[i], distance, i in holdout, options)
        for i, distance in zip(selection.indices, selection.distances, strict=True)
    ]
    jobs, records, documents = label_jobs(selected, candidates, selection.indices, options,
                                          iteration)  # fmt: skip
    earlier = [OutputReference(r["uuid"]) if r["converged"] else None for r in labels]
    train = train_iteration(iteration, structures, options, labels + records,
                            earlier + documents, [s.model_dump() for s in selected],
                            sampling.model_dump(), selection.reason, own)  # fmt: skip
    train.name = f"{options['name']} committee {iteration}"
    inherit(train, "learn_committee", iteration)
    return Flow([*jobs, train], output=train.output)


@job(
    data=["committee"],
    config=JobConfig(expose_store=True, on_missing_references=OnMissing.NONE),
)
def train_iteration(
    iteration: int,
    structures: list[Structure],
    options: dict,
    records: list[dict],
    documents: list,
    selected: list[dict],
    sampling: dict,
    selection_note: str | None = None,
    job_uuid: str | None = None,
) -> LearningIterationDocument:
    """Job: fine-tune (or reuse) the committee on every converged training label so far and
    evaluate it on the held-out ones. ``records``/``documents``: every label so far and its
    document (None for a failed one), this iteration's last; ``job_uuid``: the iteration job
    this one's output stands for."""
    records = [completed(r, d, iteration) for r, d in zip(records, documents, strict=True)]
    usable = [(r, d) for r, d in zip(records, documents, strict=True) if r.converged]
    train = [(r, d) for r, d in usable if not r.holdout]
    if not train:
        errors = "; ".join(sorted({r.error or "?" for r in records if not r.converged}))
        raise ComputationError(f"iteration {iteration}: no training label converged ({errors})")
    with tempfile.TemporaryDirectory(prefix="gptff-learn-committee-") as scratch:
        fitted = fit_or_reuse(
            CURRENT_JOB.store,
            [r.frame_key for r, _ in train],
            [d for _, d in train],
            options,
            scratch,
        )
        paths = write_blobs(fitted.committee, scratch)
        held = [d for r, d in usable if r.holdout]
        metrics, evaluation_s = held_out_metrics(held, paths, options) if held else (None, 0.0)
        provenance = committee_provenance(paths[0], options)
    return _iteration_document(
        iteration,
        structures,
        options,
        records,
        selected,
        sampling,
        selection_note,
        fitted,
        metrics,
        evaluation_s,
        provenance,
        n_train=len(train),
        job_uuid=job_uuid,
    )


def _iteration_document(
    iteration,
    structures,
    options,
    records,
    selected,
    sampling,
    note,
    fitted,
    metrics,
    evaluation_s,
    provenance,
    n_train,
    job_uuid=None,
):
    """The :class:`LearningIterationDocument` of one iteration, with its flags."""
    sampling = SamplingSummary.model_validate(sampling)
    flags = []
    if note:
        flags.append("selected_fewer")
    if any(not r.converged for r in records if r.iteration == iteration):
        flags.append("labels_failed")
    if sampling.md_failures:
        flags.append("md_failed")
    if all(member.best_epoch == 0 for member in fitted.members):
        flags.append(UNTRAINED)
    nsites = len(md_cell(structures[0], options["supercell"]))
    return LearningIterationDocument(
        **formula_fields(structures[0], nsites=nsites),
        gptff=provenance,
        job_uuid=job_uuid,
        iteration=iteration,
        labeller=options["labeller"],
        sampling=sampling,
        selected=[SelectedFrame.model_validate(s) for s in selected],
        selection_note=note,
        labels=records,
        n_labels=sum(r.converged for r in records),
        n_train=n_train,
        n_holdout=sum(r.converged and r.holdout for r in records),
        n_failed=sum(not r.converged for r in records),
        n_computed=sum(r.iteration == iteration and not r.reused for r in records),
        train_key=fitted.train_key,
        reused_committee=fitted.reused,
        members=fitted.members,
        committee_sha256=[blob.sha256 for blob in fitted.committee],
        committee=fitted.committee,
        held_out=metrics,
        training_s=fitted.training_s,
        evaluation_s=evaluation_s,
        flags=flags,
    )


@job(data=["committee"])
def learn_summary(structures: list[Structure], options: dict, outputs: list) -> LearningDocument:
    """Job: the :class:`LearningDocument` of the run from the iterations' outputs: the last
    committee trained, every label, per-iteration metrics, and why the loop stopped. (Its
    inputs are references and settings only, so a rebuilt flow has the same input hash and a
    resumed run reuses it and every job after it.)"""
    documents = [_as_dict(o) for o in outputs]
    trained = [(doc, doc.job_uuid) for doc in (LearningIterationDocument.model_validate(d)
               for d in documents if not d.get("stopped"))]  # fmt: skip
    stops = [LearningStop.model_validate(d) for d in documents if d.get("stopped")]
    last = trained[-1][0]
    return final_document(
        structures,
        options,
        last,
        [_summary(doc, uuid) for doc, uuid in trained],
        stops[0] if stops else None,
    )


def _summary(doc: LearningIterationDocument, uuid: str) -> IterationSummary:
    new = [r for r in doc.labels if r.iteration == doc.iteration]
    return IterationSummary(
        iteration=doc.iteration,
        n_labels=doc.n_labels,
        n_new_labels=sum(r.converged for r in new),
        n_computed=doc.n_computed,
        n_failed=doc.n_failed,
        sampled_mean_uncertainty=doc.sampling.mean_uncertainty,
        sampled_max_uncertainty=doc.sampling.max_uncertainty,
        held_out=doc.held_out,
        committee_sha256=doc.committee_sha256,
        flags=doc.flags,
        uuid=uuid,
    )


def final_document(
    structures: Sequence[Structure],
    options: dict,
    last: LearningIterationDocument,
    rows: list[IterationSummary],
    stop: LearningStop | None,
) -> LearningDocument:
    """The :class:`LearningDocument` of a run whose last trained iteration is ``last``, stopped
    by the threshold (``stop``) or at the end of the iterations."""
    records, held = last.labels, last.held_out
    with tempfile.TemporaryDirectory(prefix="gptff-learn-final-") as scratch:
        provenance = committee_provenance(write_blobs(last.committee, scratch)[0], options)
    return LearningDocument(
        **formula_fields(structures[0], nsites=len(md_cell(structures[0], options["supercell"]))),
        gptff=provenance,
        formulas=[s.composition.reduced_formula for s in structures],
        labeller=options["labeller"],
        labeller_settings=options["labeller_settings"],
        stop_reason="threshold" if stop else "iterations",
        threshold=options["threshold"],
        threshold_reached=stop is not None,
        final_sampling=stop.sampling if stop else None,
        iterations=rows,
        n_labels=sum(r.converged for r in records),
        n_failed_labels=sum(not r.converged for r in records),
        labels=records,
        failed_labels=[r for r in records if not r.converged],
        committee_iteration=last.iteration,
        committee_sha256=last.committee_sha256,
        committee=last.committee,
        final_force_mae=held.force_mae if held else None,
        final_energy_mae=held.energy_mae if held else None,
        final_mean_uncertainty=held.mean_uncertainty if held else None,
        final_max_uncertainty=held.max_uncertainty if held else None,
        inputs=dict(options),
        flags=sorted({flag for row in rows for flag in row.flags}),
    )
