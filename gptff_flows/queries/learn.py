"""Queries over active-learning runs (plain records, like :mod:`gptff_flows.queries`), and the
store look-ups the loop itself makes.

* :func:`learn_results` — one record per run (:class:`~gptff_flows.schemas.learn.LearningDocument`):
  iterations, labels, why it stopped, held-out errors per iteration, the final committee.
* :func:`learn_iterations` — one record per iteration
  (:class:`~gptff_flows.schemas.learn.LearningIterationDocument`).
* :func:`stored_labels`, :func:`stored_committee` — what the loop finds before computing: labels by
  frame key, committees by training key.

``filters`` are those of :mod:`gptff_flows.queries` (formula, chemsys, flow_name, job_name, since,
until). Units: uncertainties and force errors eV/Å, energy errors meV/atom, times s.
"""

from __future__ import annotations

from collections.abc import Iterable

from jobflow import JobStore

from gptff_flows.queries.common import (
    FORMULA_FIELDS,
    base_record,
    filter_criteria,
    get,
    run_query,
)

LEARN_DOCUMENT = "LearningDocument"
ITERATION_DOCUMENT = "LearningIterationDocument"
RUN_SCALARS = (
    "stop_reason",
    "threshold",
    "threshold_reached",
    "final_force_mae",
    "final_energy_mae",
    "final_mean_uncertainty",
    "final_max_uncertainty",
)
"""Fields of a LearningDocument copied into its record unchanged."""
LABEL_FIELDS = ["output.frame_key", "output.converged", "output.error", "output.wall_time_s"]


def stored_labels(
    store: JobStore | None, keys: Iterable[str], include_failed: bool = True
) -> dict[str, dict]:
    """``{frame key: {"uuid", "converged", "error", "wall_time_s"}}`` of the label documents
    (:class:`~gptff_flows.schemas.labels.LabelDocument`) the store holds for ``keys``; a
    converged label wins over a failed one, then the newest. ``include_failed=False``: failed
    labels are left out (to be computed again)."""
    keys = sorted(set(keys))
    if store is None or not keys:
        return {}
    store.connect()
    criteria = {"output.frame_key": {"$in": keys}, "output.converged": {"$exists": True}}
    best: dict[str, tuple] = {}
    for doc in store.query(criteria, properties=["uuid", "completed_at", *LABEL_FIELDS]):
        output = doc["output"]
        if not output["converged"] and not include_failed:
            continue
        rank = (bool(output["converged"]), doc.get("completed_at") or "")
        if output["frame_key"] not in best or rank > best[output["frame_key"]][0]:
            best[output["frame_key"]] = (rank, doc)
    return {
        key: dict(
            uuid=doc["uuid"],
            converged=bool(doc["output"]["converged"]),
            error=doc["output"].get("error"),
            wall_time_s=doc["output"].get("wall_time_s"),
        )
        for key, (_, doc) in best.items()
    }


def stored_committee(store: JobStore, train_key: str) -> dict | None:
    """The newest stored :class:`~gptff_flows.schemas.learn.LearningIterationDocument` (as a
    dict, checkpoints loaded from the data store) whose committee has ``train_key``; None."""
    store.connect()
    criteria = {"output.@class": ITERATION_DOCUMENT, "output.train_key": train_key}
    docs = list(store.query(criteria, properties=["uuid", "index", "completed_at"]))
    if not docs:
        return None
    newest = max(docs, key=lambda d: d.get("completed_at") or "")
    doc = store.query_one({"uuid": newest["uuid"], "index": newest["index"]}, load=True)
    return doc["output"]


def _series(rows: list[dict], dotted: str, form: str = "{:.4g}") -> str:
    """``dotted`` of each row, comma separated ('-' where missing)."""
    values = [get(row, dotted) for row in rows]
    return ",".join("-" if v is None else form.format(v) for v in values)


