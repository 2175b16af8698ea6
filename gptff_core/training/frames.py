"""One labelled structure for training (:class:`Frame`), its checks, and what the readers of
:mod:`~gptff_core.training.datasets` share.

Units: positions and cells in Å, energies in eV (per structure), forces in eV/Å, stress in eV/Å³
as a 3×3 tensor with ASE's sign (positive = tensile). A missing label is ``None``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.stress import voigt_6_to_full_3x3_stress

from gptff_core.errors import GPTFFInputError
from gptff_core.validation import as_atoms, check_structure


@dataclass
class Frame:
    """One labelled structure.

    Attributes:
        atoms: the structure (positions and cell in Å), without a calculator.
        energy: total energy, eV, or None.
        forces: (n_atoms, 3) eV/Å, or None.
        stress: (3, 3) eV/Å³, ASE sign (positive = tensile), or None.
        source: the file it came from (or a description such as ``"<python list>"``).
        index: its frame number in the source.
        group: the trajectory it belongs to; frames of one group stay on one side of a split.
    """

    atoms: Atoms
    energy: float | None
    forces: np.ndarray | None
    stress: np.ndarray | None
    source: str
    index: int
    group: str

    @property
    def label(self) -> str:
        """``"<source> frame <index>"``, the name used in error messages."""
        return f"{self.source} frame {self.index}"

    @property
    def n_atoms(self) -> int:
        return len(self.atoms)


def make_frame(
    structure: object,
    energy: float | None,
    forces: object | None,
    stress: object | None,
    *,
    source: str,
    index: int,
    group: str | None = None,
) -> Frame:
    """A checked :class:`Frame` from a structure and labels in the toolkit's units.

    Args:
        structure: ASE Atoms or pymatgen Structure (Å).
        energy: total energy, eV (None: unlabelled).
        forces: (n_atoms, 3), eV/Å (None: unlabelled).
        stress: (3, 3) or Voigt (6,) in ASE order xx yy zz yz xz xy, eV/Å³, positive = tensile.
        source, index: where the frame came from (named in errors).
        group: trajectory name (default: ``source``).

    Raises:
        GPTFFInputError: a structure GPTFF cannot evaluate (unknown element, overlapping atoms,
            NaN positions), or labels with the wrong shape or NaN/inf values; the message names
            the source and frame.
    """
    label = f"{source} frame {index}"
    atoms = as_atoms(structure).copy()
    atoms.calc = None
    check_structure(atoms, label=label)
    n = len(atoms)
    if energy is not None:
        energy = float(energy)
        if not math.isfinite(energy):
            raise GPTFFInputError(f"{label}: energy is {energy}; remove the frame or fix it")
    if forces is not None:
        forces = np.array(forces, dtype=np.float64)
        if forces.shape != (n, 3):
            raise GPTFFInputError(
                f"{label}: forces have shape {forces.shape} but the structure has {n} atoms "
                f"(expected ({n}, 3))"
            )
        if not np.isfinite(forces).all():
            raise GPTFFInputError(f"{label}: forces contain NaN or inf values")
    if stress is not None:
        stress = np.array(stress, dtype=np.float64)
        if stress.shape == (6,):
            stress = voigt_6_to_full_3x3_stress(stress)
        if stress.shape != (3, 3):
            raise GPTFFInputError(
                f"{label}: stress has shape {stress.shape}; expected (3, 3) or Voigt (6,)"
            )
        if not np.isfinite(stress).all():
            raise GPTFFInputError(f"{label}: stress contains NaN or inf values")
        if abs(atoms.cell.volume) < 1e-8:
            raise GPTFFInputError(f"{label}: a stress label needs a cell with a volume")
    return Frame(atoms, energy, forces, stress, source, index, group or source)


def frame_names(frames: Sequence[Frame], indices: Sequence[int]) -> str:
    """The labels of the first three ``frames[i]`` of ``indices``, and how many more there are
    (for messages)."""
    shown = ", ".join(frames[i].label for i in indices[:3])
    return shown + (f" and {len(indices) - 3} more" if len(indices) > 3 else "")


def check_input_file(path: Path) -> None:
    """Refuse a missing, directory or empty input file (named in the message)."""
    if not path.is_file():
        raise GPTFFInputError(f"{path}: {'is a directory' if path.is_dir() else 'no such file'}")
    if path.stat().st_size == 0:
        raise GPTFFInputError(f"{path}: the file is empty")
