"""gptff_flows.run: resuming after a kill reruns only the missing jobs, stores every result once,
and resuming again (or a completed flow) runs nothing; jobs are keyed on a hash of their inputs.
Cheap ``@job`` functions, no GPTFF model."""

import pytest

pytest.importorskip("jobflow")

from jobflow import Flow, JobStore, Response, job
from maggma.stores import MemoryStore

from gptff_core.errors import StoreError
from gptff_flows.run import INPUT_HASH, input_hashes, label_flow, run_flow
from gptff_flows.stores import local_job_store

CALLS: list[str] = []
KILL: set[str] = set()


@pytest.fixture(autouse=True)
def fresh_calls():
    CALLS.clear()
    KILL.clear()
    yield
    KILL.clear()


def _killed(name: str) -> None:
    CALLS.append(name)
    if name in KILL:
        raise RuntimeError(f"killed while running {name}")


@job
def add(a, b):
    _killed("add")
    return a + b


@job
def scale(x, factor):
    _killed("scale")
    return {"value": x * factor}


@job
def total(values):
    _killed("total")
    return sum(values)


@job
def fan_out(x):
    """Replaces itself with two jobs (jobflow's Response(replace=...)), like a campaign."""
    _killed("fan_out")
    parts = [scale(x, 10), scale(x, 100)]
    return Response(replace=Flow(parts, output=[p.output["value"] for p in parts]))


def _flow(name="cheap", a=1):
    """add(a, 2) → two scale jobs in a nested flow → total; the flow's output is the total."""
    first = add(a, 2)
    scaled = [scale(first.output, 2), scale(first.output, 3)]
    inner = Flow(scaled, name="scaled")
    last = total([s.output["value"] for s in scaled])
    return Flow([first, inner, last], output=last.output, name=name)


def _store() -> JobStore:
    store = JobStore(MemoryStore())
    store.connect()
    return store


def _runs_per_hash(store: JobStore) -> dict[str, int]:
    counts: dict[str, int] = {}
    for doc in store.query({}, properties=["metadata", "index"]):
        key = (doc["metadata"][INPUT_HASH], doc["index"])
        counts[key] = counts.get(key, 0) + 1
    return counts


def test_resume_after_a_kill_reruns_only_what_is_missing_and_stores_nothing_twice():
    store = _store()
    KILL.add("total")
    with pytest.raises(RuntimeError):
        run_flow(_flow(), store)
    assert CALLS == ["add", "scale", "scale", "total"]
    assert store.count() == 3  # add and both scale jobs finished and are stored

    KILL.clear()
    CALLS.clear()
    again = _flow()
    responses = run_flow(again, store, resume=True)
    assert CALLS == ["total"]
    assert responses[again.output.uuid][1].output == (1 + 2) * 2 + (1 + 2) * 3
    assert store.count() == 4
    assert set(_runs_per_hash(store).values()) == {1}


def test_resuming_twice_and_a_completed_flow_run_nothing():
    """The reported failure: each resume stored the relaxations once more, and a completed flow
    whose jobs were all reused raised 'cannot apply compose_all to an empty list'."""
    store = _store()
    run_flow(_flow(), store)
    for _ in range(3):
        CALLS.clear()
        again = _flow()
        responses = run_flow(again, store, resume=True)
        assert CALLS == []
        assert responses[again.output.uuid][1].output == 15  # the stored output, returned
        assert store.count() == 4
    no_output = Flow([add(5, 6)], name="no output")  # every job reused, nothing referenced
    run_flow(no_output, store)
    assert run_flow(Flow([add(5, 6)], name="no output"), store, resume=True) == {}
    assert store.count() == 5


def test_changed_inputs_are_not_reused():
    store = _store()
    run_flow(_flow(a=1), store)
    CALLS.clear()
    changed = _flow(a=4)  # same names, other input: everything downstream differs too
    responses = run_flow(changed, store, resume=True)
    assert CALLS == ["add", "scale", "scale", "total"]
    assert responses[changed.output.uuid][1].output == (4 + 2) * 5


def test_input_hashes_follow_inputs_not_uuids():
    one, two, other = _flow(), _flow(), _flow(a=7)
    h1, h2, h3 = (list(input_hashes(f).values()) for f in (one, two, other))
    assert h1 == h2  # fresh uuids, same inputs
    assert len(set(h1)) == 4  # the two scale jobs differ by their factor
    assert not set(h1) & set(h3)  # a changed first input changes every job downstream
    label_flow(one)
    assert [j.metadata[INPUT_HASH] for j in one.jobs if hasattr(j, "function")] == [h1[0], h1[3]]


def test_a_job_that_replaced_itself_counts_once_its_replacement_finished():
    def flow():
        start = add(1, 1)
        spread = fan_out(start.output)
        return Flow([start, spread, total(spread.output)], output=None, name="dynamic")

    store = _store()
    KILL.add("scale")  # the replacement fails: fan_out's own document is not its result
    with pytest.raises(RuntimeError):
        run_flow(flow(), store)
    KILL.clear()
    CALLS.clear()
    run_flow(flow(), store, resume=True)
    assert CALLS == ["fan_out", "scale", "scale", "total"]
    (result,) = [d["output"] for d in store.query({"name": "total"}, properties=["output"])]
    assert result == 2 * 10 + 2 * 100
    CALLS.clear()
    run_flow(flow(), store, resume=True)
    assert CALLS == []


def test_resume_on_the_embedded_store(tmp_path):
    store = local_job_store(tmp_path / "store")
    KILL.add("total")
    with pytest.raises(RuntimeError):
        run_flow(_flow(), store)
    KILL.clear()
    CALLS.clear()
    again = _flow()
    assert run_flow(again, store, resume=True)[again.output.uuid][1].output == 15
    assert CALLS == ["total"]
    store.connect()
    assert store.count() == 4


def test_an_unreachable_store_is_refused_before_any_job(monkeypatch):
    monkeypatch.setenv("GPTFF_STORE_TIMEOUT", "0.3")
    with pytest.raises(StoreError, match="cannot reach MongoDB") as caught:
        run_flow(_flow(), "mongodb://me:secret@127.0.0.1:1/results")
    assert CALLS == []
    assert "secret" not in str(caught.value) and "\n" not in str(caught.value)


@job
def damage_store(path):
    """Overwrite the SQLite header of the store's documents: the job's own write then fails."""
    with open(path, "r+b") as handle:
        handle.write(b"\0" * 100)
    return 1


def test_a_store_damaged_during_the_run_is_a_store_error(tmp_path):
    """jobflow reports a failed write only as 'Flow did not finish running successfully' (and
    the screening CLI then advised rerunning); run_flow raises the store's own error."""
    store = local_job_store(tmp_path / "store")
    target = tmp_path / "store" / "gptff" / "outputs.collection"
    with pytest.raises(StoreError, match="is damaged"):
        run_flow(Flow([damage_store(str(target))], name="damaging"), store)
