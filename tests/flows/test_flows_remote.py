"""jobflow-remote: a GPTFF EOS flow runs through jobflow-remote's Runner and its results land in
the job store.

* In process (default run): the Runner runs here with an in-memory queue (``MemoryStore``) that
  it shares with the test through one ``JobController``; jobs execute as local shell processes.
* Daemon (opt in: ``GPTFF_TEST_JFR_DAEMON=1``, marker ``jobflow_remote_daemon``): the MongoDB
  wire stand-in ``../shared/tools/mongo_wire_standin.py`` serves the queue, ``jf runner start``
  runs the daemon, two flows are submitted and must complete; everything started is stopped.
"""

import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("jobflow_remote")

from ase.build import bulk
from monty.serialization import dumpfn
from pymatgen.io.ase import AseAtomsAdaptor

from gptff_flows import queries
from gptff_flows.flows.eos import GPTFFEosMaker
from gptff_flows.stores import local_job_store


@pytest.fixture(autouse=True)
def restore_loggers():
    """jobflow-remote's Runner configures logging with ``disable_existing_loggers=True``, which
    silences every logger created before it (the toolkit's included) for the rest of the
    process; re-enable them after each test so later tests can capture log records."""
    yield
    for logger in logging.root.manager.loggerDict.values():
        if isinstance(logger, logging.Logger):
            logger.disabled = False


SHARED_TOOLS = Path(__file__).resolve().parents[2].parent / "shared" / "tools"
FAST_RUNNER = {
    "delay_checkout": 1,
    "delay_check_run_status": 1,
    "delay_advance_status": 1,
    "delay_refresh_limited": 5,
    "delay_update_batch": 5,
}


def _eos_flow(name: str, formula: str = "Cu"):
    """A small EOS flow: 3 strained cells, loose thresholds, 1–2-atom cells."""
    atoms = {"Cu": bulk("Cu", "fcc", a=3.7), "NaCl": bulk("NaCl", "rocksalt", a=5.7)}[formula]
    maker = GPTFFEosMaker(
        name=name, number_of_frames=3, linear_strain=(-0.02, 0.02), relax_fmax=0.1
    )
    return maker.make(AseAtomsAdaptor.get_structure(atoms))


def _project(tmp_path: Path, name: str, queue_store: dict) -> dict:
    """A project with one local worker running in this Python environment."""
    bin_dir = Path(sys.executable).parent
    jobstore = local_job_store(tmp_path / "results").as_dict()
    return {
        "name": name,
        "base_dir": str(tmp_path / "project"),
        "workers": {
            "local": {
                "type": "local",
                "scheduler_type": "shell",
                "work_dir": str(tmp_path / "work"),
                "pre_run": f"export PATH={bin_dir}:$PATH OMP_NUM_THREADS=1",
            }
        },
        "queue": {"store": queue_store},
        "jobstore": jobstore,
        "runner": FAST_RUNNER,
    }


