"""Leases of gptff_flows.jobs.leases: concurrent runs of a screening campaign on one store
claim each structure before relaxing it, so nothing is computed or stored twice; a lease held by
another live run is respected (its result is waited for and reused), an expired one or one whose
process is gone is taken over; a rerun after completion computes nothing."""

import pytest

pytest.importorskip("atomate2")
pytest.importorskip("torch_sim")

from ase.build import bulk
from maggma.stores import MemoryStore
from pymatgen.io.ase import AseAtomsAdaptor

from gptff_flows.flows.screening import SubstitutionScreeningMaker
from gptff_flows.jobs import leases as screening_leases
from gptff_flows.jobs import screening as screening_jobs
from gptff_flows.jobs.leases import lease_book, new_owner, share_work
from gptff_flows.run import run_flow
from gptff_flows.stores import local_job_store

pytestmark = pytest.mark.filterwarnings(
    "ignore::FutureWarning", "ignore::UserWarning", "ignore::DeprecationWarning"
)

FAST = dict(fmax=0.1, steps=60, min_atoms=16, dtype="float64")
OTHER = dict(id="another-host:1:run", host="another-host", pid=1)  # a live run elsewhere


@pytest.fixture(params=["sqlite", "mongo"])
def book(request, tmp_path):
    """The leases of an embedded store (SQLite) and of a Mongo-like store (mongomock)."""
    if request.param == "sqlite":
        return lease_book(local_job_store(tmp_path / "store"))
    return lease_book(MemoryStore("outputs"))


def test_a_lease_is_exclusive_until_it_expires(book):
    me = new_owner()
    assert book.claim(["a", "b"], OTHER, 600) == {"a", "b"}
    assert book.claim(["a", "b", "c"], me, 600) == {"c"}  # a, b held by a live run
    assert book.holders(["a", "c"])["a"]["owner"] == OTHER["id"]
    assert book.claim(["c"], me, 600) == {"c"}  # one's own lease: renewed
    book.claim(["d"], OTHER, -1.0)  # a lease that ran out (its owner stopped renewing)
    assert book.claim(["d"], me, 600) == {"d"}
    assert book.holders(["d"])["d"]["owner"] == me["id"]
    book.release(["a"], me["id"])  # only the owner releases
    assert set(book.holders(["a", "b"])) == {"a", "b"}
    book.release(["a", "b"], OTHER["id"])
    assert book.holders(["a", "b"]) == {}


def test_a_lease_of_a_process_gone_from_this_host_is_taken_over(book):
    import subprocess
    import sys

    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)  # fmt: skip
    me = new_owner()
    gone = dict(id=f"{me['host']}:dead", host=me["host"], pid=int(finished.stdout))
    alive = dict(id=f"{me['host']}:alive", host=me["host"], pid=me["pid"])
    book.claim(["x"], gone, 600)
    book.claim(["y"], alive, 600)
    assert book.claim(["x", "y"], me, 600) == {"x"}


def test_share_work_waits_for_a_held_key_and_takes_over_an_expired_one(book, monkeypatch):
    stored: dict[str, dict] = {}
    computed: list[str] = []
    book.claim(["held"], OTHER, 600)
    book.claim(["expired"], OTHER, -1.0)

    def other_run_finishes(seconds):
        stored["held"] = {"key": "held", "by": "other"}

    monkeypatch.setattr(screening_leases, "pause", other_run_finishes)
    documents, found = share_work(
        ["free", "held", "expired"],
        lambda keys: computed.extend(keys) or [{"key": k} for k in keys],
        lambda keys: {k: stored[k] for k in keys if k in stored},
        book,
        new_owner(),
    )
    assert sorted(computed) == ["expired", "free"]
    assert [d["key"] for d in documents] == computed
    assert found == {"held": {"key": "held", "by": "other"}}


def test_share_work_releases_its_leases_when_the_work_fails(book):
    me = new_owner()

    def crash(keys):
        raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError):
        share_work(["a", "b"], crash, lambda keys: {}, book, me)
    assert book.holders(["a", "b"]) == {}
    assert book.claim(["a", "b"], OTHER, 600) == {"a", "b"}


