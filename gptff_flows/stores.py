"""Job stores for GPTFF flows: an embedded one that needs no server, or MongoDB.

:func:`open_job_store` takes a *location*:

* ``None`` — ``$GPTFF_STORE`` if set (any of the forms below), else the embedded store in
  :func:`default_store_dir`: ``$GPTFF_STORE_DIR``, else ``$XDG_DATA_HOME/gptff/store``, else
  ``~/.local/share/gptff/store``;
* a directory — an embedded store there (created on first use);
* ``mongodb://...`` or ``mongodb+srv://...`` — MongoDB: documents in ``MongoStore`` collection
  ``outputs``, large arrays in ``GridFSStore`` ``outputs_data``; the database comes from the URI's
  path (default ``gptff``);
* ``jobflow`` or ``jobflow:/path/to/jobflow.yaml`` — the ``JOB_STORE`` of jobflow's settings file
  (``$JOBFLOW_CONFIG_FILE`` or ``~/.jobflow.yaml`` for the bare form).

Embedded layout (montydb on SQLite, one file per collection)::

    <store dir>/
        .monty.storage, monty.storage.cfg   montydb's storage configuration, written once
        .gptff-store.lock                   lock held while the configuration is written
        gptff/outputs.collection            job output documents
        gptff/data.collection               large arrays: trajectories, ionic steps
        plots/                              EOS plots of ``gptff eos``

maggma's ``MontyStore.connect()`` rewrites montydb's configuration files on every call; a
process that reads them mid-rewrite sees an empty file and loses its writes. Two processes that
first write to a new collection at once race to create its table. :class:`GPTFFMontyStore` writes
the configuration once, under a lock, and creates its collection then; afterwards ``connect`` only
reads. Credentials in MongoDB URIs are never logged: :func:`describe_store` redacts them.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
from contextlib import contextmanager
from pathlib import Path

from jobflow import JobStore
from maggma.stores import MontyStore
from montydb import MontyClient, set_storage

from gptff_core.errors import GPTFFInputError

logger = logging.getLogger(__name__)

STORE_ENV = "GPTFF_STORE"
STORE_DIR_ENV = "GPTFF_STORE_DIR"
DATABASE_NAME = "gptff"
DOCS_COLLECTION = "outputs"
DATA_COLLECTION = "data"
GRIDFS_COLLECTION = "outputs_data"
SQLITE_BUSY_TIMEOUT_MS = 60_000
"""How long a writer waits for another process's SQLite write lock before failing."""

_LOCK_FILE = ".gptff-store.lock"
_MONTY_IDENT_FILE = ".monty.storage"
_MONTY_STORAGE = {"storage": "sqlite", "use_bson": True, "mongo_version": "4.0"}


def default_store_dir() -> Path:
    """``$GPTFF_STORE_DIR``, else ``$XDG_DATA_HOME/gptff/store``, else ``~/.local/share/...``."""
    if explicit := os.environ.get(STORE_DIR_ENV):
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "gptff" / "store"


