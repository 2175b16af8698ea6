"""Queries over GPTFF results in a job store; every function returns plain records (dicts).

Records hold str, int, float, bool or None only, so they print as JSON or CSV directly. Units:
energies eV (``*_eV``, or eV/atom for ``*_per_atom``), volumes Å³/atom, bulk moduli GPa.
One module per workflow; every public query is importable from here:

* :func:`relaxations`, :func:`eos_results` (:mod:`.eos`), :func:`gptff_jobs` (:mod:`.common`);
* :func:`screening_results`, :func:`screening_campaigns`, :func:`candidate_documents`
  (:mod:`.screening`);
* :func:`finetune_md_results` (:mod:`.finetune_md`), :func:`tensile_results` (:mod:`.tensile`);
* :func:`learn_results`, :func:`learn_iterations` (:mod:`.learn`).

Filters shared by every query (all optional, combined with AND):

* ``formula`` — any formula of the compound (``"NaCl"``, ``"Na4Cl4"``): matched on the reduced one;
* ``chemsys`` — elements in any order (``"Na-Cl"``, ``"Cl-Na"``);
* ``flow_name`` / ``job_name`` — substrings of the flow's or job's name (case-insensitive);
* ``since`` / ``until`` — completion time, ``datetime`` or ISO text (``"2026-11-21"``,
  ``"2026-11-21T10:00"``); a bare date as ``until`` includes that whole day.
"""

from gptff_flows.queries.common import check_filters, gptff_jobs
from gptff_flows.queries.eos import eos_results, relaxations
from gptff_flows.queries.finetune_md import finetune_md_results
from gptff_flows.queries.learn import learn_iterations, learn_results
from gptff_flows.queries.screening import (
    candidate_documents,
    screening_campaigns,
    screening_results,
)
from gptff_flows.queries.tensile import tensile_results

__all__ = [
    "candidate_documents",
    "check_filters",
    "eos_results",
    "finetune_md_results",
    "gptff_jobs",
    "learn_iterations",
    "learn_results",
    "relaxations",
    "screening_campaigns",
    "screening_results",
    "tensile_results",
]
