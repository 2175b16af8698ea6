"""Batched molecular dynamics of many structures through the TorchSim model: every step is one
evaluation of the whole batch on the model's device, each structure's frames go to its own ASE
``.traj`` file as the run goes, and each gets the verdict of :func:`gptff_core.md.md_verdict`.

Integrators (TorchSim 0.3): NVE velocity Verlet (``torch_sim.nve``) and NVT Langevin
(``torch_sim.nvt_langevin``, BAOAB). TorchSim 0.3's Nosé–Hoover chain is one thermostat for the
whole batch (it fails for more than one system) and its barostats are not offered here, so those
ensembles run one structure at a time with ASE (:mod:`gptff_core.md`).

The structures must share their periodicity (TorchSim 0.3 holds one ``pbc`` for the whole state):
all 3D periodic, or none periodic. Units: time fs (ps in progress lines), temperature K, energy eV,
positions Å, momenta in ASE units (as the trajectories store them).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator

from gptff_core.errors import ComputationError, GPTFFInputError
from gptff_core.md import STEP_KEY, MDSettings

BATCH_THERMOSTATS = {"nve": ("velocity-verlet",), "nvt": ("langevin",)}
"""Integrators of the batched path for each ensemble (the first is the default)."""


@dataclass
class SystemRecord:
    """What a batched run recorded for one structure at every step (the fields
    :func:`gptff_core.md.md_verdict` reads): step, temperature (K), potential, kinetic and
    conserved energy (eV; conserved ``None`` without a Hamiltonian integrator), frames written."""

    first_step: int = 0
    steps: list[int] = field(default_factory=list)
    temperatures: list[float] = field(default_factory=list)
    potential: list[float] = field(default_factory=list)
    kinetic: list[float] = field(default_factory=list)
    conserved: list[float | None] = field(default_factory=list)
    frames: int = 0


def check_batch(atoms_list: Sequence[Atoms], settings: MDSettings, names: Sequence[str]) -> None:
    """Refuse (one line) a batch TorchSim 0.3 cannot run: a thermostat without a batched
    integrator, or structures that are partly periodic or differ in periodicity (``names``
    label the structures in the message)."""
    allowed = BATCH_THERMOSTATS.get(settings.ensemble, ())
    if settings.thermostat not in allowed:
        offered = ", ".join(f"{e} {' or '.join(t)}" for e, t in BATCH_THERMOSTATS.items())
        raise GPTFFInputError(
            f"batched MD (several FILEs or --batch) runs {offered}; --ensemble "
            f"{settings.ensemble} --thermostat {settings.thermostat} runs one FILE at a time"
        )
    kinds = [bool(a.pbc.all()) if a.pbc.all() or not a.pbc.any() else None for a in atoms_list]
    for name, kind, atoms in zip(names, kinds, atoms_list, strict=True):
        if kind is None:
            raise GPTFFInputError(
                f"{name}: batched MD needs every structure fully periodic or not periodic at "
                f"all (pbc {''.join('T' if p else 'F' for p in atoms.pbc)} is neither)"
            )
    if len(set(kinds)) > 1:
        periodic = [n for n, k in zip(names, kinds, strict=True) if k]
        molecular = [n for n, k in zip(names, kinds, strict=True) if not k]
        raise GPTFFInputError(
            f"batched MD needs the same pbc for every structure (TorchSim 0.3): {periodic[0]} is "
            f"periodic, {molecular[0]} is not; run them in separate batches"
        )


def make_integrator(settings: MDSettings, model) -> tuple[Callable, Callable]:
    """TorchSim's ``(init_fn, update_fn)`` of ``settings`` for ``model`` (its device and dtype):
    timestep and friction converted from fs and 1/fs to ASE's time unit (TorchSim's metal
    units), temperature to kT in eV."""
    import torch_sim as ts

    def scalar(value: float) -> torch.Tensor:
        return torch.tensor(value, device=model.device, dtype=model.dtype)

    dt = scalar(settings.timestep_fs * units.fs)
    kT = scalar((settings.temperature_K or 0.0) * units.kB)
    if settings.thermostat == "velocity-verlet":
        return ts.nve(model, dt=dt, kT=kT)
    gamma = scalar(settings.friction_per_fs / units.fs)
    return ts.nvt_langevin(model, dt=dt, kT=kT, gamma=gamma, seed=settings.seed)


def _per_system(state) -> tuple[list[float], list[float]]:
    """Potential and kinetic energy (eV) of every system, with one host sync."""
    kinetic = (state.momenta**2).sum(dim=1) / (2 * state.masses)
    per_system = torch.zeros_like(state.energy).index_add(0, state.system_idx, kinetic)
    potential, kinetic = torch.stack([state.energy, per_system]).double().cpu().tolist()
    return potential, kinetic


def _record(records, state, step: int, hamiltonian: bool, sizes: Sequence[int]) -> None:
    """Append step ``step`` of ``state`` to every system's :class:`SystemRecord`."""
    potential, kinetic = _per_system(state)
    for index, (record, energy, kin) in enumerate(zip(records, potential, kinetic, strict=True)):
        if not (math.isfinite(energy) and math.isfinite(kin)):
            kept = "no frame was written" if step == 0 else "the frames written are kept"
            raise ComputationError(
                f"step {step}: the energy of structure {index} is not finite (atoms too close "
                f"or flying apart?); {kept}"
            )
        record.steps.append(step)
        record.temperatures.append(2 * kin / (3 * sizes[index] * units.kB))
        record.potential.append(energy)
        record.kinetic.append(kin)
        record.conserved.append(energy + kin if hamiltonian else None)