def learn_results(store: JobStore, **filters) -> list[dict]:
    """One record per active-learning run, oldest first.

    Keys: ``formula``, ``chemsys``, ``n_atoms``, ``formulas`` (all input structures, comma
    separated), ``labeller``, ``n_iterations``, ``n_labels``, ``n_failed_labels``,
    ``stop_reason`` ('threshold' or 'iterations'), ``threshold`` (eV/Å),
    ``threshold_reached``, ``final_sampled_uncertainty`` (eV/Å, mean over the frames sampled
    when the threshold was reached, else None), ``final_force_mae`` (eV/Å, held out),
    ``final_energy_mae`` (meV/atom), ``final_mean_uncertainty`` / ``final_max_uncertainty``
    (eV/Å, held out), per iteration comma separated: ``labels`` (converged so far),
    ``force_mae`` (eV/Å), ``energy_mae`` (meV/atom), ``sampled_uncertainty`` (eV/Å, mean;
    '-' at iteration 0); ``final_model_sha256`` (the final committee's members, comma
    separated), ``committee_iteration``, ``flags``, and the provenance (``model``: the
    first member's checkpoint; ``job_name``, ``flow_name``, ``completed_at``, ``uuid``).
    """
    criteria = {"output.@class": LEARN_DOCUMENT, **filter_criteria(**filters)}
    names = [
        "formulas",
        "labeller",
        "iterations",
        "n_labels",
        "n_failed_labels",
        "stop_reason",
        "threshold",
        "threshold_reached",
        "final_sampling",
        "final_force_mae",
        "final_energy_mae",
        "final_mean_uncertainty",
        "final_max_uncertainty",
        "committee_sha256",
        "committee_iteration",
        "flags",
    ]
    records = []
    for doc in run_query(store, criteria, FORMULA_FIELDS + [f"output.{n}" for n in names]):
        output = doc.get("output") or {}
        rows = output.get("iterations") or []
        record = base_record(doc) | {name: output.get(name) for name in RUN_SCALARS}
        record |= {
            "formulas": ",".join(output.get("formulas") or []),
            "labeller": output.get("labeller"),
            "n_iterations": len(rows),
            "n_labels": output.get("n_labels"),
            "n_failed_labels": output.get("n_failed_labels"),
            "final_sampled_uncertainty": get(output, "final_sampling.mean_uncertainty"),
            "labels": _series(rows, "n_labels", "{}"),
            "force_mae": _series(rows, "held_out.force_mae"),
            "energy_mae": _series(rows, "held_out.energy_mae"),
            "sampled_uncertainty": _series(rows, "sampled_mean_uncertainty"),
            "final_model_sha256": ",".join(output.get("committee_sha256") or []),
            "committee_iteration": output.get("committee_iteration"),
            "flags": ",".join(output.get("flags") or []),
        }
        records.append(record)
    return records


def learn_iterations(store: JobStore, **filters) -> list[dict]:
    """One record per iteration of every active-learning run, oldest first.

    Keys: ``iteration``, ``labeller``, ``n_candidates``, ``sampled_mean_uncertainty`` and
    ``sampled_max_uncertainty`` (eV/Å; None at iteration 0), ``n_selected``, ``n_labels``
    (converged so far), ``n_computed`` (labels this iteration computed), ``n_failed`` (so far),
    ``n_train``, ``n_holdout``, ``force_mae`` (eV/Å), ``energy_mae`` (meV/atom),
    ``mean_uncertainty`` / ``max_uncertainty`` (eV/Å) and ``spearman`` on the held-out labels,
    ``reused_committee``, ``training_s``, ``committee_sha256`` (comma separated), ``flags``,
    and the provenance of :func:`learn_results`.
    """
    criteria = {"output.@class": ITERATION_DOCUMENT, **filter_criteria(**filters)}
    names = [
        "iteration",
        "labeller",
        "n_labels",
        "n_computed",
        "n_failed",
        "n_train",
        "n_holdout",
        "reused_committee",
        "training_s",
    ]
    extra = ["sampling", "selected", "held_out", "committee_sha256", "flags"]
    records = []
    for doc in run_query(store, criteria, FORMULA_FIELDS + [f"output.{n}" for n in names + extra]):
        output = doc.get("output") or {}
        held = output.get("held_out") or {}
        record = base_record(doc) | {name: output.get(name) for name in names}
        record |= {
            "n_candidates": get(output, "sampling.n_candidates"),
            "sampled_mean_uncertainty": get(output, "sampling.mean_uncertainty"),
            "sampled_max_uncertainty": get(output, "sampling.max_uncertainty"),
            "n_selected": len(output.get("selected") or []),
            **{k: held.get(k) for k in ("force_mae", "energy_mae", "spearman")},
            "mean_uncertainty": held.get("mean_uncertainty"),
            "max_uncertainty": held.get("max_uncertainty"),
            "committee_sha256": ",".join(output.get("committee_sha256") or []),
            "flags": ",".join(output.get("flags") or []),
        }
        records.append(record)
    return records
