"""gptff_flows.stores: the embedded store survives reopening from another process, several
processes writing at once lose nothing, locations resolve, credentials never show."""

import json
import multiprocessing
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("jobflow")
pytest.importorskip("montydb")

from gptff_core.errors import StoreError
from gptff_flows import stores
from gptff_flows.stores import (
    CHECKSUM_FIELD,
    describe_store,
    local_job_store,
    open_job_store,
    redact_uri,
)

WRITERS = 4
DOCS_PER_WRITER = 25


def _job_doc(tag: str, i: int) -> dict:
    """A jobflow-shaped output document with a large array destined for the "data" store."""
    return {
        "uuid": f"{tag}-{i}",
        "index": 1,
        "name": f"writer {tag}",
        "output": {"value": i, "trajectory": list(range(200))},
        "metadata": {"writer": tag},
        "completed_at": "2026-01-01T00:00:00",
    }


def _write_many(directory: str, tag: str, barrier) -> None:
    """Open the store (possibly creating it) as soon as every writer is ready, then write."""
    barrier.wait()
    store = local_job_store(directory)
    store.connect()
    for i in range(DOCS_PER_WRITER):
        store.update(_job_doc(tag, i), save={"data": ["trajectory"]})
    store.close()


def test_concurrent_writers_lose_nothing(tmp_path):
    """Several processes create the same new store and write to it at the same moment."""
    directory = str(tmp_path / "store")
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(WRITERS)
    writers = [
        context.Process(target=_write_many, args=(directory, f"w{k}", barrier))
        for k in range(WRITERS)
    ]
    for process in writers:
        process.start()
    for process in writers:
        process.join(timeout=120)
    assert [p.exitcode for p in writers] == [0] * WRITERS

    store = local_job_store(directory)
    store.connect()
    uuids = {d["uuid"] for d in store.query({}, properties=["uuid"], load=False)}
    expected = {f"w{k}-{i}" for k in range(WRITERS) for i in range(DOCS_PER_WRITER)}
    assert uuids == expected
    assert store.additional_stores["data"].count() == WRITERS * DOCS_PER_WRITER
    loaded = store.query_one({"uuid": "w3-7"}, load=True)
    assert loaded["output"]["trajectory"] == list(range(200))


def test_store_survives_reopen_from_another_process(tmp_path):
    """A document written here is read by a fresh interpreter, and the reverse."""
    directory = tmp_path / "store"
    store = local_job_store(directory)
    store.connect()
    store.update(_job_doc("parent", 1), save={"data": ["trajectory"]})
    store.close()

    script = textwrap.dedent(
        f"""
        import json
        from gptff_flows.stores import local_job_store
        store = local_job_store({str(directory)!r})
        store.connect()
        seen = store.query_one({{"uuid": "parent-1"}}, load=True)
        store.update({{"uuid": "child-1", "index": 1, "output": {{"value": 42}}}})
        print(json.dumps(seen["output"]))
        """
    )
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout.strip().splitlines()[-1]) == _job_doc("parent", 1)["output"]

    reopened = local_job_store(directory)
    reopened.connect()
    assert reopened.query_one({"uuid": "child-1"})["output"] == {"value": 42}


def test_connect_does_not_rewrite_the_storage_configuration(tmp_path):
    """The pitfall: maggma's MontyStore.connect rewrites montydb's config on every call."""
    store = local_job_store(tmp_path)
    store.connect()
    config = tmp_path / "monty.storage.cfg"
    before = config.stat().st_mtime_ns
    for _ in range(3):
        local_job_store(tmp_path).connect()
    assert config.stat().st_mtime_ns == before


