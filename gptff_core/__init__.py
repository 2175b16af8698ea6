"""GPTFF: a universal machine-learned force field for inorganic materials.

Public entry points: :class:`GPTFFCalculator` (ASE), :func:`load_model`, :func:`predict`.
Units: Å, eV, eV/Å, eV/Å³ (ASE sign: positive = tensile).
"""

from gptff_core.checkpoint import load_model, save_checkpoint
from gptff_core.errors import CheckpointError, GPTFFInputError, StructureError
from gptff_core.model import GPTFF, GPTFFConfig

__all__ = [
    "GPTFF",
    "CheckpointError",
    "GPTFFConfig",
    "GPTFFInputError",
    "StructureError",
    "load_model",
    "save_checkpoint",
]