def _write_frames(writers, templates: Sequence[Atoms], state, step: int, records) -> None:
    """Append the current frame of every system (positions, momenta, cell, energy, forces, its
    step in ``info[STEP_KEY]``) to its open ASE ``Trajectory``."""
    positions = state.positions.detach().double().cpu().numpy()
    momenta = state.momenta.detach().double().cpu().numpy()
    forces = state.forces.detach().double().cpu().numpy()
    start = 0
    for writer, template, record in zip(writers, templates, records, strict=True):
        stop = start + len(template)
        atoms = template.copy()
        atoms.set_positions(positions[start:stop])
        atoms.set_momenta(momenta[start:stop])
        atoms.calc = SinglePointCalculator(
            atoms, energy=record.potential[-1], forces=forces[start:stop]
        )
        atoms.info[STEP_KEY] = step
        writer.write(atoms)
        record.frames += 1
        start = stop


def batch_progress_line(records: Sequence[SystemRecord], timestep_fs: float) -> str:
    """``step, time (ps)`` and the mean (min, max) over the systems of T (K), and the mean
    potential energy per atom (eV) of the last recorded step."""
    step = records[0].steps[-1]
    temperatures = np.array([r.temperatures[-1] for r in records])
    return (
        f"step {step:7d}  t {step * timestep_fs / 1000:9.4f} ps  {len(records)} systems  "
        f"T mean {temperatures.mean():8.1f} K (min {temperatures.min():.1f}, max "
        f"{temperatures.max():.1f})"
    )


def run_batched_md(
    atoms_list: Sequence[Atoms],
    model,
    settings: MDSettings,
    steps: int,
    trajectories: Sequence,
    progress: Callable[[str], None] | None = None,
) -> tuple[list[SystemRecord], bool]:
    """Run ``steps`` MD steps of every structure of ``atoms_list`` as one TorchSim batch.

    Args:
        atoms_list: the structures, their momenta (ASE units) the initial ones (not modified).
        model: a TorchSim model (:class:`~gptff_core.torchsim.GPTFFTorchSimModel`, or a
            :class:`~gptff_core.torchsim_d3.SumTorchSimModel` with D3); its device and dtype.
        settings: ensemble and thermostat of :data:`BATCH_THERMOSTATS`, timestep (fs),
            temperature (K), friction (1/fs), interval (steps between frames), seed (of the
            Langevin noise, drawn from torch's generator forked for the run).
        steps: number of MD steps.
        trajectories: one ASE ``.traj`` path per structure, written (``"w"``) as the run goes:
            step 0, every ``settings.interval`` steps, and the last step.
        progress: called with :func:`batch_progress_line` at every frame (None: silent).

    Returns:
        (one :class:`SystemRecord` per structure, whether Ctrl-C stopped the run).

    Raises:
        ComputationError: a non-finite energy (the frames written before it are kept).
    """
    import torch_sim as ts
    from ase.io import Trajectory

    init_fn, update_fn = make_integrator(settings, model)
    state = ts.initialize_state(list(atoms_list), model.device, model.dtype)
    momenta = np.concatenate([a.get_momenta() for a in atoms_list])
    state = init_fn(state)
    state.momenta = torch.as_tensor(momenta, device=model.device, dtype=model.dtype)
    records = [SystemRecord() for _ in atoms_list]
    sizes, hamiltonian = [len(a) for a in atoms_list], settings.thermostat == "velocity-verlet"
    writers = [Trajectory(path, "w") for path in trajectories]
    templates = [a.copy() for a in atoms_list]
    devices = [model.device] if model.device.type == "cuda" else []
    interrupted = False
    try:
        with torch.random.fork_rng(devices=devices):  # seeds the Langevin noise, locally
            torch.manual_seed(settings.seed)
            for step in range(steps + 1):
                _record(records, state, step, hamiltonian, sizes)
                if step % settings.interval == 0 or step == steps:
                    _write_frames(writers, templates, state, step, records)
                    if progress is not None:
                        progress(batch_progress_line(records, settings.timestep_fs))
                if step < steps:
                    state = _step(update_fn, state, step)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        for writer in writers:
            writer.close()
    return records, interrupted


def _step(update_fn, state, step: int):
    """One integrator step; a structure the model refuses mid-run (atoms too close) or a
    non-finite result stops the run as a :class:`ComputationError` naming the step."""
    try:
        return update_fn(state)
    except (GPTFFInputError, ComputationError) as error:
        raise ComputationError(f"step {step + 1}: {error}; the frames written are kept") from None
