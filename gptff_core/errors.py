"""The exception families of GPTFF and the exit codes of the ``gptff`` command.

Every check on user input (structures, checkpoint files, options, stores, output paths) raises a
subclass of :class:`GPTFFInputError`, itself a :class:`ValueError`, so callers can catch one type.
Work that started but cannot give a trustworthy result raises :class:`ComputationError`.
"""

from enum import IntEnum


class GPTFFInputError(ValueError):
    """Input that GPTFF cannot evaluate; the message says what was wrong and what to do."""


class StructureError(GPTFFInputError):
    """A structure GPTFF cannot evaluate (unknown element, NaN coordinates, overlapping atoms)."""


class CheckpointError(GPTFFInputError):
    """A checkpoint file that is missing, corrupted, tampered with or does not match the network."""


class StoreError(GPTFFInputError):
    """A job store that does not exist, cannot be reached, written or read, or is corrupted."""


class ComputationError(RuntimeError):
    """Work that started but gave no trustworthy result (a non-finite energy, a failed fit, a
    failed job); the message says what failed and what to do."""


class ExitCode(IntEnum):
    """Exit codes of ``gptff`` and the ``workflows/`` scripts (documented in the README)."""

    OK = 0
    """Finished; every result is trustworthy."""
    BAD_INPUT = 1
    """Refused before any work: a structure, file, option value, checkpoint, store or output path
    is wrong (one ``gptff: error: ...`` line says which and what to do)."""
    USAGE = 2
    """The command line itself is wrong (unknown option, missing argument): argparse's code."""
    FLAGGED = 3
    """Finished and written, but a result carries a verdict: a relaxation not converged, an EOS fit
    or an MD temperature flagged. The output says which and why."""
    FAILED = 4
    """The work started but failed or produced no result (a job failed, a non-finite energy, a
    campaign with no candidates, an internal error); completed results stay stored."""
    NO_RESOURCES = 5
    """Out of memory or out of disk space."""
    INTERRUPTED = 130
    """Stopped by Ctrl-C (SIGINT)."""
