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

from gptff_flows import stores
from gptff_flows.stores import (
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
    store = open_job_store(uri)  # not connected: no server is contacted
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
