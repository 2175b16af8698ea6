"""Central finite differences of an energy, the independent check of forces and stress, and the
sheared cell the physics tests share.

Units: positions Å, energies eV, forces eV/Å, virial ∂E/∂ε eV (= stress × volume).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from ase import Atoms

STRAIN_COMPONENTS = [(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)]


def sheared_tio2() -> Atoms:
    """Three atoms in a sheared (non-orthogonal) periodic cell, rattled; every bond is ≥ 0.05 Å
    from GPTFF's cutoffs."""
    cell = [[4.2, 0.1, 0.0], [1.3, 3.9, 0.2], [0.4, 0.8, 4.4]]
    frac = [[0.0, 0.0, 0.0], [0.3, 0.3, 0.1], [0.7, 0.6, 0.55]]
    atoms = Atoms("TiO2", scaled_positions=frac, cell=cell, pbc=True)
    atoms.rattle(0.05, seed=2)
    return atoms


def numeric_forces(energy: Callable[[Atoms], float], atoms: Atoms, step: float) -> np.ndarray:
    """−∂E/∂r (eV/Å) by central differences with displacements of ``step`` Å."""
    forces = np.zeros((len(atoms), 3))
    for i in range(len(atoms)):
        for k in range(3):
            values = []
            for sign in (1, -1):
                moved = atoms.copy()
                moved.positions[i, k] += sign * step
                values.append(energy(moved))
            forces[i, k] = -(values[0] - values[1]) / (2 * step)
    return forces


def numeric_virial(energy: Callable[[Atoms], float], atoms: Atoms, step: float) -> np.ndarray:
    """∂E/∂ε (eV) for the symmetric strain components of :data:`STRAIN_COMPONENTS`, by central
    differences with strains of ``step`` that carry the atoms along; the symmetric (3, 3)."""
    virial = np.zeros((3, 3))
    for i, j in STRAIN_COMPONENTS:
        strain = np.zeros((3, 3))
        strain[i, j] += 0.5
        strain[j, i] += 0.5  # symmetric: ∂E/∂δ = (σ_ij + σ_ji)·V / 2
        values = []
        for sign in (1, -1):
            deformation = np.eye(3) + sign * step * strain
            strained = atoms.copy()
            strained.positions = atoms.positions @ deformation
            strained.cell = atoms.cell.array @ deformation
            values.append(energy(strained))
        virial[i, j] = virial[j, i] = (values[0] - values[1]) / (2 * step)
    return virial
