"""Queries over element-substitution screening campaigns (plain records).

:func:`screening_results` gives ranked candidates (energies in eV/atom) and
:func:`screening_campaigns` one summary per campaign (:mod:`gptff_flows.flows.screening`).
"""

from __future__ import annotations

from jobflow import JobStore

from gptff_flows.queries.common import COMMON_FIELDS, normalised_chemsys, reduced_formula

SCREENING_CAMPAIGN = "ScreeningCampaignDocument"


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
    wanted_chemsys = normalised_chemsys(chemsys) if chemsys else None
    wanted_formula = reduced_formula(formula) if formula else None
    records = []
    for doc in _campaign_docs(store, campaign):
        output = doc["output"]
        for position, entry in enumerate(output["ranking"], start=1):
            e_hull = entry.get("e_above_hull")
            if max_ehull is not None and (e_hull is None or e_hull > max_ehull):
                continue
            if wanted_chemsys and entry["chemsys"] != wanted_chemsys:
                continue
            if wanted_formula and entry["formula"] != wanted_formula:
                continue
            if status and entry["status"] != status:
                continue
            decomposition = entry.get("decomposition") or {}
            records.append(
                {
                    "campaign": output["campaign_id"],
                    "rank": position,
                    "formula": entry["formula"],
                    "chemsys": entry["chemsys"],
                    "label": entry["label"],
                    "prototype_id": entry.get("prototype_id"),
                    "status": entry["status"],
                    "e_form_per_atom": entry.get("e_form_per_atom"),
                    "e_above_hull": e_hull,
                    "energy_per_atom": entry.get("energy_per_atom"),
                    "decomposition": " ".join(
                        f"{k}:{v:.2f}" for k, v in sorted(decomposition.items())
                    )
                    or None,
                    "n_steps": entry.get("n_steps"),
                    "converged": entry.get("converged"),
                    "error": entry.get("error"),
                    "hull_references": entry.get("hull_references"),
                    "flags": list(entry.get("flags") or []),
                    "stored_before": entry.get("stored_before"),
                    "key": entry["key"],
                    "completed_at": doc.get("completed_at"),
                }
            )
    return records
