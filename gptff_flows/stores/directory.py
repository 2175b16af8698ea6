"""The embedded store's directory: where it is, what it holds, and the checks made on opening it.

An embedded GPTFF store is a montydb directory on SQLite, one file per collection (the layout is
drawn in :mod:`gptff_flows.stores`). :func:`prepare_store_dir` writes montydb's configuration
once, under a :class:`filelock.FileLock` (portable: ``flock`` on Unix, ``msvcrt`` on Windows),
and creates the collections then, so that later connections only read; it tells a new store from
a damaged one (a standard collection file gone). :func:`probe_collections` and
:func:`check_writable` refuse, before any work, a collection SQLite cannot read and a store the
caller cannot write. Every refusal is a :class:`~gptff_core.errors.StoreError` of one line that
says what to do.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock
from montydb import MontyClient, set_storage

from gptff_core.errors import StoreError
from gptff_flows.stores.integrity import SQLITE_BUSY_TIMEOUT_MS, damaged, one_line, store_failure

logger = logging.getLogger(__name__)

STORE_DIR_ENV = "GPTFF_STORE_DIR"
DATABASE_NAME = "gptff"
DOCS_COLLECTION = "outputs"
DATA_COLLECTION = "data"

_LOCK_FILE = ".gptff-store.lock"
_MONTY_IDENT_FILE = ".monty.storage"
_MONTY_CONFIG_FILE = "monty.storage.cfg"
_MONTY_STORAGE = {"storage": "sqlite", "use_bson": True, "mongo_version": "4.0"}
_STANDARD_COLLECTIONS = (DOCS_COLLECTION, DATA_COLLECTION)


def default_store_dir() -> Path:
    """``$GPTFF_STORE_DIR``, else ``$XDG_DATA_HOME/gptff/store``, else ``~/.local/share/...``."""
    if explicit := os.environ.get(STORE_DIR_ENV):
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "gptff" / "store"


def collection_file(directory: Path, database: str, name: str) -> Path:
    """The SQLite file of collection ``name`` of ``database`` in the store ``directory``."""
    return directory / database / f"{name}.collection"


@contextmanager
def _directory_lock(directory: Path):
    """An exclusive lock on ``directory/.gptff-store.lock`` (waits for other processes)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(directory / _LOCK_FILE))
        lock.acquire()
    except OSError as exc:
        raise StoreError(
            f"cannot create or lock the store at {directory} ({one_line(exc)}); choose a "
            "directory you can write to"
        ) from None
    try:
        yield
    finally:
        lock.release()


def _is_configured(directory: Path) -> bool:
    """Whether montydb's configuration files say SQLite with pymongo's BSON (the only storage
    GPTFF writes); a store whose files are gone or garbled gets them written again."""
    try:
        ident = (directory / _MONTY_IDENT_FILE).read_text().strip()
        config = (directory / _MONTY_CONFIG_FILE).read_text()
    except (OSError, UnicodeDecodeError):
        return False
    return ident == "sqlite" and re.search(r"^use_bson\s*=\s*yes\s*$", config, re.M) is not None


def _missing(directory: Path, database: str, collections: list[str]) -> list[str]:
    """The collections of ``collections`` that have no file in ``directory``."""
    return [c for c in collections if not collection_file(directory, database, c).is_file()]


def _required(database: str, collections: list[str]) -> list[str]:
    """The collections of ``collections`` that every GPTFF store has from its creation."""
    return [c for c in collections if database == DATABASE_NAME and c in _STANDARD_COLLECTIONS]


def _is_store(directory: Path, database: str, required: list[str]) -> bool:
    """Whether ``directory`` holds (traces of) a store: its configuration or a standard
    collection file."""
    return _is_configured(directory) or len(_missing(directory, database, required)) < len(required)


def no_store(directory: Path) -> StoreError:
    """The error for a read-only caller that names a directory without a store."""
    return StoreError(
        f"no store at {directory}; check the path, or give --store the directory your results "
        "were stored in (gptff eos, gptff relax --store and gptff screen create one)"
    )


def prepare_store_dir(
    directory: str | os.PathLike, database: str, collections: list[str], create: bool = True
) -> None:
    """Write montydb's SQLite configuration in ``directory`` once and create ``collections``.

    Idempotent and safe to call from many processes at once: the work happens under a file lock
    and existing configuration or tables are left alone. A store whose standard collection file
    (``gptff/outputs.collection``, ``gptff/data.collection``) is gone is damaged, not new:
    :class:`StoreError`. With ``create=False`` a missing store is refused, nothing is written.
    """
    directory = Path(directory)
    if _is_configured(directory) and not _missing(directory, database, collections):
        return  # the usual case: nothing to write, no lock
    required = _required(database, collections)
    if not create and not _is_store(directory, database, required):
        raise no_store(directory)
    with _directory_lock(directory):
        missing = _missing(directory, database, collections)
        is_store = _is_store(directory, database, required)
        lost = [c for c in missing if c in required]
        if is_store and lost:
            files = ", ".join(f"{database}/{c}.collection" for c in lost)
            raise damaged(directory, f"{files} missing")
        if not is_store and not create:
            raise no_store(directory)
        if not _is_configured(directory):  # a new store, or one whose configuration was lost
            logger.info("creating an embedded GPTFF store in %s", directory)
            set_storage(str(directory), **_MONTY_STORAGE)
        db = MontyClient(str(directory))[database]
        for name in missing:
            db.create_collection(name)


def probe_collections(directory: Path, database: str, collections: list[str]) -> None:
    """Refuse a collection file that SQLite cannot read (not a database, no table)."""
    for name in collections:
        path = collection_file(directory, database, name)
        try:
            with sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000) as connection:
                connection.execute("SELECT k FROM documents LIMIT 1").fetchall()
            connection.close()
        except sqlite3.Error as exc:
            raise store_failure(exc, directory, f"opening {database}/{name}.collection") from exc


def check_writable(directory: Path, database: str, collections: list[str]) -> None:
    """Refuse a store whose database directory or collection files the caller cannot write."""
    paths = [directory / database, *(collection_file(directory, database, c) for c in collections)]
    for path in paths:
        if not os.access(path, os.W_OK):
            raise StoreError(
                f"cannot write the store at {directory} ({path} is read-only); check its "
                "permissions, or use another --store"
            )