def chunk_candidates(store) -> list[dict]:
    store.connect()
    docs = store.query({"output.@class": "ScreeningChunkDocument"}, properties=["output"])
    return [c for d in docs for c in d["output"]["candidates"]]


def campaign_output(store) -> dict:
    docs = store.query({"output.@class": "ScreeningCampaignDocument"}, load=True)
    return sorted(docs, key=lambda d: d["completed_at"])[-1]["output"]


@pytest.fixture
def counted(monkeypatch):
    """The keys relax_items is asked to compute, in order."""
    keys: list[str] = []
    original = screening_jobs.relax_items

    def counting(items, *args, **kwargs):
        keys.extend(item["key"] for item in items)
        return original(items, *args, **kwargs)

    monkeypatch.setattr(screening_jobs, "relax_items", counting)
    return keys


def make_flow():
    prototypes = {"rocksalt": AseAtomsAdaptor.get_structure(bulk("NaCl", "rocksalt", a=5.64))}
    maker = SubstitutionScreeningMaker(name="shared", chunk_size=3, **FAST)
    return maker.make(prototypes, {"Na": ["K", "Li"]})  # KCl, LiCl and K, Li, Cl references


def test_two_runs_in_sequence_compute_once_and_leave_no_lease(tmp_path, counted):
    store = local_job_store(tmp_path / "store")
    run_flow(make_flow(), store)
    first = list(counted)
    assert len(first) == len(set(first)) == 5
    counted.clear()
    run_flow(make_flow(), store)
    assert counted == []
    keys = [c["key"] for c in chunk_candidates(store)]
    assert sorted(keys) == sorted(first)
    assert lease_book(store).holders(first) == {}  # the analysis released them
    assert campaign_output(store)["counts"]["stored_before"] == 2


def test_a_concurrent_runs_lease_is_respected_and_an_expired_one_taken_over(
    tmp_path, counted, monkeypatch
):
    """Another run holds a live lease on one candidate (and finishes it while this run waits)
    and a stale lease on another: this run computes the stale one and every other structure,
    reuses the held one without storing it again, and leaves the other run's lease alone."""
    reference = local_job_store(tmp_path / "reference")
    run_flow(make_flow(), reference)  # the same campaign, to know its keys and results
    candidates = [c for c in chunk_candidates(reference) if c["role"] == "candidate"]
    held, stale = sorted(candidates, key=lambda c: c["label"])
    every = set(counted)
    counted.clear()

    store = local_job_store(tmp_path / "store")
    book = lease_book(store)
    book.claim([held["key"]], OTHER, 600)
    book.claim([stale["key"]], dict(OTHER, id="crashed-run"), -1.0)
    reference.connect()
    finished = reference.query_one(
        {"output.@class": "ScreeningChunkDocument", "output.candidates.key": held["key"]},
        load=False,
    )
    waits = []

    def other_run_stores_its_chunk(seconds):
        waits.append(seconds)
        doc = dict(finished)
        doc.pop("_id", None)
        doc["uuid"], doc["name"] = "other-run-chunk", "other run"
        doc["output"] = dict(doc["output"])
        doc["output"]["candidates"] = [held]
        store.docs_store.update(doc, key=["uuid", "index"])

    monkeypatch.setattr(screening_leases, "pause", other_run_stores_its_chunk)
    run_flow(make_flow(), store)
    assert waits, "the run did not wait for the held structure"
    assert set(counted) == every - {held["key"]} and len(counted) == len(set(counted))
    keys = [c["key"] for c in chunk_candidates(store)]
    assert sorted(keys) == sorted(every)  # everything stored once, the held one by its owner
    ranking = {r["key"]: r for r in campaign_output(store)["ranking"]}
    assert ranking[held["key"]]["stored_before"] and not ranking[stale["key"]]["stored_before"]
    assert ranking[held["key"]]["e_above_hull"] is not None
    assert book.holders([held["key"]])[held["key"]]["owner"] == OTHER["id"]
