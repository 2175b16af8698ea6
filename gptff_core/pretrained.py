"""Registry of the published GPTFF checkpoints: locate, verify (sha256), download, load.

The two checkpoints are the files ``pretrained/gptff_v1.pth`` and ``pretrained/gptff_v2.pth``
of the upstream GPTFF repository at commit 320c24d (GPLv3). A registry name is resolved by
looking, in order, in ``$GPTFF_MODEL_DIR``, in :func:`cache_dir` and finally by downloading
into the cache. Every file found or downloaded under a registry name is checked against its
published sha256. Any file, a user's own checkpoint passed as a path included, is checked on load
against the CRC-32 of each member of its zip archive (:func:`check_archive`).
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import tempfile
import urllib.request
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from gptff_core.errors import CheckpointError

logger = logging.getLogger(__name__)

model_dir_env = "GPTFF_MODEL_DIR"
DEFAULT_MODEL = "gptff-v2"
_CHUNK = 1 << 20  # bytes read per step when hashing or downloading
_UPSTREAM = (
    "https://github.com/atomly-materials-research-lab/GPTFF/raw/"
    "320c24d3ce18f84e7114b34f163c629c0a20ad43/pretrained/"
)


@dataclass(frozen=True)
class PretrainedModel:
    """One published checkpoint: registry name, file name, sha256 (hex) and download url."""

    name: str
    filename: str
    sha256: str
    url: str
    description: str


PRETRAINED_MODELS: dict[str, PretrainedModel] = {
    "gptff-v1": PretrainedModel(
        "gptff-v1",
        "gptff_v1.pth",
        "fb798e5fa2fd6c159231d9c2ae23eb9b912ccc927eb8b9f34d473adc4b784323",
        _UPSTREAM + "gptff_v1.pth",
        "first release: 351,745 parameters, no transformer layer",
    ),
    "gptff-v2": PretrainedModel(
        "gptff-v2",
        "gptff_v2.pth",
        "549e862d93b8fbc0ad052162bad90492040c68c196480427ae8266209a077900",
        _UPSTREAM + "gptff_v2.pth",
        "the paper's model: 502,465 parameters, with transformer (default)",
    ),
}

# (resolved path, inode, size in bytes, mtime in ns) -> sha256 hex of the file's content
_sha_cache: dict[tuple[str, int, int, int], str] = {}


def cache_dir() -> Path:
    """Download cache: ``$XDG_CACHE_HOME/gptff``, else ``~/.cache/gptff``."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "gptff"


