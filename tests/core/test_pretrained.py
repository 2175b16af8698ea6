"""Tests of the pretrained-checkpoint registry: resolution, sha256 checks, downloads, loading.

No test touches the network: ``pretrained._open_url`` is replaced in every test, and the real
checkpoints come from ``$GPTFF_MODEL_DIR`` (as set when the tests start) or ../shared/models.
"""

from __future__ import annotations

import io
import os
import shutil
import urllib.error
from pathlib import Path

import pytest
import torch

from gptff_core import pretrained
from gptff_core.errors import CheckpointError, GPTFFInputError

REAL_DIR = Path(
    os.environ.get(pretrained.model_dir_env) or Path(__file__).parents[2] / "../shared/models"
).resolve()
V1, V2 = pretrained.PRETRAINED_MODELS["gptff-v1"], pretrained.PRETRAINED_MODELS["gptff-v2"]


def real_file(entry: pretrained.PretrainedModel) -> Path:
    path = REAL_DIR / entry.filename
    if not path.is_file():
        pytest.skip(f"real checkpoint {path} not available")
    return path


def copy_real(entry: pretrained.PretrainedModel, dest_dir: Path) -> Path:
    dest_dir.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copyfile(real_file(entry), dest_dir / entry.filename))


class FakeNet:
    """Stands in for ``_open_url``: serves fixed bytes or raises, and records the urls asked."""

    def __init__(self, payload: bytes | Exception) -> None:
        self.payload = payload
        self.urls: list[str] = []

    def __call__(self, url: str, timeout: float) -> io.BytesIO:
        self.urls.append(url)
        if isinstance(self.payload, Exception):
            raise self.payload
        return io.BytesIO(self.payload)


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Empty cache under tmp_path, no GPTFF_MODEL_DIR, network that fails loudly if used."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv(pretrained.model_dir_env, raising=False)

    def no_network(url: str, timeout: float):
        raise AssertionError(f"test tried to reach the network: {url}")

    monkeypatch.setattr(pretrained, "_open_url", no_network)
    monkeypatch.setattr(pretrained, "_sha_cache", {})


@pytest.fixture
def model_dir(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "models"
    path.mkdir()
    monkeypatch.setenv(pretrained.model_dir_env, str(path))
    return path


def flip_byte(path: Path, offset: int = 1000) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


# ---------------------------------------------------------------- registry and hashing


def test_registry_entries():
    assert pretrained.DEFAULT_MODEL == "gptff-v2"
    assert set(pretrained.PRETRAINED_MODELS) == {"gptff-v1", "gptff-v2"}
    for name, entry in pretrained.PRETRAINED_MODELS.items():
        assert entry.name == name
        assert entry.url.endswith("/pretrained/" + entry.filename)
        assert "320c24d3ce18f84e7114b34f163c629c0a20ad43" in entry.url
        assert len(entry.sha256) == 64
    assert issubclass(CheckpointError, GPTFFInputError)


def test_cache_dir(tmp_path, monkeypatch):
    assert pretrained.cache_dir() == tmp_path / "xdg" / "gptff"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert pretrained.cache_dir() == tmp_path / "home" / ".cache" / "gptff"


def test_sha256_of_small_file(tmp_path):
    path = tmp_path / "x.bin"
    path.write_bytes(b"abc")
    expected = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert pretrained.sha256_of(path) == expected


@pytest.mark.parametrize("entry", [V1, V2], ids=["v1", "v2"])
def test_real_files_have_published_hash(entry):
    path = real_file(entry)
    assert pretrained.sha256_of(path) == entry.sha256
    pretrained.verify_checkpoint(path, entry.sha256)


def test_verification_is_cached_until_file_changes(tmp_path, monkeypatch):
    path = tmp_path / "f.bin"
    path.write_bytes(b"one")
    calls = []
    real_sha = pretrained.sha256_of
    monkeypatch.setattr(pretrained, "sha256_of", lambda p: calls.append(p) or real_sha(p))
    digest = real_sha(path)
    for _ in range(3):
        pretrained.verify_checkpoint(path, digest)
    assert len(calls) == 1
    path.write_bytes(b"two, longer")
    with pytest.raises(CheckpointError):
        pretrained.verify_checkpoint(path, digest)
    assert len(calls) == 2


# ---------------------------------------------------------------- resolution order


def test_explicit_path_wins_and_is_not_hash_checked(tmp_path, model_dir):
    copy_real(V2, model_dir)
    mine = tmp_path / "finetuned.pth"
    mine.write_bytes(b"not the published file")
    assert pretrained.resolve_checkpoint(mine) == mine
    assert pretrained.resolve_checkpoint(str(mine)) == mine


def test_explicit_missing_path_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match="does not exist"):
        pretrained.resolve_checkpoint(tmp_path / "nope.pth")
    with pytest.raises(CheckpointError, match="does not exist"):
        pretrained.resolve_checkpoint(str(tmp_path / "sub" / "model"))
    with pytest.raises(CheckpointError, match="did you mean the registry name 'gptff-v2'"):
        pretrained.resolve_checkpoint("gptff_v2.pth")
    with pytest.raises(CheckpointError, match="is not a file"):
        pretrained.resolve_checkpoint(tmp_path)


