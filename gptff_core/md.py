"""Molecular dynamics with ASE's integrators and the GPTFF calculator, as ``gptff md`` runs it:
the integrator of each ensemble, a recorder that appends frames to a trajectory as the run goes,
and the verdict on the finished run.

The verdict: the mean kinetic temperature of the second half of the run must reach the target
within :data:`TEMPERATURE_RELATIVE_TOLERANCE` of it plus :data:`TEMPERATURE_SIGMAS` canonical
standard deviations of the mean (:func:`temperature_tolerance`), and
the integrator's conserved energy (NVE: potential + kinetic) may drift by at most
:data:`MAX_DRIFT_MEV_PER_ATOM_PS`.

Units: time fs (ps in progress lines and drifts), temperature K, pressure GPa, energies eV.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from ase import units

from gptff_core.errors import ComputationError

TEMPERATURE_RELATIVE_TOLERANCE = 0.05
"""Fraction of the target by which the production mean temperature may miss it beyond its
statistical uncertainty (thermostat lag, slow drift). At Eₐ/kT ≈ 6 (0.3 eV at 600 K) a 5 % error
in T changes D by a factor exp(0.3) ≈ 1.35, about D's own statistical error on a 10–50 ps run.
The workflows' ``temperature_not_reached`` flag uses the same rule."""
TEMPERATURE_SIGMAS = 3.0
"""Multiples of the expected canonical standard deviation of the mean temperature added to the
relative tolerance (3σ: a correctly thermostatted run is flagged by chance in 0.3 % of runs)."""
MAX_DRIFT_MEV_PER_ATOM_PS = 5.0
"""meV/atom/ps: the largest drift of the conserved energy (NVE: potential + kinetic) not flagged.
A correct integrator of a smooth potential drifts by far less at 1 fs; the published networks'
energy steps where a neighbour crosses the 5 Å or 3.5 Å cutoff show up here (``--smooth``)."""
THERMOSTATS = {
    "nve": ("velocity-verlet",),
    "nvt": ("nose-hoover", "langevin"),
    "npt": ("isotropic-mtk", "mtk", "berendsen"),
}
"""Integrators of each ensemble; the first is the default."""
JUMP_MEV_PER_ATOM = 0.5
"""meV/atom: a single-step change of the conserved energy above this (and above
:data:`JUMP_OVER_MEDIAN` × the median change) is a jump. The published networks jump by 1–2
meV/atom (8-atom NaCl, 600 K, float64) where a neighbour crosses a cutoff; with ``smooth=True`` the
same run changes by 2–4·10⁻⁵ meV/atom per step (median), 2·10⁻⁴ at most."""
JUMP_OVER_MEDIAN = 100.0
"""How many times the median single-step change a jump must exceed."""
STEP_KEY = "gptff_md_step"
"""``atoms.info`` key of each trajectory frame: its MD step (used by ``--resume``)."""


@dataclass(frozen=True)
class MDSettings:
    """One MD run: ``ensemble`` (nve, nvt, npt) and its ``thermostat`` (:data:`THERMOSTATS`);
    ``temperature_K`` (target; NVE: none), ``timestep_fs``, ``pressure_GPa`` (NPT; ASE sign of
    pressure, positive = compressive), ``tdamp_fs`` / ``pdamp_fs`` (thermostat / barostat time
    constants; None: 100 / 1000 timesteps), ``friction_per_fs`` (Langevin, 1/fs),
    ``compressibility_per_GPa`` (Berendsen NPT, 1/GPa), ``interval`` (steps between frames),
    ``seed`` (Langevin noise) and ``smooth`` (whether the network has smooth cutoffs)."""

    ensemble: str
    thermostat: str
    temperature_K: float | None
    timestep_fs: float = 1.0
    pressure_GPa: float | None = None
    tdamp_fs: float | None = None
    pdamp_fs: float | None = None
    friction_per_fs: float = 0.01
    compressibility_per_GPa: float = 0.01
    interval: int = 10
    seed: int = 0
    smooth: bool = False

    @property
    def correlation_fs(self) -> float:
        """fs, the time over which the thermostat decorrelates the kinetic temperature."""
        if self.thermostat == "langevin":
            return 1.0 / self.friction_per_fs
        return self.tdamp_fs or 100 * self.timestep_fs


