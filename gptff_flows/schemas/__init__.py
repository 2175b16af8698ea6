"""Output documents of the GPTFF workflows (pydantic), the unit of every number in its field.

* :mod:`.base` — :class:`GPTFFProvenance` (model, checkpoint sha256, dtype, smooth, device,
  version) and atomate2's task documents carrying it (static, relax and MD jobs);
* :mod:`.eos`, :mod:`.screening`, :mod:`.finetune_md`, :mod:`.tensile` — one module per workflow.
"""

from gptff_flows.analysis.eos_fit import EosFit
from gptff_flows.analysis.eos_geometry import CutoffCrossing
from gptff_flows.schemas.base import (
    GPTFFMoleculeTaskDocument,
    GPTFFProvenance,
    GPTFFTaskDocument,
    JobType,
    gptff_version,
    with_provenance,
)
from gptff_flows.schemas.eos import EosVerdict, GPTFFEosDocument

__all__ = [
    "CutoffCrossing",
    "EosFit",
    "EosVerdict",
    "GPTFFEosDocument",
    "GPTFFMoleculeTaskDocument",
    "GPTFFProvenance",
    "GPTFFTaskDocument",
    "JobType",
    "gptff_version",
    "with_provenance",
]
