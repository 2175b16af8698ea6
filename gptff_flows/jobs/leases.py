"""Leases that let concurrent runs of a screening campaign share its work without doing it twice.

A chunk job claims each structure (by its resume ``key``) before relaxing it: a lease record
``{key, owner, host, pid, expires}`` (``expires`` a Unix time in s) that another run respects
until it expires. The owner renews its leases every ``seconds / 4`` while it computes, so a
lease only runs out when its owner stopped (a crash, a kill, a lost node); the structure can then
be claimed again. A lease held by a process of this host that no longer exists is taken over at
once. The analysis job deletes the leases of the structures its chunks stored.

Claiming is atomic in the store:

* embedded store (montydb on SQLite): a table in ``<store dir>/screening_leases.sqlite``, read
  and written in one ``BEGIN IMMEDIATE`` transaction (SQLite's write lock: one process at a time).
  montydb has no unique upsert and no transaction spanning a read and a write, hence the table of
  its own next to the collections.
* MongoDB (maggma ``MongoStore``, and ``MemoryStore`` through mongomock): collection
  ``screening_leases`` in the store's database, one document per key with ``_id`` = key. A new
  lease is ``insert_one`` (a second owner gets ``DuplicateKeyError`` from the unique ``_id``); a
  takeover is ``update_one`` filtered on the holder and expiry read just before (a compare-and-set
  on one document, atomic in MongoDB).
* any other store: no leases (each run computes what it finds missing, as before), logged.
"""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path

logger = logging.getLogger(__name__)

LEASE_SECONDS = 600.0
"""s: a lease not renewed for this long is free (a crashed run's structures are retaken)."""

LEASE_FILE = "screening_leases.sqlite"
LEASE_COLLECTION = "screening_leases"
_SQLITE_TIMEOUT_S = 60.0
_FIELDS = ("owner", "host", "pid", "expires")


def new_owner() -> dict:
    """A lease owner: a unique ``id``, this ``host`` and ``pid``."""
    host, pid = socket.gethostname(), os.getpid()
    return dict(id=f"{host}:{pid}:{uuid.uuid4().hex[:12]}", host=host, pid=pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, OverflowError, TypeError):
        return True  # exists (another user's) or unknowable: treat as alive
    return True


def takeable(record: dict | None, owner: dict, now: float) -> bool:
    """Whether ``owner`` may take a key whose lease is ``record`` (None: no lease): free,
    expired, its own, or held by a process of this host that no longer runs."""
    if record is None or record.get("owner") == owner["id"]:
        return True
    if float(record.get("expires") or 0.0) < now:
        return True
    return record.get("host") == owner["host"] and not _alive(record.get("pid", -1))


class SQLiteLeases:
    """Leases in a SQLite file (the embedded store's directory)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        with closing(self._connect()) as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS leases (key TEXT PRIMARY KEY, owner TEXT, "
                "host TEXT, pid INTEGER, expires REAL)"
            )

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=_SQLITE_TIMEOUT_S, isolation_level=None)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with closing(self._connect()) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def holders(self, keys: Iterable[str]) -> dict[str, dict]:
        """key → lease record of the ``keys`` that have one."""
        keys = list(keys)
        with closing(self._connect()) as db:
            rows = [
                row
                for start in range(0, len(keys), 500)
                for row in db.execute(
                    "SELECT key, owner, host, pid, expires FROM leases WHERE key IN "
                    f"({','.join('?' * len(keys[start : start + 500]))})",
                    keys[start : start + 500],
                )
            ]
        names = ("key", "owner", "host", "pid", "expires")
        return {row[0]: dict(zip(names, row, strict=True)) for row in rows}

    def claim(self, keys: Iterable[str], owner: dict, seconds: float) -> set[str]:
        """The ``keys`` now leased to ``owner`` for ``seconds`` s (the others are held)."""
        claimed, now = set(), time.time()
        with self._transaction() as db:
            for key in keys:
                row = db.execute(
                    "SELECT owner, host, pid, expires FROM leases WHERE key = ?", (key,)
                ).fetchone()
                record = None if row is None else dict(zip(_FIELDS, row, strict=True))
                if takeable(record, owner, now):
                    db.execute(
                        "INSERT OR REPLACE INTO leases VALUES (?, ?, ?, ?, ?)",
                        (key, owner["id"], owner["host"], owner["pid"], now + seconds),
                    )
                    claimed.add(key)
        return claimed

    def renew(self, keys: Iterable[str], owner: dict, seconds: float) -> None:
        """Extend ``owner``'s leases of ``keys`` to ``seconds`` s from now."""
        with self._transaction() as db:
            db.executemany(
                "UPDATE leases SET expires = ? WHERE key = ? AND owner = ?",
                [(time.time() + seconds, key, owner["id"]) for key in keys],
            )

    def release(self, keys: Iterable[str], owner_id: str) -> None:
        """Delete the leases of ``keys`` held by ``owner_id``."""
        with self._transaction() as db:
            db.executemany(
                "DELETE FROM leases WHERE key = ? AND owner = ?", [(k, owner_id) for k in keys]
            )


