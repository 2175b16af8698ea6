"""Queries over GPTFF results in a job store; every function returns plain records (dicts).

Records hold str, int, float, bool or None only, so they print as JSON or CSV directly. Units:
energies eV (``*_eV``, or eV/atom for ``*_per_atom``), volumes Å³/atom, bulk moduli GPa.

Screening campaigns (:mod:`gptff_flows.flows.screening`): :func:`screening_results` (ranked
candidates, energies in eV/atom) and :func:`screening_campaigns` (one summary per campaign).

Filters shared by every query (all optional, combined with AND):

* ``formula`` — any formula of the compound (``"NaCl"``, ``"Na4Cl4"``): matched on the reduced one;
* ``chemsys`` — elements in any order (``"Na-Cl"``, ``"Cl-Na"``);
* ``flow_name`` / ``job_name`` — substrings of the flow's or job's name (case-insensitive);
* ``since`` / ``until`` — completion time, ``datetime`` or ISO text (``"2026-11-21"``,
  ``"2026-11-21T10:00"``); a bare date as ``until`` includes that whole day.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta

from jobflow import JobStore
from pymatgen.core import Composition, Element

from gptff_core.errors import GPTFFInputError

EOS_DOCUMENT = "GPTFFEosDocument"
EOS_POINT_ROLE = "eos_point"

_COMMON = ["uuid", "name", "completed_at", "metadata"]
_FORMULA = ["output.formula_pretty", "output.chemsys", "output.nsites", "output.gptff"]


def _reduced_formula(formula: str) -> str:
    try:
        composition = Composition(formula)
    except Exception:  # pymatgen raises ValueError, KeyError for unreadable formulas
        composition = None
    if composition is None or not composition.valid:
        raise GPTFFInputError(
            f"formula {formula!r} is not a chemical formula of known elements, e.g. NaCl"
        )
    return composition.reduced_formula


def _chemsys(chemsys: str) -> str:
    symbols = [s for s in re.split(r"[-,\s]+", chemsys.strip()) if s]
    try:
        return "-".join(sorted(Element(s).symbol for s in symbols))
    except ValueError:
        raise GPTFFInputError(
            f"chemsys {chemsys!r} must be element symbols joined by '-', e.g. 'Na-Cl'"
        ) from None


def _moment(value: datetime | date | str, end_of_day: bool) -> str:
    """ISO text comparable with jobflow's ``completed_at`` (local time, no zone)."""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise GPTFFInputError(
                f"date {value!r} is not ISO 8601, e.g. 2026-11-21 or 2026-11-21T10:00"
            ) from None
        whole_day = len(value.strip()) == 10
    else:
        parsed = (
            value if isinstance(value, datetime) else datetime.combine(value, datetime.min.time())
        )
        whole_day = not isinstance(value, datetime)
    if end_of_day and whole_day:
        parsed += timedelta(days=1)
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone().replace(tzinfo=None)
    return parsed.isoformat()


def _criteria(
    formula: str | None = None,
    chemsys: str | None = None,
    flow_name: str | None = None,
    job_name: str | None = None,
    since: datetime | date | str | None = None,
    until: datetime | date | str | None = None,
) -> dict:
    criteria: dict = {}
    if formula:
        criteria["output.formula_pretty"] = _reduced_formula(formula)
    if chemsys:
        criteria["output.chemsys"] = _chemsys(chemsys)
    if flow_name:
        criteria["metadata.flow_name"] = {"$regex": re.escape(flow_name), "$options": "i"}
    if job_name:
        criteria["name"] = {"$regex": re.escape(job_name), "$options": "i"}
    window = {}
    if since:
        window["$gte"] = _moment(since, end_of_day=False)
    if until:
        window["$lt"] = _moment(until, end_of_day=True)
    if window:
        criteria["completed_at"] = window
    return criteria


def check_filters(**filters) -> None:
    """Refuse filters that are not understood (a formula, chemical system or date), with
    :class:`GPTFFInputError`, before any store is opened."""
    _criteria(**filters)


def _get(doc: dict, dotted: str):
    for key in dotted.split("."):
        if not isinstance(doc, dict) or key not in doc:
            return None
        doc = doc[key]
    return doc


def _base_record(doc: dict) -> dict:
    gptff = _get(doc, "output.gptff") or {}
    metadata = doc.get("metadata") or {}
    return {
        "formula": _get(doc, "output.formula_pretty"),
        "chemsys": _get(doc, "output.chemsys"),
        "n_atoms": _get(doc, "output.nsites"),
        "job_name": doc.get("name"),
        "flow_name": metadata.get("flow_name"),
        "completed_at": doc.get("completed_at"),
        "model": gptff.get("model_name"),
        "checkpoint_sha256": gptff.get("checkpoint_sha256"),
        "dtype": gptff.get("dtype"),
        "smooth": gptff.get("smooth"),
        "uuid": doc.get("uuid"),
    }


