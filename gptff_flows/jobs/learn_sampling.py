"""Sampling of the active-learning loop (:mod:`gptff_flows.jobs.learn`): MD with the current
model, frames recorded with their committee uncertainty, and the frames chosen for labelling.

Each iteration runs one MD per input structure and temperature, from the input structure (its
``supercell``) with Maxwell–Boltzmann velocities drawn from a seed fixed by (``seed``,
iteration, structure, temperature): a resumed run samples exactly the frames it sampled before
(same model, same seeds), so it asks for the same labels and finds them stored. Iteration 0
runs the base model (no uncertainty); later iterations the committee's mean
(:class:`~gptff_core.committee.CommitteeCalculator`), each recorded frame scored by the
committee's frame uncertainty (eV/Å, the largest per-atom force disagreement). Frames are
recorded every ``sample_interval`` steps after the start. An MD run that fails (atoms too
close, a non-finite force) keeps the frames recorded so far and says why.

Integrators: :data:`~gptff_flows.jobs.md.DYNAMICS` (NVT: Nosé–Hoover chain, NPT: MTK), thermostat
time constant 100 time steps, barostat 1000. Units: fs, K, GPa, Å, eV/Å.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from ase import Atoms, units
from ase.md.velocitydistribution import Stationary, thermalize_momenta
from pymatgen.core import Structure
from pymatgen.io.ase import AseAtomsAdaptor

from gptff_flows.analysis.selection import select_frames
from gptff_flows.jobs.md import DYNAMICS
from gptff_flows.schemas.learn import SamplingSummary

logger = logging.getLogger(__name__)


@dataclass
class Candidate:
    """A sampled frame: ``atoms`` (bare copy, Å), where it came from, its uncertainty (eV/Å;
    None without a committee)."""

    atoms: Atoms
    structure_index: int
    temperature: float
    step: int
    uncertainty: float | None


def md_cell(structure: Structure, supercell: Sequence[int]) -> Atoms:
    """The ``supercell`` of ``structure`` as bare periodic ASE Atoms."""
    cell = structure.copy()
    cell.make_supercell(list(supercell))
    atoms = AseAtomsAdaptor.get_atoms(cell)
    return Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=True)


def _dynamics(atoms: Atoms, temperature: float, options: dict):
    """The ASE integrator of ``options['ensemble']`` at ``temperature`` (K)."""
    step = options["time_step"] * units.fs
    kwargs = dict(timestep=step, temperature_K=temperature, tdamp=100 * step)
    if options["ensemble"] == "npt":
        kwargs |= dict(pressure_au=options["pressure"] * units.GPa, pdamp=1000 * step)
    return DYNAMICS[options["ensemble"]](atoms, **kwargs)


def run_md(
    atoms: Atoms, calculator, temperature: float, options: dict, rng: np.random.Generator
) -> tuple[list[tuple[int, Atoms, float | None]], str | None]:
    """MD of ``atoms`` with ``calculator`` at ``temperature`` (K) for ``md_steps``; returns
    ``([(step, frame, uncertainty eV/Å or None)], why it stopped early or None)``."""
    atoms = atoms.copy()
    thermalize_momenta(atoms, temperature_K=temperature, rng=rng)
    Stationary(atoms)
    atoms.calc = calculator
    dynamics = _dynamics(atoms, temperature, options)
    frames: list[tuple[int, Atoms, float | None]] = []

    def record() -> None:
        if dynamics.nsteps == 0:
            return
        atoms.get_forces()  # computed already by the step; makes sure the results are current
        score = calculator.results.get("uncertainty")
        bare = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=True)
        frames.append((int(dynamics.nsteps), bare, None if score is None else float(score)))

    dynamics.attach(record, interval=options["sample_interval"])
    try:
        dynamics.run(options["md_steps"])
    except Exception as error:  # an unstable model: keep the frames so far, say why
        reason = f"{temperature:g} K: stopped at step {dynamics.nsteps}: {error}"
        logger.warning("sampling MD %s", reason)
        return frames, reason
    return frames, None


def md_rng(seed: int, iteration: int, structure_index: int, temperature_index: int):
    """The velocity generator of one MD run, fixed by its place in the loop."""
    return np.random.default_rng([seed, iteration, structure_index, temperature_index])


def sample(
    structures: Sequence[Structure], calculator, options: dict, iteration: int, sampler: str
) -> tuple[list[Candidate], SamplingSummary]:
    """MD of every structure at every temperature; the frames and their summary."""
    start = time.perf_counter()
    candidates, failures = [], []
    for s, structure in enumerate(structures):
        atoms = md_cell(structure, options["supercell"])
        for t, temperature in enumerate(options["temperatures"]):
            rng = md_rng(options["seed"], iteration, s, t)
            frames, failure = run_md(atoms, calculator, float(temperature), options, rng)
            candidates += [Candidate(f, s, float(temperature), step, u) for step, f, u in frames]
            if failure:
                failures.append(f"structure {s} at {failure}")
    scores = [c.uncertainty for c in candidates if c.uncertainty is not None]
    summary = SamplingSummary(
        sampler=sampler,
        n_candidates=len(candidates),
        mean_uncertainty=float(np.mean(scores)) if scores else None,
        max_uncertainty=float(np.max(scores)) if scores else None,
        md_failures=failures,
        elapsed_s=time.perf_counter() - start,
    )
    return candidates, summary


def choose(candidates: list[Candidate], options: dict, iteration: int):
    """The :class:`~gptff_flows.analysis.selection.Selection` of ``frames_per_iteration``
    candidates: by uncertainty (iteration ≥ 1) or farthest-point (iteration 0), at least
    ``min_distance`` Å apart; and which of the selected are held out (a seeded choice of
    ``round(holdout_fraction × selected)``, at least one when the fraction is positive and at
    most all but one)."""
    scored = iteration > 0 and all(c.uncertainty is not None for c in candidates)
    selection = select_frames(
        [c.atoms for c in candidates],
        options["frames_per_iteration"],
        options["min_distance"],
        scores=[c.uncertainty for c in candidates] if scored else None,
    )
    n = len(selection.indices)
    fraction = options["holdout_fraction"]
    n_holdout = 0 if fraction <= 0 or n < 2 else min(n - 1, max(1, round(fraction * n)))
    order = np.random.default_rng([options["seed"], iteration, 7]).permutation(n)
    holdout = {selection.indices[i] for i in order[:n_holdout]}
    return selection, holdout
