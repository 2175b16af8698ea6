"""Queries over element-substitution screening campaigns (plain records).

:func:`screening_results` gives ranked candidates (energies in eV/atom) and
:func:`screening_campaigns` one summary per campaign (:mod:`gptff_flows.flows.screening`).
:func:`stored_records` finds the slim records of structures already computed (a campaign's
resume), :func:`candidate_documents` the full documents (relaxed structures included).
"""

from __future__ import annotations

from collections.abc import Iterator

from jobflow import JobStore
from pydantic import BaseModel

from gptff_flows.queries.common import COMMON_FIELDS, normalised_chemsys, reduced_formula

# the classes of gptff_flows.schemas.screening, named here so queries do not import atomate2
SCREENING_CAMPAIGN = "ScreeningCampaignDocument"
SCREENING_CHUNK = "ScreeningChunkDocument"

SLIM_FIELDS = ("key", "role", "label", "formula_pretty", "chemsys", "prototype_id", "status")
SLIM_FIELDS += ("error", "energy_per_atom", "n_steps", "converged")
"""The fields of a candidate document that ranking a campaign needs (see :func:`slim`)."""


def _campaign_docs(store: JobStore, campaign: str | None) -> list[dict]:
    """The latest analysis document of each campaign (of ``campaign`` only, if given)."""
    criteria: dict = {"output.@class": SCREENING_CAMPAIGN}
    if campaign:
        criteria["output.campaign_id"] = campaign
    store.connect()
    docs = sorted(
        store.query(criteria, properties=[*COMMON_FIELDS, "output"], load=True),
        key=lambda d: d.get("completed_at") or "",
    )
    latest: dict[str, dict] = {}
    for doc in docs:
        latest[doc["output"]["campaign_id"]] = doc
    return list(latest.values())


def screening_campaigns(store: JobStore, campaign: str | None = None) -> list[dict]:
    """Screening campaigns (their latest run), oldest first: ``campaign``, ``candidates``,
    counts by status (``relaxed``, ``not_converged``, ``failed``), ``stored_before``,
    ``computed``, ``failed_phases``, ``status`` (``ranked``, ``no_candidates``, ``no_results``)
    and ``message`` (why not ranked), ``wall_time`` (s, first job start to analysis end), ``model``,
    ``checkpoint_sha256``, ``dtype``, ``fmax`` (eV/Å), ``min_atoms``, ``completed_at``."""
    records = []
    for doc in _campaign_docs(store, campaign):
        output = doc["output"]
        counts, timing, settings = output["counts"], output["timing"], output["settings"]
        start, end = timing.get("started_at"), timing.get("finished_at")
        records.append(
            {
                "campaign": output["campaign_id"],
                "candidates": counts.get("candidates"),
                "relaxed": counts.get("relaxed"),
                "not_converged": counts.get("not_converged"),
                "failed": counts.get("failed"),
                "stored_before": counts.get("stored_before"),
                "computed": counts.get("computed"),
                "failed_phases": counts.get("failed_phases"),
                "status": output.get("status", "ranked"),
                "message": output.get("message"),
                "wall_time": None if start is None or end is None else end - start,
                "model": settings.get("model"),
                "checkpoint_sha256": settings.get("checkpoint_sha256"),
                "dtype": settings.get("dtype"),
                "fmax": settings.get("fmax"),
                "min_atoms": settings.get("min_atoms"),
                "completed_at": doc.get("completed_at"),
            }
        )
    return records


def screening_results(
    store: JobStore,
    campaign: str | None = None,
    max_ehull: float | None = None,
    chemsys: str | None = None,
    formula: str | None = None,
    status: str | None = None,
) -> list[dict]:
    """Ranked candidates of screening campaigns (the latest run of each), best first.

    Args:
        campaign: campaign id (default: every campaign).
        max_ehull: eV/atom, keep candidates at most this far above the hull (drops those
            without energetics, failed ones included).
        chemsys: chemical system, elements in any order (``"Li-Y-Cl"``); exact match.
        formula: any formula of the compound.
        status: ``relaxed``, ``not_converged`` or ``failed``.

    Keys: ``campaign``, ``rank``, ``formula``, ``chemsys``, ``label`` (prototype:substitution),
    ``prototype_id``, ``status``, ``e_form_per_atom`` and ``e_above_hull`` (eV/atom),
    ``energy_per_atom`` (eV/atom, cell-policy supercell), ``decomposition`` (text
    ``"Li3YCl6:0.50 LiCl:0.50"``, atom fractions), ``n_steps``, ``converged``, ``error``,
    ``hull_references`` (``"elements only"``: no competing phase in its chemical system, so
    ``e_above_hull`` equals ``e_form_per_atom``), ``flags`` (see
    :data:`gptff_flows.schemas.screening.FLAG_HELP`), ``stored_before``, ``key``,
    ``completed_at``.
    """
    wanted = dict(
        chemsys=normalised_chemsys(chemsys) if chemsys else None,
        formula=reduced_formula(formula) if formula else None,
        status=status,
    )
    records = []
    for doc in _campaign_docs(store, campaign):
        output = doc["output"]
        for position, entry in enumerate(output["ranking"], start=1):
            if _selected(entry, max_ehull, **wanted):
                records.append(
                    _ranking_record(output["campaign_id"], position, entry, doc.get("completed_at"))
                )
    return records