def set_initial_momenta(atoms, temperature_K: float | None, seed: int) -> None:
    """Give ``atoms`` (in place) Maxwell–Boltzmann momenta at ``temperature_K`` (K) drawn with
    ``numpy.random.default_rng(seed)``, without net momentum and scaled to exactly that
    temperature (a small cell starts at the target); zero momenta at 0 K or ``None``."""
    from ase.md.velocitydistribution import Stationary, force_temperature, thermalize_momenta

    atoms.set_momenta(np.zeros((len(atoms), 3)))
    if temperature_K:
        thermalize_momenta(atoms, temperature_K=temperature_K, rng=np.random.default_rng(seed))
        Stationary(atoms)
        force_temperature(atoms, temperature_K)


def make_dynamics(settings: MDSettings, atoms):
    """The ASE integrator ``settings.thermostat`` of ``atoms``, ready to run (Langevin: adds
    ASE's ``FixCom`` constraint to ``atoms``, so the centre of mass stays put)."""
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin
    from ase.md.nose_hoover_chain import MTKNPT, IsotropicMTKNPT, NoseHooverChainNVT
    from ase.md.nptberendsen import NPTBerendsen
    from ase.md.verlet import VelocityVerlet

    dt = settings.timestep_fs * units.fs
    tdamp = (settings.tdamp_fs or 100 * settings.timestep_fs) * units.fs
    pdamp = (settings.pdamp_fs or 1000 * settings.timestep_fs) * units.fs
    thermo = dict(temperature_K=settings.temperature_K)
    baro = dict(pressure_au=(settings.pressure_GPa or 0.0) * units.GPa)
    if settings.thermostat == "velocity-verlet":
        return VelocityVerlet(atoms, timestep=dt)
    if settings.thermostat == "nose-hoover":
        return NoseHooverChainNVT(atoms, dt, tdamp=tdamp, **thermo)
    if settings.thermostat == "langevin":
        rng = np.random.default_rng([settings.seed, 1])
        atoms.set_constraint([*atoms.constraints, FixCom()])  # ASE's advice over fixcm=True
        friction = settings.friction_per_fs / units.fs
        return Langevin(atoms, dt, friction=friction, fixcm=False, rng=rng, **thermo)
    if settings.thermostat in ("isotropic-mtk", "mtk"):
        cls = IsotropicMTKNPT if settings.thermostat == "isotropic-mtk" else MTKNPT
        return cls(atoms, dt, tdamp=tdamp, pdamp=pdamp, **thermo, **baro)
    compressibility = settings.compressibility_per_GPa / units.GPa
    return NPTBerendsen(
        atoms, dt, taut=tdamp, taup=pdamp, compressibility_au=compressibility, **thermo, **baro
    )


