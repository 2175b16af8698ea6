"""GPTFF workflows on jobflow and atomate2 (install the ``flows`` extra), arranged by role:

* :mod:`gptff_flows.jobs` — ``GPTFFStaticMaker``, ``GPTFFRelaxMaker``, ``GPTFFMDMaker``,
  :func:`~gptff_flows.jobs.gptff_force_field` for any other atomate2 force-field flow, and one
  module of jobs per workflow;
* :mod:`gptff_flows.flows` — one module per workflow, the Makers only (``GPTFFEosMaker``,
  ``SubstitutionScreeningMaker``, ``FineTuneMDMaker``, ``TensileMDMaker``);
* :mod:`gptff_flows.schemas` — output documents with GPTFF provenance, one module per workflow;
* :mod:`gptff_flows.queries` — result queries returning plain records, one module per workflow;
* :mod:`gptff_flows.analysis` — the science (EOS fits, energetics, substitution, diffusion,
  stacking, XRD), plain functions without jobflow;
* :mod:`gptff_flows.options` — the GPTFF fields every Maker shares;
* :mod:`gptff_flows.stores` — embedded (montydb) and MongoDB job stores, checked before work;
* :mod:`gptff_flows.run` — run flows locally into a store (resuming), or submit them with
  jobflow-remote; :mod:`gptff_flows.failures` — what a failed job leaves in the store;
* :mod:`gptff_flows.cli` — ``gptff eos``, ``screen``, ``finetune-md`` and ``results``.

Importing this package is cheap; the submodules import jobflow, atomate2 and maggma. Module names
of earlier versions still import (:mod:`gptff_flows.legacy`), so older stores read.
"""

from gptff_flows import legacy

legacy.install()
