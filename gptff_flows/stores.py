"""Job stores for GPTFF flows: an embedded one that needs no server, or MongoDB.

:func:`open_job_store` takes a *location*:

* ``None`` — ``$GPTFF_STORE`` if set (any of the forms below), else the embedded store in
  :func:`default_store_dir`: ``$GPTFF_STORE_DIR``, else ``$XDG_DATA_HOME/gptff/store``, else
  ``~/.local/share/gptff/store``;
* a directory — an embedded store there (created on first use, unless ``create=False``);
* ``mongodb://...`` or ``mongodb+srv://...`` — MongoDB: documents in ``MongoStore`` collection
  ``outputs``, large arrays in ``GridFSStore`` ``outputs_data``; the database comes from the URI's
  path (default ``gptff``);
* ``jobflow`` or ``jobflow:/path/to/jobflow.yaml`` — the ``JOB_STORE`` of jobflow's settings file
  (``$JOBFLOW_CONFIG_FILE`` or ``~/.jobflow.yaml`` for the bare form).

Every store is checked when it is opened, before any work: an embedded store must exist (read-only
callers pass ``create=False``: nothing is created), hold both its collections and be readable and,
for writers, writable; a MongoDB server must answer within :func:`store_timeout` seconds
(``$GPTFF_STORE_TIMEOUT``, default 5 s). A failed check raises :class:`StoreError` with one line
that says what to do.

Embedded layout (montydb on SQLite, one file per collection)::

    <store dir>/
        .monty.storage, monty.storage.cfg   montydb's storage configuration, written once
        .gptff-store.lock                   lock held while the configuration is written
        gptff/outputs.collection            job output documents
        gptff/data.collection               large arrays: trajectories, ionic steps
        screening_leases.sqlite             screening chunk leases (gptff_flows.jobs.leases)
        plots/                              EOS plots of ``gptff eos``

maggma's ``MontyStore.connect()`` rewrites montydb's configuration files on every call; a
process that reads them mid-rewrite sees an empty file and loses its writes. Two processes that
first write to a new collection at once race to create its table. :class:`GPTFFMontyStore` writes
the configuration once, under a lock, and creates its collection then; afterwards ``connect`` only
reads. Credentials in MongoDB URIs are never logged: :func:`describe_store` redacts them.

Integrity (:mod:`gptff_flows.store_integrity`): :class:`GPTFFMontyStore` stores with each
document the sha256 of its BSON encoding (field :data:`CHECKSUM_FIELD`, removed again on reading)
and checks it on every document montydb decodes, whether or not the query returns it. A changed
bit gives a :class:`StoreError` naming the document and the file, never a different number; so
does a document that no longer decodes, a damaged SQLite file or a deleted collection file.
Documents written without a checksum (stores written before checksums) are read unchecked.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock
from jobflow import JobStore
from maggma.stores import MemoryStore, MongoStore, MontyStore
from monty.json import jsanitize
from montydb import MontyClient, set_storage

from gptff_core.errors import StoreError
from gptff_flows.store_integrity import (  # noqa: F401 (re-exported: part of this module's API)
    CHECKSUM_FIELD,
    DATABASE_ERRORS,
    SQLITE_BUSY_TIMEOUT_MS,
    DocumentChecks,
    damaged,
    one_line,
    redact_uri,
    seal,
    store_failure,
    verify,
)

logger = logging.getLogger(__name__)

STORE_ENV = "GPTFF_STORE"
STORE_DIR_ENV = "GPTFF_STORE_DIR"
STORE_TIMEOUT_ENV = "GPTFF_STORE_TIMEOUT"
DEFAULT_STORE_TIMEOUT_S = 5.0
"""s: how long opening a MongoDB store waits for the server (``$GPTFF_STORE_TIMEOUT``)."""
DATABASE_NAME = "gptff"
DOCS_COLLECTION = "outputs"
DATA_COLLECTION = "data"
GRIDFS_COLLECTION = "outputs_data"

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


def store_timeout() -> float:
    """s, how long a MongoDB server may take to answer when a store is opened."""
    text = os.environ.get(STORE_TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_STORE_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise StoreError(f"${STORE_TIMEOUT_ENV} must be a number of seconds > 0, got {text!r}")
    return value


# ---------------------------------------------------------------- the embedded store


def _collection_file(directory: Path, database: str, name: str) -> Path:
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
    return [c for c in collections if not _collection_file(directory, database, c).is_file()]


def _required(database: str, collections: list[str]) -> list[str]:
    """The collections of ``collections`` that every GPTFF store has from its creation."""
    return [c for c in collections if database == DATABASE_NAME and c in _STANDARD_COLLECTIONS]


def no_store(directory: Path) -> StoreError:
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


def _is_store(directory: Path, database: str, required: list[str]) -> bool:
    """Whether ``directory`` holds (traces of) a store: its configuration or a standard
    collection file."""
    return _is_configured(directory) or len(_missing(directory, database, required)) < len(required)


def _probe(directory: Path, database: str, collections: list[str]) -> None:
    """Refuse a collection file that SQLite cannot read (not a database, no table)."""
    for name in collections:
        path = _collection_file(directory, database, name)
        try:
            with sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000) as connection:
                connection.execute("SELECT k FROM documents LIMIT 1").fetchall()
            connection.close()
        except sqlite3.Error as exc:
            raise store_failure(exc, directory, f"opening {database}/{name}.collection") from exc


def _check_writable(directory: Path, database: str, collections: list[str]) -> None:
    paths = [directory / database, *(_collection_file(directory, database, c) for c in collections)]
    for path in paths:
        if not os.access(path, os.W_OK):
            raise StoreError(
                f"cannot write the store at {directory} ({path} is read-only); check its "
                "permissions, or use another --store"
            )


class GPTFFMontyStore(MontyStore):
    """maggma ``MontyStore`` (SQLite) safe for several processes writing at once, with a checksum
    on every document.

    The storage configuration is written once and the collection created up front
    (:func:`prepare_store_dir`); ``connect`` never rewrites montydb's configuration. Arguments
    are ``MontyStore``'s (``collection_name``, ``database_path``, ``database_name``); only
    ``storage="sqlite"`` is supported. Writers wait up to :data:`SQLITE_BUSY_TIMEOUT_MS` for
    each other. Every document written carries :data:`CHECKSUM_FIELD`; every document read is
    checked (module docstring). SQLite, BSON and montydb errors become :class:`StoreError`
    (the last one is kept in ``failure`` so that callers can report it after jobflow swallowed
    it).
    """

    failure: Exception | None = None

    @property
    def collection_file(self) -> Path:
        """The SQLite file of this collection."""
        return _collection_file(Path(self.database_path), self.database_name, self.collection_name)

    @contextmanager
    def _guard(self, action: str):
        try:
            yield
        except StoreError as exc:
            self.failure = exc
            raise
        except DATABASE_ERRORS as exc:
            self.failure = store_failure(exc, self.database_path, action)
            raise self.failure from exc

    def connect(self, force_reset: bool = False) -> None:
        """Open the collection, creating the store directory and collection on first use."""
        if self._coll is not None and not force_reset:
            return
        if self.storage != "sqlite":
            raise StoreError(f"GPTFFMontyStore supports storage='sqlite', not {self.storage!r}")
        with self._guard("opening"):
            prepare_store_dir(self.database_path, self.database_name, [self.collection_name])
            client_kwargs = {"busy_timeout": SQLITE_BUSY_TIMEOUT_MS, **self.client_kwargs}
            client = MontyClient(self.database_path, **client_kwargs)
            self._checks = DocumentChecks(client, self.collection_file)
            self._coll = client[self.database_name][self.collection_name]

    def query(self, *args, **kwargs) -> Iterator[dict]:
        """maggma's ``query``; every document montydb reads is checked."""
        with self._guard("reading"):
            yield from super().query(*args, **kwargs)

    def count(self, *args, **kwargs) -> int:
        with self._guard("counting"):
            return super().count(*args, **kwargs)

    def distinct(self, *args, **kwargs) -> list:
        with self._guard("reading"):
            return super().distinct(*args, **kwargs)

    def update(self, docs: list[dict] | dict, key: list | str | None = None) -> None:
        """maggma's ``update``, each document sealed with its checksum."""
        docs = docs if isinstance(docs, list) else [docs]
        sealed = [seal(jsanitize(doc, allow_bson=True)) for doc in docs]
        with self._guard("writing"):
            self.connect()  # no-op when connected
            with self._checks.paused():  # the replaced documents need no check (reads check)
                super().update(sealed, key=key)

    def remove_docs(self, criteria: dict) -> None:
        with self._guard("removing documents"):
            super().remove_docs(criteria)


