"""Queries over relaxations and equations of state (plain records)."""

from __future__ import annotations

from jobflow import JobStore

from gptff_flows.queries.common import (
    FORMULA_FIELDS,
    base_record,
    filter_criteria,
    get,
    run_query,
)

EOS_DOCUMENT = "GPTFFEosDocument"
EOS_POINT_ROLE = "eos_point"


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
    criteria = {"output.@class": EOS_DOCUMENT, **filter_criteria(**filters)}
    properties = [*FORMULA_FIELDS, "output.fit", "output.volumes_per_atom", "output.plot_path"]
    properties += ["output.verdict", "output.flags", "output.flag_reasons"]
    records = []
    for doc in run_query(store, criteria, properties):
        fit = get(doc, "output.fit") or {}
        record = base_record(doc)
        record |= {key: fit.get(key) for key in _EOS_FIT_KEYS}
        record |= {
            "verdict": get(doc, "output.verdict"),
            "flags": ",".join(get(doc, "output.flags") or []),
            "flag_reasons": " | ".join(get(doc, "output.flag_reasons") or []),
            "n_points": len(get(doc, "output.volumes_per_atom") or []),
            "plot_path": get(doc, "output.plot_path"),
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
    criteria = {"output.gptff.job_type": "relax", **filter_criteria(**filters)}
    if not include_eos_points:
        criteria["metadata.gptff_role"] = {"$ne": EOS_POINT_ROLE}
    properties = [*FORMULA_FIELDS, "output.output.energy", "output.output.n_steps", "output.volume"]
    properties.append("output.is_force_converged")
    records = []
    for doc in run_query(store, criteria, properties):
        record = base_record(doc)
        energy, n_atoms, volume = (
            get(doc, "output.output.energy"),
            record["n_atoms"],
            get(doc, "output.volume"),
        )
        record |= {
            "energy_eV": energy,
            "energy_per_atom_eV": None if energy is None or not n_atoms else energy / n_atoms,
            "volume_per_atom": None if volume is None or not n_atoms else volume / n_atoms,
            "converged": get(doc, "output.is_force_converged"),
            "n_steps": get(doc, "output.output.n_steps"),
        }
        records.append(record)
    return records