class MDRecorder:
    """Called by the integrator after every step (and at its start): records the step,
    temperature (K), potential, kinetic and conserved energy (eV); every ``settings.interval``
    steps appends a frame (its step in ``info[STEP_KEY]``) to ``trajectory`` (an open ASE
    ``Trajectory``) and hands :func:`progress_line` to ``progress`` (None: no progress).
    ``first_step`` is the step the run starts from; ``resumed``: that frame is written already."""

    def __init__(
        self,
        dynamics,
        trajectory,
        settings: MDSettings,
        first_step: int = 0,
        resumed: bool = False,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.dynamics, self.trajectory, self.first_step = dynamics, trajectory, first_step
        self.interval, self.timestep, self.progress = (
            settings.interval,
            settings.timestep_fs,
            progress,
        )
        self.hamiltonian = settings.thermostat == "velocity-verlet"
        self.steps, self.temperatures, self.potential, self.kinetic = [], [], [], []
        self.conserved: list[float | None] = []
        self.frames = 0
        self.last_written: int | None = first_step if resumed else None

    def __call__(self) -> None:
        atoms, step = self.dynamics.atoms, self.first_step + self.dynamics.nsteps
        energy, kinetic = float(atoms.get_potential_energy()), float(atoms.get_kinetic_energy())
        if not math.isfinite(energy) or not math.isfinite(kinetic):
            kept = (
                "no frame was written"
                if self.last_written is None
                else (f"the frames up to step {self.last_written} are kept in the trajectory")
            )
            raise ComputationError(
                f"step {step}: the energy is not finite (atoms too close or flying apart?); {kept}"
            )
        conserved = getattr(self.dynamics, "get_conserved_energy", None)
        conserved = float(conserved()) if conserved else None
        if self.hamiltonian:
            conserved = energy + kinetic
        self.steps.append(step)
        self.temperatures.append(float(atoms.get_temperature()))
        self.potential.append(energy)
        self.kinetic.append(kinetic)
        self.conserved.append(conserved)
        if step % self.interval == 0 and step != self.last_written:
            self.write()

    def write(self) -> None:
        """Append the current frame (with its step in ``info``) and print its progress line."""
        atoms, step = self.dynamics.atoms, self.steps[-1]
        atoms.info[STEP_KEY] = step
        self.trajectory.write(atoms)
        self.frames += 1
        self.last_written = step
        if self.progress is not None:
            self.progress(progress_line(atoms, step, self.timestep))

    def finish(self, completed: bool) -> None:
        """Write the last step if the run ``completed`` and it is not written yet; close."""
        if completed and self.steps and self.steps[-1] != self.last_written:
            self.write()
        self.trajectory.close()


def progress_line(atoms, step: int, timestep_fs: float) -> str:
    """``step, time (ps), T (K), Epot and Etot (eV/atom), P (GPa)`` of ``atoms`` now."""
    n = len(atoms)
    energy, kinetic = atoms.get_potential_energy(), atoms.get_kinetic_energy()
    pressure = "n/a"
    if atoms.pbc.all() and atoms.cell.volume > 0:
        stress = atoms.get_stress(include_ideal_gas=True)
        pressure = f"{-float(np.mean(stress[:3])) / units.GPa:8.3f}"
    return (
        f"step {step:7d}  t {step * timestep_fs / 1000:9.4f} ps  "
        f"T {atoms.get_temperature():8.1f} K  Epot {energy / n:11.6f}  "
        f"Etot {(energy + kinetic) / n:11.6f} eV/atom  P {pressure} GPa"
    )


def temperature_tolerance(
    target: float, n_atoms: int, duration_fs: float, correlation_fs: float
) -> tuple[float, float, float]:
    """How far (K) a run's mean kinetic temperature may miss ``target`` (K): returns
    ``(σ_mean, n_eff, tolerance)``. In the canonical ensemble the temperature of ``n_atoms`` atoms
    with the total momentum fixed (3N − 3 degrees of freedom) fluctuates with σ = T·sqrt(2/(3N −
    3)); it stays correlated over about the thermostat time ``correlation_fs`` (fs), so a run of
    ``duration_fs`` (fs) holds n_eff = max(1, duration / (2·correlation)) independent samples and
    σ_mean = σ/sqrt(n_eff); tolerance = :data:`TEMPERATURE_RELATIVE_TOLERANCE`·target +
    :data:`TEMPERATURE_SIGMAS`·σ_mean."""
    n_effective = max(1.0, float(duration_fs) / (2.0 * float(correlation_fs)))
    std_of_mean = target * math.sqrt(2.0 / max(3 * int(n_atoms) - 3, 1)) / math.sqrt(n_effective)
    tolerance = TEMPERATURE_RELATIVE_TOLERANCE * target + TEMPERATURE_SIGMAS * std_of_mean
    return std_of_mean, n_effective, tolerance


def md_verdict(settings: MDSettings, recorder: MDRecorder, n_atoms: int) -> dict:
    """Mean temperature (K) of the second half of the run against the target (NVT/NPT), and the
    drift and jumps of the conserved energy; ``flags`` names what is not to be trusted: a
    temperature not reached, and (NVE, where the run's meaning rests on energy conservation) a
    drift or jumps. A thermostat absorbs those, so for NVT/NPT they go to ``notes``."""
    steps = np.asarray(recorder.steps[1:], dtype=float)  # the steps run, without the start
    temperatures = np.asarray(recorder.temperatures[1:])
    half = slice(len(steps) // 2, None)
    verdict: dict = dict(flags={}, notes={}, mean_temperature_K=None, temperature_tolerance_K=None)
    energy_checks = verdict["flags" if settings.ensemble == "nve" else "notes"]
    if len(steps) == 0:
        return verdict | conserved_energy_checks(settings, recorder, n_atoms, energy_checks)
    verdict["mean_temperature_K"] = mean = float(temperatures[half].mean())
    if settings.ensemble != "nve":
        target = settings.temperature_K
        duration_fs = max(len(steps[half]), 1) * settings.timestep_fs
        _, _, tolerance = temperature_tolerance(
            target, n_atoms, duration_fs, settings.correlation_fs
        )
        verdict["temperature_tolerance_K"] = tolerance
        if abs(mean - target) > tolerance:
            verdict["flags"]["temperature_not_reached"] = (
                f"temperature not reached: mean T of the second half {mean:.0f} K misses the "
                f"{target:g} K target by {abs(mean - target):.0f} K (tolerance ±{tolerance:.0f} "
                "K); run longer, or use a shorter --tdamp / larger --friction"
            )
    return verdict | conserved_energy_checks(settings, recorder, n_atoms, energy_checks)


def conserved_energy_checks(
    settings: MDSettings, recorder: MDRecorder, n_atoms: int, flags: dict
) -> dict:
    """Drift (meV/atom/ps, a straight-line fit) and jumps (single-step changes, meV/atom) of the
    conserved energy, where the integrator has one; adds ``energy_drift`` / ``energy_jump``
    (with their reasons) to ``flags``. A jump is a step change above :data:`JUMP_MEV_PER_ATOM` and
    :data:`JUMP_OVER_MEDIAN` times the median step change (integration noise is far smaller)."""
    found = dict(conserved_drift_meV_per_atom_ps=None, energy_jumps=None)
    found["largest_conserved_step_meV_per_atom"] = None
    conserved = recorder.conserved
    if len(conserved) < 3 or any(value is None for value in conserved):
        return found
    time_ps = np.asarray(recorder.steps, dtype=float) * settings.timestep_fs / 1000
    per_atom_mev = 1000 * (np.asarray(conserved) - conserved[0]) / n_atoms
    drift = float(np.polyfit(time_ps, per_atom_mev, 1)[0])
    changes = np.abs(np.diff(per_atom_mev))
    limit = max(JUMP_MEV_PER_ATOM, JUMP_OVER_MEDIAN * float(np.median(changes)))
    jumps = int((changes > limit).sum())
    found.update(conserved_drift_meV_per_atom_ps=drift, energy_jumps=jumps)
    found["largest_conserved_step_meV_per_atom"] = float(changes.max())
    hint = "" if settings.smooth else "; the network's energy steps where a neighbour crosses a "
    hint += "" if settings.smooth else "cutoff (--smooth removes them)"
    if jumps:
        flags["energy_jump"] = (
            f"the conserved energy jumps {jumps} times (largest {changes.max():.2f} meV/atom in "
            f"one step){hint or '; use a shorter --timestep'}"
        )
    if abs(drift) > MAX_DRIFT_MEV_PER_ATOM_PS:
        flags["energy_drift"] = (
            f"the conserved energy drifts by {drift:.2f} meV/atom/ps (limit "
            f"{MAX_DRIFT_MEV_PER_ATOM_PS:g}){hint if jumps else '; use a shorter --timestep'}"
        )
    return found