def _query(store: JobStore, criteria: dict, properties: list[str]) -> list[dict]:
    store.connect()
    docs = store.query(criteria, properties=_COMMON + properties, load=False)
    return sorted(docs, key=lambda d: d.get("completed_at") or "")


def eos_results(store: JobStore, **filters) -> list[dict]:
    """EOS fits: one record per structure, oldest first.

    Keys: ``formula``, ``chemsys``, ``n_atoms``, ``eos``, ``v0_per_atom`` (Å³/atom),
    ``e0_per_atom`` (eV/atom), ``b0`` (GPa), ``b1``, ``rms_residual_meV_per_atom``,
    ``r_squared``, ``step_misfit_meV_per_atom`` (the fit's quality), ``verdict`` (``ok``,
    ``flagged``, ``refused``: then the fit values are None; None for results stored before
    verdicts existed), ``flags`` (names joined by ``,``), ``flag_reasons`` (joined by `` | ``),
    ``n_points``, ``plot_path``, the provenance (``model``, ``checkpoint_sha256``, ``dtype``,
    ``smooth``), ``job_name``, ``flow_name``, ``completed_at``, ``uuid``. ``filters``: see the
    module docstring.
    """
    criteria = {"output.@class": EOS_DOCUMENT, **_criteria(**filters)}
    properties = [*_FORMULA, "output.fit", "output.volumes_per_atom", "output.plot_path"]
    properties += ["output.verdict", "output.flags", "output.flag_reasons"]
    records = []
    for doc in _query(store, criteria, properties):
        fit = _get(doc, "output.fit") or {}
        record = _base_record(doc)
        record |= {key: fit.get(key) for key in _EOS_FIT_KEYS}
        record |= {
            "verdict": _get(doc, "output.verdict"),
            "flags": ",".join(_get(doc, "output.flags") or []),
            "flag_reasons": " | ".join(_get(doc, "output.flag_reasons") or []),
            "n_points": len(_get(doc, "output.volumes_per_atom") or []),
            "plot_path": _get(doc, "output.plot_path"),
        }
        records.append(record)
    return records


_EOS_FIT_KEYS = ("eos", "v0_per_atom", "e0_per_atom", "b0", "b1", "rms_residual_meV_per_atom",
                 "r_squared", "step_misfit_meV_per_atom")  # fmt: skip


def relaxations(store: JobStore, include_eos_points: bool = False, **filters) -> list[dict]:
    """Relaxations (Maker jobs and ``gptff relax --store``), oldest first.

    Keys: ``formula``, ``chemsys``, ``n_atoms``, ``energy_eV``, ``energy_per_atom_eV``,
    ``volume_per_atom`` (Å³/atom), ``converged``, ``n_steps``, the provenance, ``job_name``,
    ``flow_name``, ``completed_at``, ``uuid``. The fixed-cell relaxations of EOS points are left
    out unless ``include_eos_points``. ``filters``: see the module docstring.
    """
    criteria = {"output.gptff.job_type": "relax", **_criteria(**filters)}
    if not include_eos_points:
        criteria["metadata.gptff_role"] = {"$ne": EOS_POINT_ROLE}
    properties = [*_FORMULA, "output.output.energy", "output.output.n_steps", "output.volume"]
    properties.append("output.is_force_converged")
    records = []
    for doc in _query(store, criteria, properties):
        record = _base_record(doc)
        energy, n_atoms, volume = (
            _get(doc, "output.output.energy"),
            record["n_atoms"],
            _get(doc, "output.volume"),
        )
        record |= {
            "energy_eV": energy,
            "energy_per_atom_eV": None if energy is None or not n_atoms else energy / n_atoms,
            "volume_per_atom": None if volume is None or not n_atoms else volume / n_atoms,
            "converged": _get(doc, "output.is_force_converged"),
            "n_steps": _get(doc, "output.output.n_steps"),
        }
        records.append(record)
    return records


def gptff_jobs(store: JobStore, **filters) -> list[dict]:
    """Every GPTFF job (static, relax, MD, EOS fit), oldest first, with ``job_type``."""
    criteria = {"output.gptff": {"$exists": True}, **_criteria(**filters)}
    records = []
    for doc in _query(store, criteria, list(_FORMULA)):
        record = _base_record(doc)
        record["job_type"] = (_get(doc, "output.gptff") or {}).get("job_type")
        records.append(record)
    return records


SCREENING_CAMPAIGN = "ScreeningCampaignDocument"


def _campaign_docs(store: JobStore, campaign: str | None) -> list[dict]:
    """The latest analysis document of each campaign (of ``campaign`` only, if given)."""
    criteria: dict = {"output.@class": SCREENING_CAMPAIGN}
    if campaign:
        criteria["output.campaign_id"] = campaign
    store.connect()
    docs = sorted(
        store.query(criteria, properties=[*_COMMON, "output"], load=True),
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
    :data:`gptff_flows.screening_schemas.FLAG_HELP`), ``stored_before``, ``key``,
    ``completed_at``.
    """
    wanted_chemsys = _chemsys(chemsys) if chemsys else None
    wanted_formula = _reduced_formula(formula) if formula else None
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
