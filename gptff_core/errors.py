"""The one exception family for bad input to GPTFF.

Every check on user input (structures, checkpoint files, options) raises a subclass of
:class:`GPTFFInputError`, itself a :class:`ValueError`, so callers can catch one type.
"""


class GPTFFInputError(ValueError):
    """Input that GPTFF cannot evaluate; the message says what was wrong and what to do."""


class StructureError(GPTFFInputError):
    """A structure GPTFF cannot evaluate (unknown element, NaN coordinates, overlapping atoms)."""


class CheckpointError(GPTFFInputError):
    """A checkpoint file that is missing, corrupted, tampered with or does not match the network."""
