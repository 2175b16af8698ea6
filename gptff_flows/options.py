"""Options shared by the GPTFF Makers.

Paths given to a Maker are resolved when the Maker is built, in the caller's working directory:
jobs run elsewhere (``run_flow``'s temporary directory, a cluster node), so a relative path would
otherwise name a directory that is deleted or never seen.
"""

from __future__ import annotations

import os
from pathlib import Path


def absolute_dir(path: str | os.PathLike | None) -> str | None:
    """``path`` as an absolute directory name, resolved against the current working directory
    (``~`` expanded); ``None`` stays ``None``."""
    if path is None:
        return None
    return str(Path(path).expanduser().resolve())