def test_model_dir_wins_over_cache(model_dir):
    in_env = copy_real(V2, model_dir)
    copy_real(V2, pretrained.cache_dir())
    assert pretrained.resolve_checkpoint("gptff-v2") == in_env
    assert pretrained.resolve_checkpoint() == in_env  # default model
    assert pretrained.resolve_checkpoint("  GPTFF-V2 ") == in_env  # case-insensitive


def test_cache_used_when_model_dir_lacks_file(model_dir):
    cached = copy_real(V1, pretrained.cache_dir())
    assert pretrained.resolve_checkpoint("gptff-v1") == cached


def test_download_when_nowhere_else(monkeypatch):
    net = FakeNet(real_file(V2).read_bytes())
    monkeypatch.setattr(pretrained, "_open_url", net)
    path = pretrained.resolve_checkpoint("gptff-v2")
    assert path == pretrained.cache_dir() / V2.filename
    assert pretrained.sha256_of(path) == V2.sha256
    assert net.urls == [V2.url]
    assert sorted(os.listdir(path.parent)) == [V2.filename]  # no temp file left
    assert pretrained.resolve_checkpoint("gptff-v2") == path
    assert len(net.urls) == 1  # second call served from the cache


# ---------------------------------------------------------------- refusals


def test_tampered_file_in_model_dir_is_refused(model_dir):
    path = copy_real(V2, model_dir)
    flip_byte(path)
    actual = pretrained.sha256_of(path)
    with pytest.raises(CheckpointError) as info:
        pretrained.resolve_checkpoint("gptff-v2")
    message = str(info.value)
    assert V2.sha256 in message and actual in message and str(path) in message


def test_tampered_file_in_cache_is_refused():
    path = copy_real(V1, pretrained.cache_dir())
    flip_byte(path, offset=10)
    with pytest.raises(CheckpointError, match=V1.sha256):
        pretrained.resolve_checkpoint("gptff-v1")


def test_unknown_model_name_lists_known_names():
    with pytest.raises(CheckpointError, match="gptff-v1, gptff-v2") as info:
        pretrained.resolve_checkpoint("gptff-v3")
    assert "'gptff-v3'" in str(info.value)


def test_no_download_gives_model_dir_advice():
    with pytest.raises(CheckpointError) as info:
        pretrained.resolve_checkpoint("gptff-v2", download=False)
    message = str(info.value)
    assert "GPTFF_MODEL_DIR" in message and V2.filename in message and V2.url in message


# ---------------------------------------------------------------- downloads


def test_download_wrong_bytes_leaves_nothing(tmp_path, monkeypatch):
    net = FakeNet(b"an html error page, not a checkpoint")
    monkeypatch.setattr(pretrained, "_open_url", net)
    dest = tmp_path / "dest"
    with pytest.raises(CheckpointError, match=V2.sha256):
        pretrained.download_checkpoint("gptff-v2", dest_dir=dest)
    assert os.listdir(dest) == []


def test_download_network_error_gives_model_dir_advice(monkeypatch):
    monkeypatch.setattr(pretrained, "_open_url", FakeNet(urllib.error.URLError("offline")))
    with pytest.raises(CheckpointError, match="GPTFF_MODEL_DIR") as info:
        pretrained.resolve_checkpoint("gptff-v1")
    assert "offline" in str(info.value) and V1.url in str(info.value)
    assert os.listdir(pretrained.cache_dir()) == []


