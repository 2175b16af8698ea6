"""Structure relaxation with any ASE calculator (GPTFF's in practice): positions and, for a 3D
periodic structure, the cell through :class:`ase.filters.FrechetCellFilter`.

Units: eV, Å, eV/Å, eV/Å³ (ASE sign: positive = tensile). The input structure is never modified;
the relaxed copy comes back in :class:`RelaxResult`. An interrupted run (Ctrl-C) raises
:class:`RelaxInterrupted`, a ``KeyboardInterrupt`` that carries the structure reached so far.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError
from ase.calculators.singlepoint import SinglePointCalculator
from ase.filters import FrechetCellFilter
from ase.optimize import BFGS, FIRE
from ase.optimize.optimize import Optimizer
from ase.stress import voigt_6_to_full_3x3_stress
from tqdm.auto import tqdm

from gptff_core.errors import GPTFFInputError
from gptff_core.validation import as_atoms

logger = logging.getLogger(__name__)

OPTIMIZERS = {"FIRE": FIRE, "BFGS": BFGS}
"""Optimizers accepted by :func:`relax` (names are case-insensitive)."""

ProgressCallback = Callable[[int, float, float], None]
"""Called after every step with (step, energy in eV, max atomic |F| in eV/Å)."""


@dataclass
class RelaxResult:
    """Outcome of :func:`relax`.

    Attributes:
        atoms: the relaxed structure (a copy; a SinglePointCalculator holds the final results).
        initial_energy: eV, before the first step.
        energy: eV, of the final structure.
        forces: (n_atoms, 3) eV/Å, of the final structure.
        stress: (3, 3) eV/Å³, positive = tensile; None when the cell has no volume.
        n_steps: optimizer steps taken.
        converged: every force (and, with the cell, every stress term of the filter) below fmax.
        cell_relaxed: whether the cell was a degree of freedom.
    """

    atoms: Atoms
    initial_energy: float
    energy: float
    forces: np.ndarray
    stress: np.ndarray | None
    n_steps: int
    converged: bool
    cell_relaxed: bool

    @property
    def max_force(self) -> float:
        """Largest atomic force norm, eV/Å."""
        return float(np.linalg.norm(self.forces, axis=1).max()) if len(self.forces) else 0.0


class RelaxInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`relax`; ``atoms`` is the structure reached after ``n_steps`` steps."""

    def __init__(self, atoms: Atoms, n_steps: int):
        super().__init__(f"relaxation interrupted after {n_steps} steps")
        self.atoms = atoms
        self.n_steps = n_steps


def has_volume(atoms: Atoms) -> bool:
    """True for a 3D periodic structure whose cell has a non-zero volume."""
    return bool(np.all(atoms.pbc)) and abs(float(atoms.cell.volume)) > 1e-8


def check_options(fmax: float, steps: int, optimizer: str) -> type:
    """The optimizer class named by ``optimizer``, after checking ``fmax`` (eV/Å, positive) and
    ``steps`` (a non-negative integer); raises :class:`GPTFFInputError` otherwise."""
    if isinstance(fmax, bool) or not isinstance(fmax, int | float) or not math.isfinite(fmax):
        raise GPTFFInputError(f"fmax must be a finite number of eV/Å, got {fmax!r}")
    if fmax <= 0:
        raise GPTFFInputError(f"fmax must be positive (eV/Å), got {fmax}")
    if isinstance(steps, bool) or not isinstance(steps, int | np.integer) or steps < 0:
        raise GPTFFInputError(f"steps must be a non-negative integer, got {steps!r}")
    key = optimizer.upper() if isinstance(optimizer, str) else None
    if key not in OPTIMIZERS:
        raise GPTFFInputError(
            f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}"
        )
    return OPTIMIZERS[key]


def _final_state(atoms: Atoms) -> tuple[float, np.ndarray, np.ndarray | None]:
    energy = float(atoms.get_potential_energy())
    forces = np.array(atoms.get_forces(), dtype=np.float64)
    stress = None
    if has_volume(atoms):
        try:
            stress = voigt_6_to_full_3x3_stress(atoms.get_stress())
        except PropertyNotImplementedError:
            stress = None
    if not math.isfinite(energy) or not np.isfinite(forces).all():
        raise GPTFFInputError("the calculator returned a non-finite energy or forces")
    return energy, forces, stress