def test_default_directory_and_environment(tmp_path, monkeypatch):
    monkeypatch.delenv(stores.STORE_ENV, raising=False)
    monkeypatch.delenv(stores.STORE_DIR_ENV, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert stores.default_store_dir() == tmp_path / "xdg" / "gptff" / "store"
    monkeypatch.setenv(stores.STORE_DIR_ENV, str(tmp_path / "mine"))
    assert stores.default_store_dir() == tmp_path / "mine"
    assert describe_store(open_job_store()) == f"embedded store {tmp_path / 'mine'}"
    monkeypatch.setenv(stores.STORE_ENV, str(tmp_path / "other"))
    assert describe_store(open_job_store()) == f"embedded store {tmp_path / 'other'}"


def test_a_file_is_not_a_store(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        local_job_store(tmp_path / "file")


def test_mongodb_credentials_are_redacted():
    uri = "mongodb://alice:s3cr%40t@db.example.org:27017/results?authSource=admin"
    assert "s3cr" not in redact_uri(uri)
    assert redact_uri(uri).startswith("mongodb://alice:***@db.example.org")
    store = open_job_store(uri, check=False)  # no server is contacted
    description = describe_store(store)
    assert "s3cr" not in description and "results" in description
    assert store.additional_stores["data"].__class__.__name__ == "GridFSStore"


def test_jobflow_settings_file(tmp_path):
    settings = tmp_path / "jobflow.yaml"
    settings.write_text(
        "JOB_STORE:\n  docs_store:\n    type: MemoryStore\n    collection_name: from_settings\n"
    )
    store = open_job_store(f"jobflow:{settings}")
    assert store.docs_store.collection_name == "from_settings"
    with pytest.raises(ValueError, match="does not exist"):
        open_job_store(f"jobflow:{tmp_path / 'missing.yaml'}")


@pytest.mark.skipif(not os.environ.get("MONGODB_URI"), reason="set MONGODB_URI to test MongoDB")
def test_real_mongodb_round_trip():
    """Against a real server: documents and a GridFS blob written and read back, then removed."""
    store = open_job_store(os.environ["MONGODB_URI"])
    store.connect()
    doc = _job_doc("mongo-test", os.getpid())
    try:
        store.update(doc, save={"data": ["trajectory"]})
        loaded = store.query_one({"uuid": doc["uuid"]}, load=True)
        assert loaded["output"]["trajectory"] == doc["output"]["trajectory"]
    finally:
        store.remove_docs({"uuid": doc["uuid"]})
        store.close()


# ---------------------------------------------------------------- checks when a store is opened


def _filled_store(directory, n=40):
    """``n`` job documents, each with a 50-number array in the "data" store; their outputs."""
    store = local_job_store(directory)
    store.connect()
    outputs = {}
    for i in range(n):
        doc = _job_doc("w", i)
        doc["output"]["trajectory"] = [0.25 * i + j / 7 for j in range(50)]
        store.update(doc, save={"data": ["trajectory"]})
        outputs[doc["uuid"]] = doc["output"]
    store.close()
    return outputs


def _read_all(directory) -> dict:
    store = open_job_store(directory, create=False)
    store.connect()
    return {d["uuid"]: d["output"] for d in store.query({}, load=True)}


def test_read_only_open_never_creates_a_store(tmp_path, monkeypatch):
    """`gptff results --store /typo/dir` created an empty store and printed '(none)'."""
    typo = tmp_path / "typo" / "dir"
    with pytest.raises(StoreError, match="no store at") as caught:
        open_job_store(typo, create=False)
    assert str(typo) in str(caught.value)
    assert not (tmp_path / "typo").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(StoreError, match="no store at"):
        open_job_store(empty, create=False)
    assert list(empty.iterdir()) == []
    monkeypatch.delenv(stores.STORE_ENV, raising=False)
    monkeypatch.setenv(stores.STORE_DIR_ENV, str(tmp_path / "default"))
    with pytest.raises(StoreError, match="no store at"):
        open_job_store(create=False)
    assert not (tmp_path / "default").exists()
    open_job_store(create=True)  # writers create it
    assert open_job_store(create=False).docs_store.database_path == str(tmp_path / "default")


@pytest.mark.parametrize("collection", ["outputs", "data"])
@pytest.mark.parametrize("create", [True, False])
def test_a_deleted_collection_file_is_damage_not_an_empty_store(tmp_path, collection, create):
    _filled_store(tmp_path / "store", n=2)
    (tmp_path / "store" / "gptff" / f"{collection}.collection").unlink()
    with pytest.raises(StoreError, match=rf"damaged \(gptff/{collection}.collection missing\)"):
        open_job_store(tmp_path / "store", create=create)
    assert not (tmp_path / "store" / "gptff" / f"{collection}.collection").exists()


def test_a_collection_deleted_while_open_is_damage(tmp_path):
    _filled_store(tmp_path / "store", n=2)
    store = open_job_store(tmp_path / "store")
    store.connect()
    (tmp_path / "store" / "gptff" / "outputs.collection").unlink()
    with pytest.raises(StoreError, match=r"outputs\.collection is missing"):
        store.query_one({})


def test_an_unreachable_mongodb_is_refused_up_front(monkeypatch):
    monkeypatch.setenv(stores.STORE_TIMEOUT_ENV, "0.3")
    assert stores.store_timeout() == 0.3
    with pytest.raises(StoreError, match="cannot reach MongoDB") as caught:
        open_job_store("mongodb://alice:s3cret@127.0.0.1:1/results")
    message = str(caught.value)
    assert "s3cret" not in message and "alice:***@" in message and "\n" not in message
    assert "0.3 s" in message and stores.STORE_TIMEOUT_ENV in message
    monkeypatch.setenv(stores.STORE_TIMEOUT_ENV, "soon")
    with pytest.raises(StoreError, match="number of seconds"):
        open_job_store("mongodb://127.0.0.1:1/results")


# ---------------------------------------------------------------- integrity of the embedded store


def test_documents_carry_a_checksum_that_reads_strip(tmp_path):
    import hashlib

    import bson
    from montydb import MontyClient

    outputs = _filled_store(tmp_path / "store", n=3)
    raw = MontyClient(str(tmp_path / "store"))["gptff"]["outputs"].find_one({"uuid": "w-1"})
    content = {k: v for k, v in raw.items() if k not in ("_id", CHECKSUM_FIELD)}
    assert raw[CHECKSUM_FIELD] == hashlib.sha256(bson.encode(content)).hexdigest()
    store = open_job_store(tmp_path / "store", create=False)
    store.connect()
    doc = store.query_one({"uuid": "w-1"}, load=True)
    assert CHECKSUM_FIELD not in doc and doc["output"] == outputs["w-1"]


def test_documents_without_a_checksum_still_read(tmp_path):
    """Stores written before checksums: their documents read as they are."""
    from montydb import MontyClient

    _filled_store(tmp_path / "store", n=1)
    legacy = MontyClient(str(tmp_path / "store"))["gptff"]["outputs"]
    legacy.insert_one({"uuid": "old", "index": 1, "output": {"value": 1.5}})
    store = open_job_store(tmp_path / "store", create=False)
    store.connect()
    assert store.query_one({"uuid": "old"})["output"] == {"value": 1.5}


def _flip(path, offset: int, bit: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 1 << bit
    path.write_bytes(bytes(data))


def test_a_flipped_bit_in_a_number_is_refused_naming_the_document(tmp_path):
    import struct

    outputs = _filled_store(tmp_path / "store", n=5)
    target = outputs["w-3"]["trajectory"][17]
    path = tmp_path / "store" / "gptff" / "data.collection"
    packed = struct.pack("<d", target)
    assert path.read_bytes().count(packed) == 1
    _flip(path, path.read_bytes().index(packed) + 7, 4)  # an exponent bit: a very different value
    with pytest.raises(StoreError, match="does not match its checksum") as caught:
        _read_all(tmp_path / "store")
    assert "data.collection" in str(caught.value) and "restore it from a backup" in str(
        caught.value
    )
    store = open_job_store(tmp_path / "store", create=False)
    store.connect()  # the documents themselves are intact; only the damaged blob is refused
    assert store.query_one({"uuid": "w-1"}, load=False)["output"]["value"] == 1


def test_random_bit_flips_never_change_a_result(tmp_path):
    """The reported failure: 3 random bit flips in data.collection silently changed 6 of 40
    results. Now every read gives the stored numbers exactly, or a StoreError."""
    import random

    directory = tmp_path / "store"
    outputs = _filled_store(directory)
    path = directory / "gptff" / "data.collection"
    pristine = path.read_bytes()
    rng = random.Random(13)
    verdicts = {"same": 0, "refused": 0}
    for _ in range(25):
        data = bytearray(pristine)
        for _ in range(3):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(data))
        try:
            got = _read_all(directory)
        except StoreError as error:
            assert "damaged" in str(error) and "\n" not in str(error)
            verdicts["refused"] += 1
            continue
        assert got == outputs
        verdicts["same"] += 1
    assert verdicts["refused"] > 0


@pytest.mark.parametrize(
    "damage",
    ["header", "bson key"],
)
def test_an_unreadable_store_is_one_store_error(tmp_path, damage):
    """A damaged SQLite file gave a 47-line sqlite traceback."""
    import struct

    outputs = _filled_store(tmp_path / "store", n=3)
    path = tmp_path / "store" / "gptff" / "outputs.collection"
    data = bytearray(path.read_bytes())
    if damage == "header":
        data[:16] = b"not a database!!"
    else:  # a key of one BSON document made invalid UTF-8: it no longer decodes
        value = struct.pack("<i", outputs["w-1"]["value"])
        at = data.index(b"\x10value\x00" + value)
        data[at + 1 : at + 6] = b"va\xffue"
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="is damaged") as caught:
        _read_all(tmp_path / "store")
    assert "\n" not in str(caught.value) and "restore it from a backup" in str(caught.value)


def test_a_garbled_configuration_is_rewritten_and_nothing_lost(tmp_path):
    outputs = _filled_store(tmp_path / "store", n=2)
    (tmp_path / "store" / ".monty.storage").write_text("garbage")
    (tmp_path / "store" / "monty.storage.cfg").unlink()
    assert _read_all(tmp_path / "store") == outputs
    assert (tmp_path / "store" / ".monty.storage").read_text().strip() == "sqlite"