class MongoLeases:
    """Leases in a MongoDB (or mongomock) collection, ``_id`` = key."""

    def __init__(self, collection):
        self.collection = collection

    def holders(self, keys: Iterable[str]) -> dict[str, dict]:
        found = self.collection.find({"_id": {"$in": list(keys)}})
        return {doc["_id"]: doc | {"key": doc["_id"]} for doc in found}

    def claim(self, keys: Iterable[str], owner: dict, seconds: float) -> set[str]:
        from pymongo.errors import DuplicateKeyError

        claimed, now = set(), time.time()
        lease = dict(owner=owner["id"], host=owner["host"], pid=owner["pid"])
        for key in keys:
            record = self.collection.find_one({"_id": key})
            if not takeable(record, owner, now):
                continue
            if record is None:
                try:
                    self.collection.insert_one({"_id": key, **lease, "expires": now + seconds})
                except DuplicateKeyError:  # another run claimed it first
                    continue
                claimed.add(key)
                continue
            current = {"_id": key, "owner": record["owner"], "expires": record["expires"]}
            result = self.collection.update_one(
                current, {"$set": lease | {"expires": now + seconds}}
            )
            if result.matched_count == 1:
                claimed.add(key)
        return claimed

    def renew(self, keys: Iterable[str], owner: dict, seconds: float) -> None:
        self.collection.update_many(
            {"_id": {"$in": list(keys)}, "owner": owner["id"]},
            {"$set": {"expires": time.time() + seconds}},
        )

    def release(self, keys: Iterable[str], owner_id: str) -> None:
        self.collection.delete_many({"_id": {"$in": list(keys)}, "owner": owner_id})


class NoLeases:
    """A store without leases: every claim succeeds (concurrent runs may duplicate work)."""

    def holders(self, keys: Iterable[str]) -> dict[str, dict]:
        return {}

    def claim(self, keys: Iterable[str], owner: dict, seconds: float) -> set[str]:
        return set(keys)

    def renew(self, keys: Iterable[str], owner: dict, seconds: float) -> None:
        return None

    def release(self, keys: Iterable[str], owner_id: str) -> None:
        return None


def lease_book(store) -> SQLiteLeases | MongoLeases | NoLeases:
    """The leases of a JobStore (or maggma Store), kept next to its documents (see the module
    docstring); ``None`` gives :class:`NoLeases`."""
    from maggma.stores import MongoStore, MontyStore

    docs = getattr(store, "docs_store", store)
    if isinstance(docs, MontyStore):
        return SQLiteLeases(Path(docs.database_path) / LEASE_FILE)
    if isinstance(docs, MongoStore):  # MongoDB, and maggma's MemoryStore (mongomock)
        docs.connect()
        return MongoLeases(docs._collection.database[LEASE_COLLECTION])
    if store is not None:
        logger.info("%s has no leases: concurrent runs may compute the same structures",
                    type(docs).__name__)  # fmt: skip
    return NoLeases()


@contextmanager
def renewing(book, keys: Iterable[str], owner: dict, seconds: float) -> Iterator[None]:
    """Renew ``owner``'s leases of ``keys`` every ``seconds / 4`` s while the block runs."""
    keys, stop = list(keys), threading.Event()

    def beat() -> None:
        while not stop.wait(seconds / 4):
            try:
                book.renew(keys, owner, seconds)
            except Exception as error:  # a missed renewal only risks duplicated work
                logger.warning("could not renew %d leases: %s", len(keys), error)

    thread = threading.Thread(target=beat, name="gptff-lease", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


POLL_SECONDS = 5.0
"""s between two looks at structures another run is computing."""


def pause(seconds: float) -> None:
    """Wait ``seconds`` s (a function of its own, so tests can replace it)."""
    time.sleep(seconds)


def share_work(
    keys: Iterable[str],
    compute,
    lookup,
    book,
    owner: dict,
    seconds: float = LEASE_SECONDS,
    poll: float = POLL_SECONDS,
) -> tuple[list, dict[str, dict]]:
    """Compute every key once across concurrent runs: claim what is free, skip what is stored,
    wait for what another run holds (taking it over if its lease runs out).

    Args:
        keys: resume keys of the structures of one chunk.
        compute: ``compute(keys) -> documents`` of the claimed keys.
        lookup: ``lookup(keys) -> {key: record}`` of the keys already in the store.
        book: the store's leases (:func:`lease_book`).
        owner: this run (:func:`new_owner`).
        seconds: s, lease duration (renewed every ``seconds / 4`` while computing).
        poll: s between two looks at keys held by another run.

    Returns:
        ``(documents computed here, {key: record} found stored)``. The leases of the computed
        keys stay held (until the analysis releases them once their chunk is stored); on an
        exception every lease taken here is released.
    """
    pending = list(dict.fromkeys(keys))
    documents: list = []
    found_all: dict[str, dict] = {}
    held: set[str] = set()
    try:
        while pending:
            claimed = book.claim(pending, owner, seconds)
            held |= claimed
            found = lookup(set(pending))  # after claiming: nothing stored can be missed
            found_all |= found
            book.release([k for k in claimed if k in found], owner["id"])
            held -= set(found)
            work = [k for k in pending if k in claimed and k not in found]
            if work:
                with renewing(book, work, owner, seconds):
                    documents += compute(work)
                book.renew(work, owner, seconds)
            waiting = [k for k in pending if k not in claimed and k not in found]
            if waiting and not work:
                _log_waiting(book, waiting)
                pause(poll)
            pending = waiting
    except BaseException:
        book.release(held, owner["id"])
        raise
    return documents, found_all


def _log_waiting(book, keys: list[str]) -> None:
    holders = {r.get("owner") for r in book.holders(keys).values()}
    logger.info(
        "waiting for %d structure(s) another run is computing (%s)",
        len(keys), ", ".join(sorted(h for h in holders if h)) or "lease just released",
    )  # fmt: skip
