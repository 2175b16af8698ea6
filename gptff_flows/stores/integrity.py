"""Integrity of the embedded store: a checksum on every document, and one clear error for a
store that cannot be read as written.

montydb keeps each document as a BSON blob in an SQLite table. A changed bit can change a number
(a float's bytes) or a name, make a blob undecodable (``InvalidBSON``, bad UTF-8) or damage
SQLite's own pages (``sqlite3.DatabaseError``). :func:`seal` adds to each document the sha256 of
the BSON encoding of the rest of it (field :data:`CHECKSUM_FIELD`); :class:`DocumentChecks`
makes a montydb client verify every document it decodes, before montydb filters them, so a
damaged document is refused even by a query it would not match. BSON keeps the order of the
fields and every value a document written through jsanitize can hold (a datetime is stored to the
millisecond: the checksum is of what is stored), so the re-encoded document read back has the
bytes it was written with. :func:`store_failure` turns SQLite, BSON and montydb errors into one
line that says what to do.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import bson

from gptff_core.errors import StoreError

SQLITE_BUSY_TIMEOUT_MS = 60_000
"""How long a writer waits for another process's SQLite write lock before failing."""
CHECKSUM_FIELD = "_gptff_sha256"
"""Field of each embedded document holding the sha256 (hex) of the rest of it, BSON-encoded."""
_TO_DO = "restore it from a backup, or use another --store (a new directory starts an empty store)"


def redact_uri(uri: str) -> str:
    """``uri`` with any password replaced by ``***`` (``user:secret@host`` → ``user:***@host``)."""
    return re.sub(r"(://[^:/@\s]+:)[^@\s]*@", r"\1***@", uri)


def one_line(exc: BaseException, limit: int = 200) -> str:
    """``exc`` as one line of at most ``limit`` characters, credentials redacted."""
    text = " ".join(redact_uri(str(exc)).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def damaged(where: str | os.PathLike, detail: str) -> StoreError:
    """The error for a store that cannot be read as written: says what to do."""
    return StoreError(f"the store at {where} is damaged ({detail}); {_TO_DO}")


def store_failure(exc: BaseException, where: str | os.PathLike, action: str) -> Exception:
    """``exc`` raised by SQLite, BSON or montydb while ``action`` as one clear exception: a
    :class:`StoreError` (locked, not writable, damaged) or an ``OSError`` ENOSPC (disk full)."""
    if isinstance(exc, StoreError):
        return exc
    text = one_line(exc)
    low = text.lower()
    if isinstance(exc, sqlite3.OperationalError) and ("locked" in low or "busy" in low):
        return StoreError(
            f"the store at {where} stayed locked by another process for "
            f"{SQLITE_BUSY_TIMEOUT_MS / 1000:g} s while {action}; retry when that run has ended"
        )
    if "disk is full" in low:
        return OSError(errno.ENOSPC, f"no space left for the store at {where} ({text})")
    if isinstance(exc, PermissionError) or any(
        word in low for word in ("readonly", "read-only", "unable to open", "permission")
    ):
        return StoreError(
            f"cannot use the store at {where} ({text}) while {action}; check its permissions, "
            "or use another --store"
        )
    return damaged(where, f"{action}: {type(exc).__name__}: {text}")


DATABASE_ERRORS = (sqlite3.Error, bson.errors.InvalidBSON, PermissionError)


def _checksum(content: dict) -> str:
    return hashlib.sha256(bson.encode(content)).hexdigest()


def seal(doc: dict) -> dict:
    """``doc`` (BSON-ready) with :data:`CHECKSUM_FIELD` set over every field but ``_id``."""
    content = {k: v for k, v in doc.items() if k not in ("_id", CHECKSUM_FIELD)}
    return {**doc, CHECKSUM_FIELD: _checksum(content)}


def verify(doc: dict, where: str | os.PathLike) -> dict:
    """``doc`` as read, without its checksum; :class:`StoreError` if it does not match."""
    stored = doc.pop(CHECKSUM_FIELD, None)
    if stored is None:  # written before checksums
        return doc
    if stored != _checksum({k: v for k, v in doc.items() if k != "_id"}):
        name = doc.get("uuid") or doc.get("blob_uuid") or doc.get("_id")
        raise damaged(where, f"document {name} does not match its checksum")
    return doc


def _verified(documents: Iterator[dict], where: Path, check: bool) -> Iterator[dict]:
    iterator = iter(documents)
    while True:
        try:
            doc = next(iterator)
        except StopIteration:
            return
        except Exception as exc:  # undecodable BSON: InvalidBSON, UnicodeDecodeError, ...
            raise store_failure(exc, where, "reading") from exc
        if check:
            yield verify(doc, where)
        else:
            doc.pop(CHECKSUM_FIELD, None)
            yield doc


class DocumentChecks:
    """Makes a montydb client verify each document its storage decodes (montydb filters, sorts
    and projects afterwards, so a document a query would skip is checked as well).

    ``with checks.paused():`` skips the verification (not the decoding errors) while a write
    scans the collection for the document it replaces: every read verifies anyway, and the scan
    would otherwise double the cost of each write.
    """

    def __init__(self, client, collection_file: Path):
        self.collection_file, self.active = collection_file, True
        storage = client._storage
        self._read = storage.query  # montydb: (cursor, max_scan) -> decoded documents
        storage.query = self._checked_read

    def _checked_read(self, cursor, max_scan):
        if not self.collection_file.is_file():
            raise damaged(self.collection_file.parents[1], f"{self.collection_file} is missing")
        try:
            documents = self._read(cursor, max_scan)
        except Exception as exc:
            raise store_failure(exc, self.collection_file, "reading") from exc
        return _verified(documents, self.collection_file, self.active)

    @contextmanager
    def paused(self):
        self.active = False
        try:
            yield
        finally:
            self.active = True