def sha256_of(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's content, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def cached_sha256(path: Path) -> str:
    """:func:`sha256_of`, memoised in-process on (path, inode, size, mtime)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _sha_cache:
        _sha_cache[key] = sha256_of(path)
    return _sha_cache[key]


def verify_checkpoint(path: str | os.PathLike, expected_sha256: str) -> None:
    """Raise :class:`CheckpointError` unless the file's sha256 equals ``expected_sha256``."""
    path = Path(path)
    try:
        actual = cached_sha256(path)
    except OSError as exc:
        raise CheckpointError(f"Cannot read checkpoint {path}: {exc}") from exc
    if actual != expected_sha256.lower():
        raise CheckpointError(
            f"Checkpoint {path} is corrupted or has been modified: its sha256 is {actual} "
            f"but {expected_sha256} was expected. Delete the file and fetch it again "
            f"(or point {model_dir_env} at a directory holding an intact copy)."
        )


def _unknown_model(name: str) -> CheckpointError:
    known = ", ".join(PRETRAINED_MODELS)
    return CheckpointError(
        f"Unknown pretrained model {name!r}; known models: {known}. "
        "To use your own checkpoint, pass the path to its .pth file."
    )


def _lookup(name: str) -> PretrainedModel:
    """Registry entry for ``name`` (case-insensitive) or a CheckpointError listing the names."""
    entry = PRETRAINED_MODELS.get(name.strip().lower())
    if entry is None:
        raise _unknown_model(name)
    return entry


def _search_dirs() -> list[Path]:
    """Directories searched for registry files: ``$GPTFF_MODEL_DIR`` (if set), then the cache."""
    dirs = [Path(d).expanduser()] if (d := os.environ.get(model_dir_env)) else []
    return [*dirs, cache_dir()]


def _locate(entry: PretrainedModel) -> Path | None:
    """First existing ``<dir>/<filename>`` among :func:`_search_dirs`, unverified."""
    return next((p for d in _search_dirs() if (p := d / entry.filename).is_file()), None)


def _not_available(entry: PretrainedModel, reason: str) -> CheckpointError:
    searched = ", ".join(str(d) for d in _search_dirs())
    return CheckpointError(
        f"Pretrained model {entry.name!r} ({entry.filename}) is not available: {reason}. "
        f"Searched: {searched}. Set {model_dir_env} to a directory containing "
        f"{entry.filename} (it can be downloaded by hand from {entry.url}; "
        f"sha256 {entry.sha256})."
    )


def _looks_like_path(text: str) -> bool:
    seps = {os.sep, "/"} | ({os.altsep} if os.altsep else set())
    return any(s in text for s in seps) or text.lower().endswith((".pth", ".pt"))


def resolve_checkpoint(model: str | os.PathLike = DEFAULT_MODEL, *, download: bool = True) -> Path:
    """Path of a checkpoint file given a registry name or a path.

    A registry name (case-insensitive, e.g. ``"gptff-v2"``) is looked up in
    ``$GPTFF_MODEL_DIR``, then in :func:`cache_dir`, then downloaded into the cache when
    ``download`` is true; the file is always sha256-verified. Anything else is taken as a
    path to an existing file and returned without a sha256 check (e.g. a fine-tuned checkpoint;
    :func:`load_checkpoint_file` checks its zip CRCs, the loader its weights); write
    ``./gptff-v2`` to mean a file that happens to carry a registry name.
    """
    if isinstance(model, str) and model.strip().lower() in PRETRAINED_MODELS:
        entry = _lookup(model)
        found = _locate(entry)
        if found is not None:
            verify_checkpoint(found, entry.sha256)
            logger.debug("using %s for %s", found, entry.name)
            return found
        if not download:
            raise _not_available(entry, "it was not found and downloading is disabled")
        return download_checkpoint(entry.name)
    path = Path(model).expanduser()
    if path.is_file():
        return path
    if isinstance(model, os.PathLike) or _looks_like_path(model):
        hint = "".join(
            f" (did you mean the registry name {m.name!r}?)"
            for m in PRETRAINED_MODELS.values()
            if path.name == m.filename
        )
        what = "is not a file" if path.exists() else "does not exist"
        raise CheckpointError(f"Checkpoint file {path} {what}{hint}.")
    raise _unknown_model(model)


def _open_url(url: str, timeout: float) -> IO[bytes]:
    """Open ``url`` for reading (the single network entry point; tests replace it)."""
    return urllib.request.urlopen(url, timeout=timeout)


def _stream_to(fh: IO[bytes], url: str, timeout: float) -> str:
    """Copy ``url`` into the open file ``fh``; return the sha256 of the bytes written."""
    digest = hashlib.sha256()
    with _open_url(url, timeout) as response:
        while chunk := response.read(_CHUNK):
            digest.update(chunk)
            fh.write(chunk)
    return digest.hexdigest()


def download_checkpoint(
    name: str, *, dest_dir: Path | None = None, force: bool = False, timeout: float = 60.0
) -> Path:
    """Download a registry checkpoint into ``dest_dir`` (default :func:`cache_dir`).

    The bytes go to a temporary file in ``dest_dir``, are hashed while streaming and are
    moved into place with :func:`os.replace` only when the sha256 matches, so the final path
    never holds a partial or wrong file. An existing verified file is kept unless ``force``.
    ``timeout`` is the socket timeout in seconds.
    """
    entry = _lookup(name)
    dest_dir = Path(dest_dir) if dest_dir is not None else cache_dir()
    final = dest_dir / entry.filename
    if final.is_file() and not force:
        try:
            verify_checkpoint(final, entry.sha256)
            return final
        except CheckpointError:
            logger.warning("replacing corrupted %s", final)
    logger.info("downloading %s from %s to %s", entry.name, entry.url, final)
    tmp_name: str | None = None
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            dir=dest_dir, prefix=f".{entry.filename}.", suffix=".part", delete=False
        ) as fh:
            tmp_name = fh.name
            actual = _stream_to(fh, entry.url, timeout)
        if actual != entry.sha256:
            raise CheckpointError(
                f"Downloaded {entry.filename} from {entry.url} has sha256 {actual} but "
                f"{entry.sha256} was expected; the file was discarded. Retry, or set "
                f"{model_dir_env} to a directory containing a verified {entry.filename}."
            )
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, final)
        tmp_name = None
    except (OSError, http.client.HTTPException) as exc:
        raise _not_available(entry, f"download from {entry.url} failed ({exc})") from exc
    finally:
        if tmp_name is not None:
            Path(tmp_name).unlink(missing_ok=True)
    verify_checkpoint(final, entry.sha256)  # also primes the in-process hash cache
    return final


