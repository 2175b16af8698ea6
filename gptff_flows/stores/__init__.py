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

Integrity (:mod:`gptff_flows.stores.integrity`): :class:`GPTFFMontyStore` stores with each
document the sha256 of its BSON encoding (field :data:`CHECKSUM_FIELD`, removed again on reading)
and checks it on every document montydb decodes, whether or not the query returns it. A changed
bit gives a :class:`StoreError` naming the document and the file, never a different number; so
does a document that no longer decodes, a damaged SQLite file or a deleted collection file.
Documents written without a checksum (stores written before checksums) are read unchecked.

The embedded store's directory checks are in :mod:`gptff_flows.stores.directory`, MongoDB's in
:mod:`gptff_flows.stores.mongodb`; their public names are importable from here too.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from jobflow import JobStore
from maggma.stores import MemoryStore, MongoStore, MontyStore
from monty.json import jsanitize
from montydb import MontyClient

from gptff_core.errors import StoreError

# re-exported: the names below are part of this module's API
from gptff_flows.stores.directory import (  # noqa: F401
    DATA_COLLECTION,
    DATABASE_NAME,
    DOCS_COLLECTION,
    STORE_DIR_ENV,
    check_writable,
    collection_file,
    default_store_dir,
    no_store,
    prepare_store_dir,
    probe_collections,
)
from gptff_flows.stores.integrity import (  # noqa: F401
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
from gptff_flows.stores.mongodb import (  # noqa: F401
    DEFAULT_STORE_TIMEOUT_S,
    GRIDFS_COLLECTION,
    STORE_TIMEOUT_ENV,
    check_mongo_store,
    describe_mongo,
    mongo_job_store,
    store_timeout,
)

logger = logging.getLogger(__name__)

STORE_ENV = "GPTFF_STORE"


# ---------------------------------------------------------------- the embedded store


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
        return collection_file(Path(self.database_path), self.database_name, self.collection_name)

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
    probe_collections(path, DATABASE_NAME, collections)
    if create:
        check_writable(path, DATABASE_NAME, collections)
    docs = GPTFFMontyStore(DOCS_COLLECTION, database_path=str(path), database_name=DATABASE_NAME)
    data = GPTFFMontyStore(DATA_COLLECTION, database_path=str(path), database_name=DATABASE_NAME)
    return JobStore(docs, additional_stores={"data": data})


# ---------------------------------------------------------------- jobflow settings, any store


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
        probe_collections(path, docs.database_name, [docs.collection_name])
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
