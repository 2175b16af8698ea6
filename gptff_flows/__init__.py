"""GPTFF workflows on jobflow and atomate2 (install the ``flows`` extra).

* :mod:`gptff_flows.jobs` — ``GPTFFStaticMaker``, ``GPTFFRelaxMaker``, ``GPTFFMDMaker`` and
  :func:`~gptff_flows.jobs.gptff_force_field` for any other atomate2 force-field flow;
* :mod:`gptff_flows.flows.eos` — ``GPTFFEosMaker`` (relax, strain, Birch–Murnaghan fit, plot);
* :mod:`gptff_flows.schemas` — output documents with GPTFF provenance;
* :mod:`gptff_flows.stores` — embedded (montydb/SQLite) or MongoDB job stores;
* :mod:`gptff_flows.run` — run locally into a store, or submit with jobflow-remote;
* :mod:`gptff_flows.queries` — result queries returning plain records;
* :mod:`gptff_flows.cli` — ``gptff eos`` and ``gptff results``.

Importing this package is cheap; the submodules import jobflow, atomate2 and maggma.
"""