@contextmanager
def _directory_lock(directory: Path):
    """An exclusive ``flock`` on ``directory/.gptff-store.lock`` (waits for other processes)."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / _LOCK_FILE, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def prepare_store_dir(directory: str | os.PathLike, database: str, collections: list[str]):
    """Write montydb's SQLite configuration in ``directory`` once and create ``collections``.

    Idempotent and safe to call from many processes at once: the work happens under a file lock
    and existing configuration or tables are left alone.
    """
    directory = Path(directory)
    with _directory_lock(directory):
        if not (directory / _MONTY_IDENT_FILE).is_file():
            logger.info("creating an embedded GPTFF store in %s", directory)
            set_storage(str(directory), **_MONTY_STORAGE)
        db = MontyClient(str(directory))[database]
        existing = set(db.collection_names())
        for name in collections:
            if name not in existing:
                db.create_collection(name)


class GPTFFMontyStore(MontyStore):
    """maggma ``MontyStore`` (SQLite) safe for several processes writing at once.

    The storage configuration is written once and the collection created up front
    (:func:`prepare_store_dir`); ``connect`` never rewrites montydb's configuration. Arguments
    are ``MontyStore``'s (``collection_name``, ``database_path``, ``database_name``); only
    ``storage="sqlite"`` is supported. Writers wait up to :data:`SQLITE_BUSY_TIMEOUT_MS` for
    each other.
    """

    def connect(self, force_reset: bool = False) -> None:
        """Open the collection, creating the store directory and collection on first use."""
        if self._coll is not None and not force_reset:
            return
        if self.storage != "sqlite":
            raise GPTFFInputError(
                f"GPTFFMontyStore supports storage='sqlite', not {self.storage!r}"
            )
        prepare_store_dir(self.database_path, self.database_name, [self.collection_name])
        client_kwargs = {"busy_timeout": SQLITE_BUSY_TIMEOUT_MS, **self.client_kwargs}
        client = MontyClient(self.database_path, **client_kwargs)
        self._coll = client[self.database_name][self.collection_name]


def local_job_store(directory: str | os.PathLike | None = None) -> JobStore:
    """JobStore in ``directory`` (default :func:`default_store_dir`): documents and a "data" store.

    Both are :class:`GPTFFMontyStore` collections of one montydb directory; the directory, its
    configuration and both collections are created here, so later connections only read.
    """
    path = Path(directory).expanduser() if directory is not None else default_store_dir()
    path = path.resolve()
    if path.exists() and not path.is_dir():
        raise GPTFFInputError(f"store {path} is a file; give a directory for the embedded store")
    prepare_store_dir(path, DATABASE_NAME, [DOCS_COLLECTION, DATA_COLLECTION])
    docs = GPTFFMontyStore(DOCS_COLLECTION, database_path=str(path), database_name=DATABASE_NAME)
    data = GPTFFMontyStore(DATA_COLLECTION, database_path=str(path), database_name=DATABASE_NAME)
    return JobStore(docs, additional_stores={"data": data})


def mongo_job_store(uri: str, database: str | None = None) -> JobStore:
    """JobStore on MongoDB: ``MongoStore`` documents and a ``GridFSStore`` "data" store.

    ``database`` defaults to the database in the URI's path, else ``gptff``.
    """
    from maggma.stores import GridFSStore, MongoStore
    from pymongo import uri_parser

    try:
        database = database or uri_parser.parse_uri(uri)["database"] or DATABASE_NAME
    except Exception as exc:  # pymongo raises InvalidURI, ConfigurationError, ValueError
        raise GPTFFInputError(f"not a valid MongoDB URI ({redact_uri(uri)}): {exc}") from None
    docs = MongoStore(database, DOCS_COLLECTION, uri=uri)
    data = GridFSStore(database, GRIDFS_COLLECTION, uri=uri)
    return JobStore(docs, additional_stores={"data": data})


def jobflow_settings_store(settings_file: str | os.PathLike | None = None) -> JobStore:
    """The ``JOB_STORE`` of jobflow's settings file (default: jobflow's own lookup)."""
    from jobflow.settings import JobflowSettings

    if settings_file is None:
        return JobflowSettings().JOB_STORE
    path = Path(settings_file).expanduser()
    if not path.is_file():
        raise GPTFFInputError(f"jobflow settings file {path} does not exist")
    return JobflowSettings(CONFIG_FILE=str(path)).JOB_STORE


def open_job_store(location: str | os.PathLike | None = None) -> JobStore:
    """The JobStore a location names (see the module docstring); not yet connected."""
    if location is None:
        location = os.environ.get(STORE_ENV) or None
    if location is None:
        return local_job_store()
    text = str(location)
    if text.startswith(("mongodb://", "mongodb+srv://")):
        return mongo_job_store(text)
    if text == "jobflow":
        return jobflow_settings_store()
    if text.startswith("jobflow:"):
        return jobflow_settings_store(text.removeprefix("jobflow:"))
    return local_job_store(text)


def redact_uri(uri: str) -> str:
    """``uri`` with any password replaced by ``***`` (``user:secret@host`` → ``user:***@host``)."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", uri)


def describe_store(store: JobStore) -> str:
    """A one-line description of ``store`` that is safe to print or log (no credentials)."""
    docs = store.docs_store
    if isinstance(docs, MontyStore):
        return f"embedded store {docs.database_path}"
    uri = getattr(docs, "uri", None)
    if uri:
        return f"MongoDB {redact_uri(uri)} (database {docs.database})"
    host = getattr(docs, "host", None)
    if host:
        return f"MongoDB {host}:{getattr(docs, 'port', '')} (database {docs.database})"
    return type(docs).__name__


def store_dir(store: JobStore) -> Path | None:
    """Directory of an embedded store, else None."""
    docs = store.docs_store
    return Path(docs.database_path) if isinstance(docs, MontyStore) else None