def _selected(
    entry: dict, max_ehull: float | None, chemsys: str | None, formula: str | None, status
) -> bool:
    """Whether a ranked candidate passes the filters (``max_ehull`` in eV/atom; ``chemsys``
    and ``formula`` normalised)."""
    e_hull = entry.get("e_above_hull")
    if max_ehull is not None and (e_hull is None or e_hull > max_ehull):
        return False
    if chemsys and entry["chemsys"] != chemsys:
        return False
    if formula and entry["formula"] != formula:
        return False
    return not (status and entry["status"] != status)


def _ranking_record(campaign: str, position: int, entry: dict, completed_at) -> dict:
    """The record of one ranked candidate (see :func:`screening_results`)."""
    decomposition = entry.get("decomposition") or {}
    return {
        "campaign": campaign,
        "rank": position,
        "formula": entry["formula"],
        "chemsys": entry["chemsys"],
        "label": entry["label"],
        "prototype_id": entry.get("prototype_id"),
        "status": entry["status"],
        "e_form_per_atom": entry.get("e_form_per_atom"),
        "e_above_hull": entry.get("e_above_hull"),
        "energy_per_atom": entry.get("energy_per_atom"),
        "decomposition": " ".join(f"{k}:{v:.2f}" for k, v in sorted(decomposition.items())) or None,
        "n_steps": entry.get("n_steps"),
        "converged": entry.get("converged"),
        "error": entry.get("error"),
        "hull_references": entry.get("hull_references"),
        "flags": list(entry.get("flags") or []),
        "stored_before": entry.get("stored_before"),
        "key": entry["key"],
        "completed_at": completed_at,
    }


def slim(document: dict | BaseModel) -> dict:
    """The fields of a candidate document the ranking needs (no structures): ``key``, ``role``,
    ``label``, ``formula_pretty``, ``chemsys``, ``prototype_id``, ``status``, ``error``,
    ``energy_per_atom`` (eV/atom), ``n_steps``, ``converged``."""
    data = document.model_dump() if isinstance(document, BaseModel) else dict(document)
    return {k: data.get(k) for k in SLIM_FIELDS}


def stored_records(store: JobStore | None, keys: set[str]) -> dict[str, dict]:
    """``{key: slim record}`` (see :func:`slim`) of the ``keys`` already in ``store``, from the
    chunk documents of any campaign; ``{}`` without a store."""
    if store is None or not keys:
        return {}
    store.connect()
    found: dict[str, dict] = {}
    docs = store.query(
        {"output.@class": SCREENING_CHUNK, "output.candidates.key": {"$in": sorted(keys)}},
        properties=[f"output.candidates.{f}" for f in SLIM_FIELDS],
        load=False,
    )
    for record in _chunk_candidates(docs):
        key = record.get("key")
        if key in keys and key not in found:
            found[key] = slim(record)
    return found


def candidate_documents(store: JobStore, keys) -> list:
    """The stored :class:`~gptff_flows.schemas.screening.CandidateDocument` of each key (relaxed
    structures included), e.g. of the ``key`` column of :func:`screening_results`; in the order
    of ``keys``, missing ones left out."""
    from gptff_flows.schemas.screening import CandidateDocument

    wanted = list(dict.fromkeys(keys))
    lookup = set(wanted)
    found: dict[str, dict] = {}
    store.connect()
    docs = store.query({"output.@class": SCREENING_CHUNK}, properties=["output.candidates"])
    for candidate in _chunk_candidates(docs):
        if candidate.get("key") in lookup and candidate["key"] not in found:
            found[candidate["key"]] = candidate
    return [CandidateDocument(**found[k]) for k in wanted if k in found]


def _chunk_candidates(docs) -> Iterator[dict]:
    """The candidate documents (as stored) of chunk job documents, in order."""
    for doc in docs:
        yield from (doc.get("output") or {}).get("candidates") or []