def local_job_store(directory: str | os.PathLike | None = None, *, create: bool = True) -> JobStore:
    """JobStore in ``directory`` (default :func:`default_store_dir`): documents and a "data" store.

    Both are :class:`GPTFFMontyStore` collections of one montydb directory; the directory, its
    configuration and both collections are created here (unless ``create=False``: then a missing
    store is a :class:`StoreError`), so later connections only read. The store is checked
    readable (and writable when ``create``) before it is returned.
    """
    path = Path(directory).expanduser() if directory is not None else default_store_dir()
    path = path.resolve()
    if path.exists() and not path.is_dir():
        raise StoreError(f"store {path} is a file; give a directory for the embedded store")
    collections = [DOCS_COLLECTION, DATA_COLLECTION]
    prepare_store_dir(path, DATABASE_NAME, collections, create=create)
    _probe(path, DATABASE_NAME, collections)
    if create:
        _check_writable(path, DATABASE_NAME, collections)
    docs = GPTFFMontyStore(DOCS_COLLECTION, database_path=str(path), database_name=DATABASE_NAME)
    data = GPTFFMontyStore(DATA_COLLECTION, database_path=str(path), database_name=DATABASE_NAME)
    return JobStore(docs, additional_stores={"data": data})


# ---------------------------------------------------------------- MongoDB and jobflow settings


