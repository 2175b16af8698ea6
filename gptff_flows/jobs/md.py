"""Molecular dynamics shared by the workflows: the ASE integrators, and a recorder of the run.

:data:`DYNAMICS` names the integrators the fine-tune-then-MD and tensile flows use;
:func:`recording_dynamics` subclasses one so that it records positions, cell, energies,
temperature and pressure every ``interval`` steps; :func:`record_arrays` turns the records into
arrays and :func:`conserved_drift` measures the drift of the conserved energy.

Units: time fs, energies eV, temperature K, pressure GPa, lengths Å.
"""

from __future__ import annotations

import logging
import time
from typing import ClassVar

import numpy as np
from ase import units
from ase.md.md import MolecularDynamics
from ase.md.nose_hoover_chain import MTKNPT, NoseHooverChainNVT
from ase.md.verlet import VelocityVerlet

logger = logging.getLogger(__name__)

KBAR = 1e3 * units.bar
"""eV/Å³ per kbar (atomate2's pressure unit)."""

DYNAMICS = {"nve": VelocityVerlet, "nvt": NoseHooverChainNVT, "npt": MTKNPT}
"""ASE integrators: velocity Verlet (NVE), Nosé–Hoover chain (NVT) and MTK (NPT); the
thermostatted ones have a conserved energy whose drift the documents report."""


def recording_dynamics(
    base: type[MolecularDynamics], interval: int, total_steps: int | None = None
) -> type:
    """A subclass of the ASE integrator ``base`` that records, every ``interval`` steps (and at
    step 0), positions, cell, potential, kinetic and conserved energy, temperature and pressure
    into ``instance.records``; ``cls.instances`` lists the instances created. With
    ``total_steps``, progress (step, T K, P GPa, ms/step) is logged at INFO about every tenth of
    the run."""
    log_every = None if total_steps is None else max(1, total_steps // 10)

    class Recording(base):
        instances: ClassVar[list] = []

        def __init__(self, atoms, *args, **kwargs):
            super().__init__(atoms, *args, **kwargs)
            self.records: list[tuple] = []
            self._started = time.perf_counter()
            type(self).instances.append(self)
            self.attach(self._record, interval=interval)
            if log_every is not None:
                self.attach(self._log_progress, interval=log_every)

        def set_temperature(self, temperature_K=None, **_):  # atomate2 calls it every step
            thermostat = getattr(self, "_thermostat", None)
            if thermostat is not None and temperature_K is not None:
                thermostat._kT = units.kB * temperature_K

        def _record(self):
            atoms = self.atoms
            potential = atoms.get_potential_energy()
            kinetic = atoms.get_kinetic_energy()
            conserved = (
                self.get_conserved_energy()
                if hasattr(self, "get_conserved_energy")
                else potential + kinetic
            )
            stress = atoms.get_stress(include_ideal_gas=True)
            self.records.append(
                (
                    self.nsteps,
                    atoms.get_positions(),
                    atoms.cell.array.copy(),
                    potential,
                    kinetic,
                    conserved,
                    atoms.get_temperature(),
                    -float(np.mean(stress[:3])) / units.GPa,
                )
            )

        def _log_progress(self):
            if self.nsteps == 0:
                return
            stress = self.atoms.get_stress(include_ideal_gas=True)
            logger.info(
                "%s: step %d/%d, T %.0f K, P %.2f GPa, %.0f ms/step",
                base.__name__,
                self.nsteps,
                total_steps,
                self.atoms.get_temperature(),
                -float(np.mean(stress[:3])) / units.GPa,
                1e3 * (time.perf_counter() - self._started) / self.nsteps,
            )

    Recording.__name__ = f"Recording{base.__name__}"
    return Recording


def conserved_drift(time_fs: np.ndarray, conserved: np.ndarray, n_atoms: int):
    """(slope eV/atom/ps, largest deviation eV/atom) of the conserved energy."""
    if len(time_fs) < 2:
        return None, None
    per_atom = (conserved - conserved[0]) / n_atoms
    slope = np.polyfit(time_fs * units.fs / (1000 * units.fs), per_atom, 1)[0]
    return float(slope), float(np.abs(per_atom).max())


def record_arrays(records: list[tuple], time_step: float) -> dict[str, np.ndarray]:
    """The recorder's frames as arrays: ``steps``, ``time_fs`` (fs), ``positions`` (Å),
    ``cells`` (Å), ``potential_energy``, ``kinetic_energy``, ``conserved_energy`` (eV),
    ``temperature`` (K), ``pressure`` (GPa)."""
    steps = np.array([r[0] for r in records], dtype=int)
    n = len(records)
    series = np.array([r[3:] for r in records], dtype=float).reshape(n, 5).T
    names = ("potential_energy", "kinetic_energy", "conserved_energy", "temperature", "pressure")
    return dict(
        steps=steps,
        time_fs=steps * time_step,
        positions=np.array([r[1] for r in records], dtype=float).reshape(n, -1, 3),
        cells=np.array([r[2] for r in records], dtype=float).reshape(n, 3, 3),
        **dict(zip(names, series, strict=True)),
    )