def list_models() -> list[dict[str, Any]]:
    """Registry entries with where each file was found and its status, never downloading.

    ``status`` is ``"ok"``, ``"missing"`` or ``"corrupt (sha256 <actual>)"``; ``path`` is the
    file found (str) or None.
    """
    rows = []
    for entry in PRETRAINED_MODELS.values():
        found = _locate(entry)
        status = "missing"
        if found is not None:
            try:
                actual = cached_sha256(found)
                status = "ok" if actual == entry.sha256 else f"corrupt (sha256 {actual})"
            except OSError as exc:
                status = f"unreadable ({exc})"
        path = None if found is None else str(found)
        rows.append({**asdict(entry), "path": path, "status": status})
    return rows


def fetch_models(names: Iterable[str] | None = None, force: bool = False) -> list[Path]:
    """Make the named models (default: all) available; return their verified paths.

    A verified copy in ``$GPTFF_MODEL_DIR`` or the cache is reused unless ``force``; otherwise
    the file is downloaded into the cache (a corrupted cached copy is replaced, a corrupted
    copy in ``$GPTFF_MODEL_DIR`` raises :class:`CheckpointError`).
    """
    paths = []
    for name in PRETRAINED_MODELS if names is None else names:
        entry = _lookup(name)
        found = None if force else _locate(entry)
        if found is not None and found.parent != cache_dir():
            verify_checkpoint(found, entry.sha256)
            paths.append(found)
        else:
            paths.append(download_checkpoint(entry.name, force=force))
    return paths


def check_archive(path: str | os.PathLike, what: str = "Checkpoint") -> None:
    """Refuse a torch zip file whose members do not match their stored CRC-32.

    ``torch.save`` writes a zip archive with a CRC-32 per member (the pickle and one member per
    tensor storage) but ``torch.load`` never checks them, so a flipped bit in the weights would
    load silently. The check reads the file once more (a few ms for the 2 MB of gptff-v2). A
    file that is not a zip archive (torch's legacy format, or garbage) is left to ``torch.load``.

    Raises:
        CheckpointError: a member is damaged (named) or the archive's headers are unreadable.
    """
    path = Path(path)
    if not zipfile.is_zipfile(path):
        return
    advice = (
        "Replace the file with an intact copy (copy or download it again, or rerun the training "
        "that wrote it)."
    )
    try:
        damaged = _damaged_member(path)
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error, NotImplementedError) as exc:
        raise CheckpointError(
            f"{what} {path} is damaged: its zip archive cannot be read ({exc}). {advice}"
        ) from exc
    if damaged is not None:
        raise CheckpointError(
            f"{what} {path} is damaged: the contents of its member {damaged!r} do not match the "
            f"CRC-32 stored in the file (a changed byte, e.g. a flipped bit). {advice}"
        )


def _damaged_member(path: Path) -> str | None:
    """The first member of the zip file whose bytes do not match its CRC-32, or None
    (:meth:`zipfile.ZipFile.testzip`)."""
    with zipfile.ZipFile(path) as archive:
        return archive.testzip()


def load_checkpoint_file(path: str | os.PathLike) -> dict:
    """``torch.load`` a checkpoint on the CPU with ``weights_only=True`` (no pickled code),
    after checking the CRC-32 of every member of its zip archive (:func:`check_archive`)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint file {path} does not exist.")
    check_archive(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for bad zips, pickles, short files
        raise CheckpointError(
            f"Checkpoint {path} is corrupted or not a torch checkpoint "
            f"(torch.load with weights_only=True failed: {type(exc).__name__}: {exc})."
        ) from exc
    if not isinstance(obj, dict):
        raise CheckpointError(
            f"Checkpoint {path} holds a {type(obj).__name__}, not a dict; "
            "expected a dict with 'state_dict' and 'cfg'."
        )
    return obj
