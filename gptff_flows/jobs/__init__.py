"""GPTFF jobs, one module per workflow.

* :mod:`.force_field` — ``GPTFFStaticMaker``, ``GPTFFRelaxMaker``, ``GPTFFMDMaker`` (atomate2's
  force-field Makers with GPTFF) and :func:`gptff_force_field` for any other atomate2 flow;
* :mod:`.eos` — the fit-and-judge job of the EOS flow;
* :mod:`.screening`, :mod:`.batch_relax`, :mod:`.leases` — relaxing and ranking element-substituted
  candidates;
* :mod:`.md` — the MD integrators and observers; :mod:`.finetune_md`, :mod:`.md_temperature`,
  :mod:`.training_data` — fine-tuning and the MD runs of the fine-tune-then-MD flow;
* :mod:`.tensile` — one strain step of the tensile MD flow and its summary.
"""

from gptff_flows.jobs.force_field import (
    GPTFF_CALCULATOR,
    ForceFieldSpec,
    GPTFFMDMaker,
    GPTFFRelaxMaker,
    GPTFFStaticMaker,
    gptff_force_field,
    require_periodic,
)
from gptff_flows.options import DTYPES

__all__ = [
    "DTYPES",
    "GPTFF_CALCULATOR",
    "ForceFieldSpec",
    "GPTFFMDMaker",
    "GPTFFRelaxMaker",
    "GPTFFStaticMaker",
    "gptff_force_field",
    "require_periodic",
]