def relax(
    atoms: object,
    calculator: Calculator,
    *,
    fmax: float = 0.05,
    steps: int = 500,
    optimizer: str = "FIRE",
    relax_cell: bool = True,
    trajectory: str | os.PathLike | None = None,
    progress: bool | ProgressCallback = False,
) -> RelaxResult:
    """Relax ``atoms`` (ASE Atoms or pymatgen Structure) with ``calculator``.

    Args:
        atoms: the starting structure (not modified); positions and cell in Å.
        calculator: an ASE calculator, e.g. :class:`~gptff_core.GPTFFCalculator`.
        fmax: eV/Å, convergence threshold on the largest force (with the cell, on the
            FrechetCellFilter's generalised forces, which include the stress times the volume).
        steps: maximum number of optimizer steps (0: evaluate the start only).
        optimizer: ``"FIRE"`` or ``"BFGS"``.
        relax_cell: also relax the cell; applied only to a 3D periodic structure with a volume
            (otherwise positions only, logged at INFO).
        trajectory: path of an ASE ``.traj`` file receiving every step (None: none).
        progress: True for a tqdm bar on stderr, a :data:`ProgressCallback` called after every
            step with ``(step, energy_eV, max_force_eV_per_A)``, or False for silence.

    Raises:
        GPTFFInputError: bad fmax, steps or optimizer, or a structure the calculator refuses.
        RelaxInterrupted: on Ctrl-C, carrying the current structure.
    """
    optimizer_class = check_options(fmax, steps, optimizer)
    work = as_atoms(atoms).copy()
    work.calc = calculator
    cell_relaxed = bool(relax_cell) and has_volume(work)
    if relax_cell and not cell_relaxed:
        logger.info("the structure is not 3D periodic with a volume: relaxing positions only")
    initial_energy = float(work.get_potential_energy())
    target = FrechetCellFilter(work) if cell_relaxed else work
    opt = optimizer_class(
        target, logfile=None, trajectory=None if trajectory is None else str(trajectory)
    )
    converged = _run_optimizer(opt, work, fmax, steps, progress)
    return _relaxed(work, initial_energy, int(opt.nsteps), converged, cell_relaxed)


def _run_optimizer(
    opt: Optimizer, work: Atoms, fmax: float, steps: int, progress: bool | ProgressCallback
) -> bool:
    """Run ``opt`` on ``work`` to ``fmax`` (eV/Å) or ``steps`` steps, reporting ``progress``
    (see :func:`relax`); whether it converged.

    Raises:
        RelaxInterrupted: on Ctrl-C, carrying a copy of ``work`` as reached.
    """
    bar = tqdm(total=steps, disable=progress is not True, unit="step", leave=False)
    if progress is not False:
        opt.attach(_observer(work, opt, bar, progress), interval=1)
    try:
        with warnings.catch_warnings():
            # FrechetCellFilter's scipy logm warns on every step near the identity (error ~1e-12)
            warnings.filterwarnings("ignore", "logm result may be inaccurate", RuntimeWarning)
            return bool(opt.run(fmax=fmax, steps=steps))
    except KeyboardInterrupt:
        snapshot = work.copy()
        snapshot.calc = None
        raise RelaxInterrupted(snapshot, opt.nsteps) from None
    finally:
        bar.close()
        opt.close()


def _observer(
    work: Atoms, opt: Optimizer, bar: tqdm, progress: bool | ProgressCallback
) -> Callable[[], None]:
    """The step observer: updates ``bar`` with the energy (eV) and largest force (eV/Å) of
    ``work`` and calls ``progress`` when it is a :data:`ProgressCallback`."""

    def observe() -> None:
        energy = float(work.get_potential_energy())
        force = float(np.linalg.norm(work.get_forces(), axis=1).max())
        bar.n = opt.nsteps
        bar.set_postfix_str(f"E={energy:.5f} eV, max|F|={force:.4f} eV/Å", refresh=True)
        if callable(progress):
            progress(opt.nsteps, energy, force)

    return observe


def _relaxed(
    work: Atoms, initial_energy: float, n_steps: int, converged: bool, cell_relaxed: bool
) -> RelaxResult:
    """The :class:`RelaxResult` of the relaxed ``work`` (its final energy eV, forces eV/Å and
    stress eV/Å³ checked, held by a SinglePointCalculator on a copy).

    Raises:
        GPTFFInputError: the calculator's final energy or forces are not finite.
    """
    energy, forces, stress = _final_state(work)
    logger.debug("relaxed in %d steps, converged=%s, E=%.6f eV", n_steps, converged, energy)
    final = work.copy()
    results = {"energy": energy, "free_energy": energy, "forces": forces}
    if stress is not None:
        results["stress"] = work.get_stress()
    final.calc = SinglePointCalculator(final, **results)
    return RelaxResult(
        atoms=final,
        initial_energy=initial_energy,
        energy=energy,
        forces=forces,
        stress=stress,
        n_steps=n_steps,
        converged=converged,
        cell_relaxed=cell_relaxed,
    )
