"""Molecular dynamics shared by the workflows: the ASE integrators, and what GPTFF observes of a
run besides atomate2's trajectory.

:data:`DYNAMICS` names the integrators the fine-tune-then-MD and tensile flows use. atomate2's
MD Maker (:class:`~gptff_flows.jobs.GPTFFMDMaker`) records positions, cells, energies, forces,
stresses, velocities and temperatures with its ``TrajectoryObserver``; :class:`ThermoObserver`
adds the kinetic energy and the integrator's conserved energy (attached through ASE's public
``attach``), :class:`ProgressLog` logs the run's progress, and :func:`conserved_drift` measures
the drift of the conserved energy.

Units: time fs, energies eV, temperature K, pressure GPa, lengths Å.
"""

from __future__ import annotations

import logging
import time

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


class ThermoObserver:
    """Records, each time ``dynamics`` calls it, the step, the kinetic energy (eV) and the
    conserved energy (eV): the integrator's ``get_conserved_energy()`` where it has one (the
    Nosé–Hoover-chain and MTK integrators), else, for a Hamiltonian run (``hamiltonian``: NVE,
    velocity Verlet), potential + kinetic energy, else None (Langevin, Berendsen ... conserve
    nothing that could be recorded).

    Attach it at the interval of atomate2's trajectory observer so that frame ``i`` of both
    describes the same step: ``dynamics.attach(observer, interval=traj_interval)``.
    """

    def __init__(self, dynamics: MolecularDynamics, hamiltonian: bool = False) -> None:
        self.dynamics, self.hamiltonian = dynamics, hamiltonian
        self.steps: list[int] = []
        self.kinetic_energies: list[float] = []
        self.conserved_energies: list[float | None] = []

    def __call__(self) -> None:
        atoms = self.dynamics.atoms
        kinetic = float(atoms.get_kinetic_energy())
        conserved = getattr(self.dynamics, "get_conserved_energy", None)
        if conserved is not None:
            conserved = float(conserved())
        elif self.hamiltonian:
            conserved = float(atoms.get_potential_energy() + kinetic)
        self.steps.append(int(self.dynamics.nsteps))
        self.kinetic_energies.append(kinetic)
        self.conserved_energies.append(conserved)


class ProgressLog:
    """Logs at INFO, each time ``dynamics`` calls it after step 0: step, temperature (K),
    pressure (GPa, kinetic term included) and the wall time per step (ms)."""

    def __init__(self, dynamics: MolecularDynamics, total_steps: int, label: str) -> None:
        self.dynamics, self.total_steps, self.label = dynamics, total_steps, label
        self.started = time.perf_counter()

    def __call__(self) -> None:
        steps = self.dynamics.nsteps
        if steps == 0:
            return
        atoms = self.dynamics.atoms
        stress = atoms.get_stress(include_ideal_gas=True)
        logger.info(
            "%s: step %d/%d, T %.0f K, P %.2f GPa, %.0f ms/step",
            self.label,
            steps,
            self.total_steps,
            atoms.get_temperature(),
            -float(np.mean(stress[:3])) / units.GPa,
            1e3 * (time.perf_counter() - self.started) / steps,
        )


def conserved_drift(time_fs: np.ndarray, conserved: np.ndarray, n_atoms: int):
    """(slope eV/atom/ps, largest deviation eV/atom) of the conserved energy."""
    if len(time_fs) < 2:
        return None, None
    per_atom = (conserved - conserved[0]) / n_atoms
    slope = np.polyfit(time_fs * units.fs / (1000 * units.fs), per_atom, 1)[0]
    return float(slope), float(np.abs(per_atom).max())
