"""What every query shares: the filters, the record of provenance and the store read.

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

COMMON_FIELDS = ["uuid", "name", "completed_at", "metadata"]
FORMULA_FIELDS = ["output.formula_pretty", "output.chemsys", "output.nsites", "output.gptff"]


def reduced_formula(formula: str) -> str:
    try:
        composition = Composition(formula)
    except Exception:  # pymatgen raises ValueError, KeyError for unreadable formulas
        composition = None
    if composition is None or not composition.valid:
        raise GPTFFInputError(
            f"formula {formula!r} is not a chemical formula of known elements, e.g. NaCl"
        )
    return composition.reduced_formula


def normalised_chemsys(chemsys: str) -> str:
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


def filter_criteria(
    formula: str | None = None,
    chemsys: str | None = None,
    flow_name: str | None = None,
    job_name: str | None = None,
    since: datetime | date | str | None = None,
    until: datetime | date | str | None = None,
) -> dict:
    criteria: dict = {}
    if formula:
        criteria["output.formula_pretty"] = reduced_formula(formula)
    if chemsys:
        criteria["output.chemsys"] = normalised_chemsys(chemsys)
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
    filter_criteria(**filters)


def get(doc: dict, dotted: str):
    for key in dotted.split("."):
        if not isinstance(doc, dict) or key not in doc:
            return None
        doc = doc[key]
    return doc


def base_record(doc: dict) -> dict:
    gptff = get(doc, "output.gptff") or {}
    metadata = doc.get("metadata") or {}
    return {
        "formula": get(doc, "output.formula_pretty"),
        "chemsys": get(doc, "output.chemsys"),
        "n_atoms": get(doc, "output.nsites"),
        "job_name": doc.get("name"),
        "flow_name": metadata.get("flow_name"),
        "completed_at": doc.get("completed_at"),
        "model": gptff.get("model_name"),
        "checkpoint_sha256": gptff.get("checkpoint_sha256"),
        "dtype": gptff.get("dtype"),
        "smooth": gptff.get("smooth"),
        "uuid": doc.get("uuid"),
    }


def run_query(store: JobStore, criteria: dict, properties: list[str]) -> list[dict]:
    store.connect()
    docs = store.query(criteria, properties=COMMON_FIELDS + properties, load=False)
    return sorted(docs, key=lambda d: d.get("completed_at") or "")


def gptff_jobs(store: JobStore, **filters) -> list[dict]:
    """Every GPTFF job (static, relax, MD, EOS fit), oldest first, with ``job_type``."""
    criteria = {"output.gptff": {"$exists": True}, **filter_criteria(**filters)}
    records = []
    for doc in run_query(store, criteria, list(FORMULA_FIELDS)):
        record = base_record(doc)
        record["job_type"] = (get(doc, "output.gptff") or {}).get("job_type")
        records.append(record)
    return records
