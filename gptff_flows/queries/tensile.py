"""Queries over tensile-strain MD results (plain records, like :mod:`gptff_flows.queries`).

:func:`tensile_results` lists the summaries of :class:`~gptff_flows.flows.tensile.TensileMDMaker`
flows with one row per strain: σ (GPa, tensile positive), a-CNA fractions, the XRD peak near 38°
(degrees). ``filters`` are those of :mod:`gptff_flows.queries` (formula, chemsys, flow_name,
job_name, since, until).
"""

from __future__ import annotations

from jobflow import JobStore

from gptff_flows.queries.common import FORMULA_FIELDS, base_record, filter_criteria, run_query

SUMMARY_DOCUMENT = "TensileSummaryDocument"


def tensile_results(store: JobStore, flow_name: str | None = None, **filters) -> list[dict]:
    """One record per flow summary, oldest first.

    Keys: ``formula``, ``n_atoms``, ``temperature`` (K), ``max_strain``, ``fcc_onset_strain``
    (None: fcc never above 10 %), ``strains`` (%, comma separated), ``fcc_percent`` (comma
    separated), ``rows`` (per strain: ``strain``, ``stress`` GPa, ``fcc``,
    ``hcp``, ``bcc``, ``other`` fractions, ``peak`` degrees or None, ``mean_temperature`` K,
    ``flags``), ``verdict`` (flags of any strain, comma separated), ``plots``, the provenance,
    ``job_name``, ``flow_name`` (``flow_name`` filters on a substring), ``completed_at``,
    ``uuid``.
    """
    criteria = {"output.@class": SUMMARY_DOCUMENT}
    criteria |= filter_criteria(flow_name=flow_name, **filters)
    properties = [*FORMULA_FIELDS, "output.temperature", "output.rows"]
    properties += ["output.fcc_onset_strain", "output.plots", "output.flags"]
    records = []
    for doc in run_query(store, criteria, properties):
        output = doc.get("output") or {}
        rows = [
            {
                "strain": row["strain"],
                "stress": row["stress"],
                "fcc": row["fcc"],
                "hcp": row["hcp"],
                "bcc": row["bcc"],
                "other": row["other"],
                "peak": row.get("xrd_peak"),
                "mean_temperature": row.get("mean_temperature"),
                "flags": row.get("flags") or [],
            }
            for row in output.get("rows") or []
        ]
        record = base_record(doc)
        record |= {
            "temperature": output.get("temperature"),
            "max_strain": max((row["strain"] for row in rows), default=None),
            "fcc_onset_strain": output.get("fcc_onset_strain"),
            "strains": ",".join(f"{100 * row['strain']:g}" for row in rows),
            "fcc_percent": ",".join(f"{100 * row['fcc']:.0f}" for row in rows),
            "rows": rows,
            "plots": output.get("plots") or {},
            "verdict": ",".join(output.get("flags") or []),
        }
        records.append(record)
    return records