def mongo_job_store(uri: str, database: str | None = None) -> JobStore:
    """JobStore on MongoDB: ``MongoStore`` documents and a ``GridFSStore`` "data" store.

    ``database`` defaults to the database in the URI's path, else ``gptff``. Not connected:
    :func:`check_job_store` contacts the server.
    """
    from maggma.stores import GridFSStore
    from pymongo import uri_parser

    try:
        database = database or uri_parser.parse_uri(uri)["database"] or DATABASE_NAME
    except Exception as exc:  # pymongo raises InvalidURI, ConfigurationError, ValueError
        raise StoreError(f"not a valid MongoDB URI ({redact_uri(uri)}): {one_line(exc)}") from None
    docs = MongoStore(database, DOCS_COLLECTION, uri=uri)
    data = GridFSStore(database, GRIDFS_COLLECTION, uri=uri)
    return JobStore(docs, additional_stores={"data": data})


def _mongo_client(docs: MongoStore, timeout_ms: int):
    from pymongo import MongoClient

    kwargs = {**(docs.mongoclient_kwargs or {}), "serverSelectionTimeoutMS": timeout_ms}
    if docs.uri is not None:
        return MongoClient(docs.uri, **kwargs)
    if docs.username:
        credentials = dict(username=docs.username, password=docs.password)
        return MongoClient(
            docs.host, docs.port, authSource=docs.auth_source, **credentials, **kwargs
        )
    return MongoClient(docs.host, docs.port, **kwargs)


def check_mongo_store(docs: MongoStore, create: bool = True) -> None:
    """Refuse a MongoDB store whose server does not answer within :func:`store_timeout` s, that
    refuses the credentials, or (``create=False``) that has no ``docs.collection_name``."""
    from pymongo.errors import PyMongoError

    if getattr(docs, "ssh_tunnel", None) is not None:
        logger.info(
            "not checking %s before use: it is reached through an SSH tunnel", docs.database
        )
        return
    timeout = store_timeout()
    where = describe_mongo(docs)
    try:
        with _mongo_client(docs, int(timeout * 1000)) as client:
            names = client[docs.database].list_collection_names()
    except (PyMongoError, ValueError, TypeError) as exc:
        reason = one_line(exc).split(", Timeout:")[0].split(" (configured timeouts")[0]
        raise StoreError(
            f"cannot reach {where} ({reason}; waited up to {timeout:g} s); check that the "
            "server runs and the host, port and credentials, or use another --store "
            f"(${STORE_TIMEOUT_ENV} sets the wait, in s)"
        ) from None
    if not create and docs.collection_name not in names:
        raise StoreError(
            f"no store in {where}: it has no collection {docs.collection_name!r} (a typo in the "
            "database name?); give --store the URI your results were stored in"
        )


