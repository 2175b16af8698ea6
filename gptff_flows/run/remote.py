"""Submitting GPTFF flows to a jobflow-remote project, after checking the project is there.

See ``workflows/jobflow_remote/`` for a project with a local and a SLURM worker. Every job is
labelled (:func:`~gptff_flows.run.labels.label_flow`) as :func:`~gptff_flows.run.run_flow`
labels it, so the queries find remote results as they find local ones.
"""

from __future__ import annotations

from jobflow import Flow, Job

from gptff_core.errors import StoreError
from gptff_flows.run.labels import label_flow
from gptff_flows.stores.integrity import one_line


def submit_flow(flow: Flow | Job, worker: str, project: str | None = None, **kwargs) -> list:
    """Submit ``flow`` to a jobflow-remote project's ``worker``; returns the job db ids.

    The project is checked first (:func:`check_remote_project`). ``kwargs`` go to
    :func:`jobflow_remote.submit_flow` (``exec_config``, ``resources``, ...). See
    ``workflows/jobflow_remote/`` for a project with a local and a SLURM worker.

    Raises:
        StoreError: no such project, a project file that does not parse, an unknown worker, or
            a queue database that does not answer.
    """
    from jobflow_remote import submit_flow as jfr_submit_flow

    check_remote_project(project, worker)
    label_flow(flow)
    try:
        return jfr_submit_flow(flow, worker=worker, project=project, **kwargs)
    except Exception as exc:
        if type(exc).__module__.startswith(("jobflow_remote", "pymongo", "maggma")):
            raise StoreError(
                f"jobflow-remote could not take the flow ({type(exc).__name__}: "
                f"{one_line(exc)}); check the project with `jf project check`"
            ) from exc
        raise


_HOW_TO_CREATE = (
    "create one with `jf project generate NAME` (or copy workflows/jobflow_remote/gptff.yaml) into "
    "{folder}, and select it with --project NAME or $JFREMOTE_PROJECT"
)


def check_remote_project(project: str | None = None, worker: str | None = None) -> None:
    """Refuse to submit unless jobflow-remote has ``project`` (default: its selected project)
    with ``worker``: :class:`StoreError`, one line saying how to create or select one."""
    from jobflow_remote import SETTINGS
    from jobflow_remote.config.manager import ConfigManager

    folder = SETTINGS.projects_folder
    how = _HOW_TO_CREATE.format(folder=folder)
    try:
        manager = ConfigManager()
    except Exception as exc:  # two projects with one name, an unreadable folder
        raise StoreError(f"jobflow-remote projects in {folder}: {one_line(exc)}") from None
    name = project or SETTINGS.project
    known = sorted(manager.projects_data)
    if not known:
        raise StoreError(
            f"no jobflow-remote project in {folder} (or none that parses: `jf project check`); "
            f"{how}"
        )
    if name is None and len(known) > 1:
        raise StoreError(
            f"several jobflow-remote projects ({', '.join(known)}): choose one with --project "
            "or $JFREMOTE_PROJECT"
        )
    name = name or known[0]
    if name not in manager.projects_data:
        raise StoreError(
            f"no jobflow-remote project {name!r} in {folder} (known: {', '.join(known)}; a "
            f"project file that does not parse is skipped: `jf project check`); {how}"
        )
    workers = manager.projects_data[name].project.workers
    if worker is not None and worker not in workers:
        raise StoreError(
            f"jobflow-remote project {name!r} has no worker {worker!r} (it has: "
            f"{', '.join(sorted(workers)) or 'none'}); give one of those"
        )
