"""Job stores on MongoDB: building one from a URI, checking its server answers, describing it.

Documents go to a ``MongoStore`` collection ``outputs``, large arrays to a ``GridFSStore``
``outputs_data``. :func:`check_mongo_store` contacts the server before any work and waits at
most :func:`store_timeout` seconds (``$GPTFF_STORE_TIMEOUT``, default 5 s). Credentials never
reach a message or a log line: :func:`describe_mongo` and every error redact them.
"""

from __future__ import annotations

import logging
import os

from jobflow import JobStore
from maggma.stores import MongoStore

from gptff_core.errors import StoreError
from gptff_flows.stores.directory import DATABASE_NAME, DOCS_COLLECTION
from gptff_flows.stores.integrity import one_line, redact_uri

logger = logging.getLogger(__name__)

STORE_TIMEOUT_ENV = "GPTFF_STORE_TIMEOUT"
DEFAULT_STORE_TIMEOUT_S = 5.0
"""s: how long opening a MongoDB store waits for the server (``$GPTFF_STORE_TIMEOUT``)."""
GRIDFS_COLLECTION = "outputs_data"


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


def mongo_job_store(uri: str, database: str | None = None) -> JobStore:
    """JobStore on MongoDB: ``MongoStore`` documents and a ``GridFSStore`` "data" store.

    ``database`` defaults to the database in the URI's path, else ``gptff``. Not connected:
    :func:`~gptff_flows.stores.check_job_store` contacts the server.
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
    """A pymongo client for the server of ``docs`` that gives up after ``timeout_ms`` ms."""
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


def describe_mongo(docs: MongoStore) -> str:
    """``docs``'s server and database in one line, without credentials."""
    uri = getattr(docs, "uri", None)
    if uri:
        return f"MongoDB {redact_uri(uri)} (database {docs.database})"
    return f"MongoDB {docs.host}:{docs.port} (database {docs.database})"