def jobflow_settings_store(settings_file: str | os.PathLike | None = None) -> JobStore:
    """The ``JOB_STORE`` of jobflow's settings file (default: jobflow's own lookup)."""
    from jobflow.settings import JobflowSettings

    if settings_file is None:
        return JobflowSettings().JOB_STORE
    path = Path(settings_file).expanduser()
    if not path.is_file():
        raise StoreError(f"jobflow settings file {path} does not exist")
    return JobflowSettings(CONFIG_FILE=str(path)).JOB_STORE


def check_job_store(store: JobStore, create: bool = True) -> None:
    """The checks :func:`open_job_store` makes, for a JobStore built elsewhere."""
    docs = store.docs_store
    if isinstance(docs, GPTFFMontyStore):
        path = Path(docs.database_path)
        prepare_store_dir(path, docs.database_name, [docs.collection_name], create=create)
        _probe(path, docs.database_name, [docs.collection_name])
    elif isinstance(docs, MongoStore) and not isinstance(docs, MemoryStore):
        check_mongo_store(docs, create=create)


def open_job_store(
    location: str | os.PathLike | None = None, *, create: bool = True, check: bool = True
) -> JobStore:
    """The JobStore a location names (see the module docstring), checked but not connected.

    Args:
        location: a directory, ``mongodb://...`` URI, ``jobflow[:file]``; None: the default.
        create: make an embedded store that does not exist yet; ``False`` (read-only callers)
            refuses it, and refuses a MongoDB database without GPTFF results.
        check: contact a MongoDB server now (``False``: only build the store object).

    Raises:
        StoreError: the store does not exist (``create=False``), is damaged, not writable, or
            its server does not answer within :func:`store_timeout` s.
    """
    if location is None:
        location = os.environ.get(STORE_ENV) or None
    if location is None:
        return local_job_store(create=create)
    text = str(location)
    if text.startswith(("mongodb://", "mongodb+srv://")):
        store = mongo_job_store(text)
    elif text == "jobflow":
        store = jobflow_settings_store()
    elif text.startswith("jobflow:"):
        store = jobflow_settings_store(text.removeprefix("jobflow:"))
    else:
        return local_job_store(text, create=create)
    if check:
        check_job_store(store, create=create)
    return store


def describe_mongo(docs: MongoStore) -> str:
    uri = getattr(docs, "uri", None)
    if uri:
        return f"MongoDB {redact_uri(uri)} (database {docs.database})"
    return f"MongoDB {docs.host}:{docs.port} (database {docs.database})"


def describe_store(store: JobStore) -> str:
    """A one-line description of ``store`` that is safe to print or log (no credentials)."""
    docs = store.docs_store
    if isinstance(docs, MontyStore):
        return f"embedded store {docs.database_path}"
    if isinstance(docs, MongoStore) and not isinstance(docs, MemoryStore):
        return describe_mongo(docs)
    return type(docs).__name__


def store_dir(store: JobStore) -> Path | None:
    """Directory of an embedded store, else None."""
    docs = store.docs_store
    return Path(docs.database_path) if isinstance(docs, MontyStore) else None


def recorded_failure(store: JobStore) -> Exception | None:
    """The store error a :class:`GPTFFMontyStore` of ``store`` last raised (jobflow reports a
    job whose write failed only as a failed job), else None."""
    for part in (store.docs_store, *store.additional_stores.values()):
        if (failure := getattr(part, "failure", None)) is not None:
            return failure
    return None
