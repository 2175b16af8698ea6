"""Queries over fine-tune-then-MD results (plain records, like :mod:`gptff_flows.queries`).

:func:`finetune_md_results` lists the summaries of :class:`~gptff_flows.flows.finetune_md.
FineTuneMDMaker` flows: Ea (eV), σ(300 K) (mS/cm) and D (cm²/s) per temperature. ``filters``
are those of :mod:`gptff_flows.queries` (formula, chemsys, flow_name, job_name, since, until).
"""

from __future__ import annotations

from jobflow import JobStore

from gptff_flows.queries.common import FORMULA_FIELDS, base_record, filter_criteria, run_query

SUMMARY_DOCUMENT = "FineTuneMDDocument"


def finetune_md_results(store: JobStore, **filters) -> list[dict]:
    """One record per flow summary, oldest first.

    Keys: ``formula``, ``chemsys``, ``n_atoms``, ``species``, ``activation_energy`` (eV),
    ``activation_energy_error`` (eV), ``conductivity_300K`` (mS/cm), ``temperatures`` (K, comma
    separated), ``mean_temperatures`` (K, measured over production, comma separated),
    ``diffusivities`` (cm²/s, comma separated), ``flags`` (per temperature,
    ``T:flag+flag``), ``verdict`` (the run's flags, comma separated; empty: nothing flagged),
    ``reason`` (why temperatures were left out of the fit or why there is no Ea),
    ``finetuned`` (False: MD with the model as it is), ``finetune_checkpoint_sha256``, the
    provenance (``smooth`` among it), ``job_name``, ``flow_name``, ``completed_at``, ``uuid``.
    """
    criteria = {"output.@class": SUMMARY_DOCUMENT, **filter_criteria(**filters)}
    properties = [*FORMULA_FIELDS, "output.species", "output.arrhenius"]
    properties += ["output.temperatures", "output.finetune", "output.flags"]
    records = []
    for doc in run_query(store, criteria, properties):
        output = doc.get("output") or {}
        fit = output.get("arrhenius") or {}
        rows = output.get("temperatures") or []
        record = base_record(doc)
        record |= {
            "species": output.get("species"),
            "activation_energy": fit.get("activation_energy"),
            "activation_energy_error": fit.get("activation_energy_error"),
            "conductivity_300K": fit.get("conductivity_300K"),
            "temperatures": ",".join(f"{row['temperature']:g}" for row in rows),
            "mean_temperatures": ",".join(f"{row['mean_temperature']:.0f}" for row in rows),
            "diffusivities": ",".join(
                "-" if row.get("diffusivity") is None else f"{row['diffusivity']:.3e}"
                for row in rows
            ),
            "flags": " ".join(
                f"{row['temperature']:g}:{'+'.join(row['flags'])}" for row in rows if row["flags"]
            ),
            "verdict": ",".join(output.get("flags") or []),
            "reason": fit.get("reason"),
            "finetuned": output.get("finetune") is not None,
            "finetune_checkpoint_sha256": (output.get("finetune") or {}).get("checkpoint_sha256"),
        }
        records.append(record)
    return records
