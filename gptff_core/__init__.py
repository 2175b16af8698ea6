"""GPTFF: a universal machine-learned force field for inorganic materials.

Public entry points: :class:`GPTFFCalculator` (ASE), :func:`load_model`, :func:`predict`.
Units: Å, eV, eV/Å, eV/Å³ (ASE sign: positive = tensile).
"""

from gptff_core.calculator import GPTFFCalculator
from gptff_core.checkpoint import load_model, save_checkpoint
from gptff_core.errors import CheckpointError, GPTFFInputError, StructureError
from gptff_core.model import GPTFF, GPTFFConfig
from gptff_core.predict import Predictions, predict

__all__ = [
    "GPTFF",
    "CheckpointError",
    "GPTFFCalculator",
    "GPTFFConfig",
    "GPTFFInputError",
    "Predictions",
    "StructureError",
    "load_model",
    "predict",
    "save_checkpoint",
]