def test_download_interrupted_midstream_leaves_nothing(tmp_path, monkeypatch):
    class Broken(io.BytesIO):
        def read(self, size=-1):
            if self.tell():
                raise ConnectionResetError("connection reset")
            return super().read(10)

    monkeypatch.setattr(pretrained, "_open_url", lambda url, timeout: Broken(b"x" * 100))
    with pytest.raises(CheckpointError, match="connection reset"):
        pretrained.download_checkpoint("gptff-v1", dest_dir=tmp_path)
    assert os.listdir(tmp_path) == []


def test_download_keeps_verified_file_unless_forced(tmp_path, monkeypatch):
    existing = copy_real(V1, tmp_path)
    assert pretrained.download_checkpoint("gptff-v1", dest_dir=tmp_path) == existing
    net = FakeNet(existing.read_bytes())
    monkeypatch.setattr(pretrained, "_open_url", net)
    pretrained.download_checkpoint("gptff-v1", dest_dir=tmp_path, force=True)
    assert net.urls == [V1.url]
    assert sorted(os.listdir(tmp_path)) == [V1.filename]


def test_download_replaces_corrupted_file(tmp_path, monkeypatch):
    path = copy_real(V1, tmp_path)
    good = path.read_bytes()
    flip_byte(path)
    monkeypatch.setattr(pretrained, "_open_url", FakeNet(good))
    assert pretrained.download_checkpoint("gptff-v1", dest_dir=tmp_path) == path
    assert pretrained.sha256_of(path) == V1.sha256


def test_fetch_models(model_dir, monkeypatch):
    in_env = copy_real(V1, model_dir)
    net = FakeNet(real_file(V2).read_bytes())
    monkeypatch.setattr(pretrained, "_open_url", net)
    paths = pretrained.fetch_models()
    assert paths == [in_env, pretrained.cache_dir() / V2.filename]
    assert net.urls == [V2.url]
    assert pretrained.fetch_models(["GPTFF-V2"]) == [paths[1]]
    assert len(net.urls) == 1


def test_list_models_statuses(model_dir):
    flip_byte(copy_real(V2, model_dir))
    rows = {row["name"]: row for row in pretrained.list_models()}
    assert rows["gptff-v1"]["status"] == "missing" and rows["gptff-v1"]["path"] is None
    assert rows["gptff-v2"]["status"].startswith("corrupt (sha256 ")
    assert rows["gptff-v2"]["path"] == str(model_dir / V2.filename)
    cached = copy_real(V1, pretrained.cache_dir())
    rows = {row["name"]: row for row in pretrained.list_models()}
    assert rows["gptff-v1"] | {"description": ""} == {
        "name": "gptff-v1",
        "filename": V1.filename,
        "sha256": V1.sha256,
        "url": V1.url,
        "description": "",
        "path": str(cached),
        "status": "ok",
    }


# ---------------------------------------------------------------- loading


def test_load_real_v2_checkpoint():
    ckpt = pretrained.load_checkpoint_file(real_file(V2))
    assert {"state_dict", "cfg"} <= set(ckpt)
    assert ckpt["cfg"]["transformer_activate"] is True
    n_params = sum(t.numel() for t in ckpt["state_dict"].values())
    assert n_params == 502_465  # every state_dict entry is a parameter


def test_load_truncated_file_is_refused(tmp_path):
    path = tmp_path / "truncated.pth"
    path.write_bytes(real_file(V2).read_bytes()[:50_000])
    with pytest.raises(CheckpointError, match="corrupted or not a torch checkpoint"):
        pretrained.load_checkpoint_file(path)


def test_load_garbage_and_missing_files_are_refused(tmp_path):
    path = tmp_path / "garbage.pth"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError, match=str(path)):
        pretrained.load_checkpoint_file(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        pretrained.load_checkpoint_file(tmp_path / "absent.pth")


class _Payload:
    """An arbitrary class: weights_only=True must refuse to unpickle it."""


def test_load_refuses_pickled_objects_and_non_dicts(tmp_path):
    pickled = tmp_path / "object.pth"
    torch.save({"state_dict": {}, "obj": _Payload()}, pickled)
    with pytest.raises(CheckpointError, match="weights_only"):
        pretrained.load_checkpoint_file(pickled)
    tensor = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), tensor)
    with pytest.raises(CheckpointError, match="not a dict"):
        pretrained.load_checkpoint_file(tensor)
