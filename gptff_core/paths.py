"""Output paths checked before the work starts, and files written so that a crash leaves either
the old file or the complete new one, never half of it."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from gptff_core.errors import GPTFFInputError


def _probe_directory(directory: Path, what: str) -> None:
    """Refuse ``directory`` unless a file can be created in it (tries one, then removes it);
    ``what`` names the option and path in the message."""
    try:
        handle, name = tempfile.mkstemp(prefix=".gptff-probe-", dir=directory)
    except OSError as error:
        raise GPTFFInputError(
            f"{what}: cannot write in {directory} ({error.strerror or error}); "
            "choose a directory you can write to"
        ) from None
    os.close(handle)
    os.unlink(name)


def check_output_file(path: str | os.PathLike, label: str = "output") -> Path:
    """Refuse an output file path that cannot be written, before any work is done.

    ``path`` may exist (it will be replaced) but must not be a directory; its directory must
    exist and be writable. Returns the path.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise GPTFFInputError(f"{label} {path} is a directory; give a file name")
    parent = path.parent
    if not parent.is_dir():
        raise GPTFFInputError(f"{label} {path}: directory {parent} does not exist")
    _probe_directory(parent, f"{label} {path}")
    return path


def check_output_dir(path: str | os.PathLike, label: str = "output directory") -> Path:
    """Create ``path`` (and its parents) if needed and refuse it unless files can be written in
    it, before any work is done. Returns the path."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise GPTFFInputError(f"{label} {path} is a file; give a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise GPTFFInputError(
            f"{label} {path}: cannot create it ({error.strerror or error}); "
            "choose a directory you can write to"
        ) from None
    _probe_directory(path, f"{label} {path}")
    return path


def write_atomically(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(temporary_path)`` and move the result onto ``path`` in one step, so readers
    (and a crash) see either the previous file or the complete new one."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}{path.suffix}")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path