def _write_project(folder: Path, project: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    dumpfn(project, folder / f"{project['name']}.yaml")


def test_in_process_runner_completes_an_eos_flow(tmp_path, monkeypatch):
    import jobflow_remote
    from jobflow_remote.config.manager import ConfigManager
    from jobflow_remote.jobs.jobcontroller import JobController
    from jobflow_remote.jobs.runner import Runner
    from jobflow_remote.jobs.state import FlowState

    folder = tmp_path / "projects"
    project = _project(tmp_path, "gptff_test", {"type": "MemoryStore", "collection_name": "jobs"})
    _write_project(folder, project)
    monkeypatch.setattr(jobflow_remote.SETTINGS, "projects_folder", str(folder))
    monkeypatch.setattr(jobflow_remote.SETTINGS, "project", "gptff_test")

    # one controller, so the Runner sees the flows submitted here (a MemoryStore is per instance)
    controller = JobController.from_project(ConfigManager().get_project("gptff_test"))
    controller.reset()
    monkeypatch.setattr(JobController, "from_project", classmethod(lambda cls, p: controller))

    flow = _eos_flow("remote eos")
    controller.add_flow(flow, worker="local")
    Runner(project_name="gptff_test").run_all_jobs(max_seconds=600)

    info = controller.get_flows_info(flow_ids=[flow.uuid])
    assert [f.state for f in info] == [FlowState.COMPLETED]
    store = local_job_store(tmp_path / "results")
    (record,) = queries.eos_results(store)
    assert record["formula"] == "Cu" and record["n_points"] == 4
    assert 10 < record["v0_per_atom"] < 14 and record["b0"] > 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the MongoDB stand-in exited with {process.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"the MongoDB stand-in did not listen on port {port}")


@pytest.mark.jobflow_remote_daemon
@pytest.mark.skipif(
    os.environ.get("GPTFF_TEST_JFR_DAEMON") != "1",
    reason="set GPTFF_TEST_JFR_DAEMON=1 to run the jobflow-remote daemon integration test",
)
def test_daemon_runs_two_flows(tmp_path):
    pytest.importorskip("mockupdb")
    pytest.importorskip("mongomock_ng")
    jf = shutil.which("jf", path=str(Path(sys.executable).parent))
    assert jf, "jobflow-remote's `jf` command is not installed next to this Python"
    port = _free_port()
    folder = tmp_path / "projects"
    queue = {
        "type": "MongoStore",
        "host": "127.0.0.1",
        "port": port,
        "database": "gptff_queue",
        "collection_name": "jobs",
    }
    _write_project(folder, _project(tmp_path, "gptff_daemon", queue))
    env = {
        **os.environ,
        "JFREMOTE_PROJECTS_FOLDER": str(folder),
        "JFREMOTE_PROJECT": "gptff_daemon",
    }
    standin = subprocess.Popen(
        [sys.executable, str(SHARED_TOOLS / "mongo_wire_standin.py"), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(port, standin)
        submitted = subprocess.run(
            [sys.executable, "-c", _SUBMIT_TWO_FLOWS],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert submitted.returncode == 0, submitted.stderr
        flow_ids = submitted.stdout.split()
        subprocess.run([jf, "runner", "start"], env=env, check=True, timeout=120)
        try:
            states = _wait_for_flows(env, flow_ids, seconds=900)
        finally:
            _stop_daemon(jf, env)  # while the queue database still answers
        assert states == ["COMPLETED", "COMPLETED"]
        store = local_job_store(tmp_path / "results")
        assert {r["formula"] for r in queries.eos_results(store)} == {"Cu", "NaCl"}
    finally:
        standin.terminate()
        standin.wait(timeout=30)


_SUBMIT_TWO_FLOWS = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from jobflow_remote import JobController
from test_flows_remote import _eos_flow
from gptff_flows.run import submit_flow
JobController.from_project_name().reset()  # a new queue database must be initialised once
for name, formula in [("daemon eos Cu", "Cu"), ("daemon eos NaCl", "NaCl")]:
    flow = _eos_flow(name, formula)
    submit_flow(flow, worker="local")
    print(flow.uuid)
"""


def _wait_for_flows(env: dict, flow_ids: list[str], seconds: float) -> list[str]:
    """Poll the queue until every flow is COMPLETED or FAILED (or time runs out)."""
    script = (
        "import sys\nfrom jobflow_remote import JobController\n"
        "jc = JobController.from_project_name()\n"
        "print(' '.join(f.state.name for f in jc.get_flows_info(flow_ids=sys.argv[1:])))"
    )
    deadline = time.time() + seconds
    states: list[str] = []
    while time.time() < deadline:
        run = subprocess.run(
            [sys.executable, "-c", script, *flow_ids],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        states = run.stdout.split()
        if len(states) == len(flow_ids) and all(s in ("COMPLETED", "FAILED") for s in states):
            return states
        time.sleep(5)
    return states


def _stop_daemon(jf: str, env: dict) -> None:
    """Stop the runner daemon: a clean shutdown, else ``jf runner kill`` and a last shutdown."""
    stopped = subprocess.run(
        [jf, "runner", "shutdown", "--wait", "--max-wait", "120"],
        env=env,
        capture_output=True,
        timeout=300,
    )
    if stopped.returncode != 0:
        subprocess.run([jf, "runner", "kill"], env=env, capture_output=True, timeout=120)
        subprocess.run([jf, "runner", "shutdown"], env=env, capture_output=True, timeout=120)


def test_submit_without_a_project_says_how_to_create_one(tmp_path, monkeypatch):
    """`--submit` with no jobflow-remote project configured gave a traceback."""
    import jobflow_remote

    from gptff_core.errors import StoreError
    from gptff_flows.run import submit_flow

    folder = tmp_path / "projects"
    monkeypatch.setattr(jobflow_remote.SETTINGS, "projects_folder", str(folder))
    monkeypatch.setattr(jobflow_remote.SETTINGS, "project", None)
    flow = _eos_flow("not submitted")
    with pytest.raises(StoreError, match="no jobflow-remote project in") as caught:
        submit_flow(flow, worker="local")
    assert "jf project generate" in str(caught.value) and "\n" not in str(caught.value)

    _write_project(folder, _project(tmp_path, "gptff_test", {"type": "MemoryStore"}))
    with pytest.raises(StoreError, match="no jobflow-remote project 'other'"):
        submit_flow(flow, worker="local", project="other")
    with pytest.raises(StoreError, match=r"has no worker 'slurm' \(it has: local\)"):
        submit_flow(flow, worker="slurm")


def test_workflow_submit_with_an_empty_jfremote_is_one_line(tmp_path):
    """A user without ~/.jfremote runs a paper workflow with --submit: one line, exit 1."""
    script = Path(__file__).resolve().parents[2] / "workflows" / "paper_eos.py"
    env = {k: v for k, v in os.environ.items() if not k.startswith("JFREMOTE_")}
    env |= {"HOME": str(tmp_path), "PYTHONPATH": str(script.parents[1])}
    run = subprocess.run(
        [sys.executable, str(script), "--compounds", "NaCl", "--submit", "local"],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 1, run.stderr
    assert run.stderr.startswith("paper_eos.py: error: no jobflow-remote project in")
    assert run.stderr.count("\n") == 1 and "jf project generate" in run.stderr
