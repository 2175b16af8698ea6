"""MD trajectories as the GPTFF MD jobs store them: pymatgen's ``Trajectory``, as atomate2 does.

Since document version 2 (:data:`TRAJECTORY_DOCUMENT_VERSION`, field ``document_version`` of
:class:`~gptff_flows.schemas.finetune_md.MDTemperatureDocument` and
:class:`~gptff_flows.failures.MDFailureDocument`) the ``trajectory`` of an MD document is the
:class:`pymatgen.core.trajectory.Trajectory` that atomate2's ``TrajectoryObserver`` makes
(``to_pymatgen_trajectory``), so atomate2's and pymatgen's tools read it as they read atomate2's
own force-field MD: fractional ``coords``, one ``lattice`` (Å) per frame, and per frame
``energy`` (potential, eV), ``forces`` (eV/Å), ``stress`` (eV/Å³, Voigt, ASE sign, kinetic term
included), ``velocities`` (Å per ASE time unit) and ``temperature`` (K). GPTFF adds to each frame
(:func:`add_thermo`) ``step`` (MD step), ``kinetic_energy`` and ``conserved_energy`` (eV: the
integrator's, or the total energy in NVE; absent for thermostats that conserve nothing, e.g.
Langevin), and sets ``time_step`` (fs, the MD time step).

Version 1 (documents without ``document_version``) stored ``{"format": "npz-base64", ...}``:
numpy arrays compressed into base64. :func:`load_trajectory` reads both into the same arrays.
"""

from __future__ import annotations

import base64
import copy
import io

import numpy as np
from ase import units
from pydantic import BaseModel
from pymatgen.core.periodic_table import get_el_sp
from pymatgen.core.trajectory import Trajectory

from gptff_core.errors import GPTFFInputError

TRAJECTORY_DOCUMENT_VERSION = 2
"""Document version of MD documents whose trajectory is a pymatgen ``Trajectory`` (1: npz)."""

LEGACY_FORMAT = "npz-base64"
"""The ``format`` of version-1 trajectories."""


def add_thermo(trajectory: Trajectory, thermo, time_step: float | None) -> Trajectory:
    """``trajectory`` (atomate2's, frame ``i`` recorded with ``thermo``'s record ``i``) with
    each frame's ``step``, ``kinetic_energy`` and ``conserved_energy`` (eV; left out where the
    run conserves none) from ``thermo`` (a :class:`~gptff_flows.jobs.md.ThermoObserver`) and
    ``time_step`` (fs); changed in place."""
    records = zip(thermo.steps, thermo.kinetic_energies, thermo.conserved_energies, strict=False)
    frames = trajectory.frame_properties or [{} for _ in range(len(trajectory))]
    for props, (step, kinetic, conserved) in zip(frames, records, strict=False):
        props.update(step=step, kinetic_energy=kinetic)
        if conserved is not None:
            props["conserved_energy"] = conserved
    trajectory.frame_properties = frames
    trajectory.time_step = time_step
    return trajectory


def _frame_series(frames: list[dict], key: str) -> np.ndarray | None:
    """The values of ``key`` over ``frames`` as an array (None when a frame lacks it)."""
    if not frames or any(props.get(key) is None for props in frames):
        return None
    return np.asarray([props[key] for props in frames], dtype=float)


def trajectory_arrays(trajectory: Trajectory) -> dict[str, np.ndarray]:
    """The arrays of :func:`load_trajectory` from a pymatgen ``Trajectory``; the per-frame
    quantities it lacks are left out (``steps`` and ``time_fs`` need ``step`` frames)."""
    if trajectory.coords_are_displacement:
        trajectory = copy.deepcopy(trajectory)
        trajectory.to_positions()
    n = len(trajectory)
    cells = np.asarray(trajectory.lattice, dtype=float)
    cells = np.broadcast_to(cells, (n, 3, 3)) if cells.ndim == 2 else cells
    frac = np.asarray(trajectory.coords, dtype=float)
    arrays = {
        "positions": np.einsum("fai,fij->faj", frac, cells),
        "cells": np.array(cells),
        "numbers": np.array([get_el_sp(s).Z for s in trajectory.species], dtype=int),
    }
    frames = trajectory.frame_properties or []
    names = {"step": "steps", "energy": "potential_energy", "kinetic_energy": "kinetic_energy"}
    names |= {"conserved_energy": "conserved_energy", "temperature": "temperature"}
    names |= {"forces": "forces", "velocities": "velocities"}
    for key, name in names.items():
        if (values := _frame_series(frames, key)) is not None:
            arrays[name] = values
    if "steps" in arrays:
        arrays["steps"] = arrays["steps"].astype(int)
        if trajectory.time_step is not None:
            arrays["time_fs"] = arrays["steps"] * float(trajectory.time_step)
    if (stress := _frame_series(frames, "stress")) is not None:
        diagonal = stress[:, :3] if stress.ndim == 2 else np.diagonal(stress, axis1=1, axis2=2)
        arrays["pressure"] = -diagonal.mean(axis=1) / units.GPa
    return arrays


def _legacy_arrays(trajectory: dict) -> dict[str, np.ndarray]:
    """The arrays of a version-1 trajectory (``{"format": "npz-base64", "data": ...}``)."""
    with np.load(io.BytesIO(base64.b64decode(trajectory["data"]))) as data:
        return {key: data[key] for key in data.files}


def load_trajectory(trajectory) -> dict[str, np.ndarray]:
    """Arrays of a stored MD trajectory (either document version): ``positions`` (frames,
    atoms, 3) Å Cartesian, ``cells`` (frames, 3, 3) Å rows, ``numbers``, ``steps``, ``time_fs``,
    ``potential_energy``, ``kinetic_energy``, ``conserved_energy`` (eV), ``temperature`` (K),
    ``pressure`` (GPa, kinetic term included); version 2 adds ``forces`` (eV/Å) and
    ``velocities`` (Å per ASE time unit).

    ``trajectory``: an MD document (its ``trajectory``), a pymatgen ``Trajectory``, its
    ``as_dict()`` (as a store returns it), or a version-1 ``{"format": "npz-base64", ...}``.

    Raises:
        GPTFFInputError: neither format.
    """
    if isinstance(trajectory, BaseModel):
        trajectory = trajectory.trajectory
    if isinstance(trajectory, dict) and trajectory.get("format") == LEGACY_FORMAT:
        return _legacy_arrays(trajectory)
    if isinstance(trajectory, dict) and trajectory.get("@class") == "Trajectory":
        trajectory = Trajectory.from_dict(trajectory)
    if not isinstance(trajectory, Trajectory):
        found = trajectory.get("format") if isinstance(trajectory, dict) else type(trajectory)
        raise GPTFFInputError(f"unknown trajectory format {found!r}")
    return trajectory_arrays(trajectory)
