"""A screening campaign through jobflow-remote's Runner, in process: the generation job replaces
itself with chunk jobs that the runner dispatches as separate jobs, results land in the project's
job store, and a resubmitted campaign (``lookup_store`` naming that store) computes nothing."""

import logging
import sys
from pathlib import Path

import pytest

pytest.importorskip("jobflow_remote")
pytest.importorskip("torch_sim")

from ase.build import bulk
from monty.serialization import dumpfn
from pymatgen.io.ase import AseAtomsAdaptor

from gptff_flows import queries
from gptff_flows.flows.screening import SubstitutionScreeningMaker
from gptff_flows.stores import local_job_store

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def restore_loggers():
    """jobflow-remote's Runner disables existing loggers; re-enable them afterwards."""
    yield
    for logger in logging.root.manager.loggerDict.values():
        if isinstance(logger, logging.Logger):
            logger.disabled = False


def test_campaign_through_the_runner_and_resubmitted(tmp_path, monkeypatch):
    import jobflow_remote
    from jobflow_remote.config.manager import ConfigManager
    from jobflow_remote.jobs.jobcontroller import JobController
    from jobflow_remote.jobs.runner import Runner
    from jobflow_remote.jobs.state import FlowState

    results = tmp_path / "results"
    project = {
        "name": "gptff_screen",
        "base_dir": str(tmp_path / "project"),
        "workers": {
            "local": {
                "type": "local",
                "scheduler_type": "shell",
                "work_dir": str(tmp_path / "work"),
                "pre_run": f"export PATH={Path(sys.executable).parent}:$PATH OMP_NUM_THREADS=1",
            }
        },
        "queue": {"store": {"type": "MemoryStore", "collection_name": "jobs"}},
        "jobstore": local_job_store(results).as_dict(),
        "runner": {"delay_checkout": 1, "delay_check_run_status": 1, "delay_advance_status": 1,
                   "delay_refresh_limited": 5, "delay_update_batch": 5},
    }  # fmt: skip
    folder = tmp_path / "projects"
    folder.mkdir()
    dumpfn(project, folder / "gptff_screen.yaml")
    monkeypatch.setattr(jobflow_remote.SETTINGS, "projects_folder", str(folder))
    monkeypatch.setattr(jobflow_remote.SETTINGS, "project", "gptff_screen")
    controller = JobController.from_project(ConfigManager().get_project("gptff_screen"))
    controller.reset()
    monkeypatch.setattr(JobController, "from_project", classmethod(lambda cls, p: controller))

    prototype = AseAtomsAdaptor.get_structure(bulk("NaCl", "rocksalt", a=5.64))
    maker = SubstitutionScreeningMaker(
        name="remote", fmax=0.1, steps=60, min_atoms=16, chunk_size=2, lookup_store=str(results)
    )
    first = maker.make({"rocksalt": prototype}, {"Na": ["K"]})  # KCl + K, Cl references
    controller.add_flow(first, worker="local")
    Runner(project_name="gptff_screen").run_all_jobs(max_seconds=600)
    assert [f.state for f in controller.get_flows_info(flow_ids=[first.uuid])] == [
        FlowState.COMPLETED
    ]
    store = local_job_store(results)
    (record,) = queries.screening_results(store, campaign="remote")
    assert record["formula"] == "KCl" and record["status"] == "relaxed"
    store.connect()
    chunks = store.query({"output.@class": "ScreeningChunkDocument"}, properties=["output"])
    assert sum(len(c["output"]["candidates"]) for c in chunks) == 3

    second = maker.make({"rocksalt": prototype}, {"Na": ["K"]})
    controller.add_flow(second, worker="local")
    Runner(project_name="gptff_screen").run_all_jobs(max_seconds=600)
    (summary,) = queries.screening_campaigns(store, campaign="remote")
    assert summary["stored_before"] == 1 and summary["computed"] == 0
