"""Checks on structures before they reach the network, and conversion of pymatgen objects.

Everything here raises :class:`~gptff_core.errors.StructureError` (a ``ValueError``) with a message
that names the problem and what to do, so bad input never becomes a NaN, a hang or a crash.
"""

from __future__ import annotations

import itertools

import numpy as np
from ase import Atoms
from ase.geometry import minkowski_reduce

from gptff_core.errors import StructureError

MAX_ATOMIC_NUMBER = 94
"""The published embedding table has 95 rows (index 0 unused): H (1) to Pu (94)."""

MIN_INTERATOMIC_DISTANCE = 0.5
"""Å. Pairs closer than this are refused. The radial basis goes as 1/d, and the shortest bond in
any material at ordinary pressure (H₂, 0.74 Å) is well above it; a shorter pair means overlapping
atoms (a bad structure, a collapsed relaxation or an exploded MD run), not physics GPTFF was
trained on."""

_MIN_SINGULAR_RATIO = 1e-8  # a periodic cell whose vectors are this close to dependent is refused


def as_atoms(structure: object) -> Atoms:
    """Return ``structure`` as ASE Atoms: accepts ASE Atoms and pymatgen Structure or Molecule.

    Raises:
        StructureError: for another type, dummy species or partial occupancies.
    """
    if isinstance(structure, Atoms):
        return structure
    from pymatgen.core import Molecule, Structure

    if isinstance(structure, Structure | Molecule):
        if not structure.is_ordered:
            raise StructureError(
                f"{structure.formula}: sites with partial occupancy cannot be evaluated; "
                "order the structure first (e.g. pymatgen's OrderDisorderedStructureTransformation)"
            )
        from pymatgen.core.periodic_table import DummySpecies

        dummies = {str(sp) for sp in structure.species if isinstance(sp, DummySpecies)}
        if dummies:
            raise StructureError(
                f"dummy species {sorted(dummies)} cannot be evaluated: replace them by elements"
            )
        from pymatgen.io.ase import AseAtomsAdaptor

        return AseAtomsAdaptor.get_atoms(structure)
    raise StructureError(
        f"expected ase.Atoms or a pymatgen Structure/Molecule, got {type(structure).__name__}"
    )


def check_structure(atoms: Atoms, label: str = "structure") -> None:
    """Refuse a structure GPTFF cannot evaluate.

    Checks: at least one atom; atomic numbers 1–94; no partial occupancy (a CIF read by ASE
    records it in ``atoms.info["occupancy"]``); finite positions and cell (Å); every periodic
    direction has a non-zero cell vector, the periodic vectors are linearly independent and no
    lattice vector is shorter than :data:`MIN_INTERATOMIC_DISTANCE` (an atom on its own image).
    Close contacts are checked by :func:`check_min_distance` once neighbours are known.
    """
    if len(atoms) == 0:
        raise StructureError(f"{label} is empty: it has no atoms")
    numbers = np.asarray(atoms.numbers)
    bad = (numbers < 1) | (numbers > MAX_ATOMIC_NUMBER)
    if bad.any():
        raise StructureError(
            f"{label}: atomic number(s) {sorted(set(numbers[bad].tolist()))} are outside the "
            f"elements GPTFF knows (Z = 1 to {MAX_ATOMIC_NUMBER}, H to Pu)"
        )
    check_ordered(atoms, label)
    if not np.isfinite(atoms.positions).all():
        raise StructureError(f"{label}: positions contain NaN or infinity")
    check_cell(np.asarray(atoms.cell.array, dtype=np.float64), np.asarray(atoms.pbc), label)


def check_cell(cell: np.ndarray, pbc: np.ndarray, label: str = "structure") -> None:
    """Refuse a cell (rows = lattice vectors, Å) with NaN or infinity, a zero or linearly dependent
    periodic vector, or a lattice vector shorter than :data:`MIN_INTERATOMIC_DISTANCE` (an atom
    on its own image); ``pbc`` (3,) bools."""
    cell = np.asarray(cell, dtype=np.float64)
    pbc = np.asarray(pbc, dtype=bool)
    if not np.isfinite(cell).all():
        raise StructureError(f"{label}: the cell contains NaN or infinity")
    if pbc.any():
        periodic = cell[pbc]
        lengths = np.linalg.norm(periodic, axis=1)
        if (lengths == 0).any():
            axes = "".join("abc"[k] for k in np.flatnonzero(pbc)[lengths == 0])
            raise StructureError(
                f"{label}: periodic direction(s) {axes} have a zero cell vector; set the cell "
                "or make that direction non-periodic (pbc=False)"
            )
        singular = np.linalg.svd(periodic, compute_uv=False)
        if singular.min() <= _MIN_SINGULAR_RATIO * singular.max():
            raise StructureError(
                f"{label}: the periodic cell vectors are linearly dependent (degenerate cell)"
            )
        # Checked before any neighbour search: a lattice vector far below the cutoff makes the
        # search enumerate (cutoff / length)^k images (a hang, then a memory error).
        try:
            with np.errstate(all="ignore"):
                shortest = shortest_lattice_vector(cell, pbc)
        except (ValueError, RuntimeError, ArithmeticError):  # reduction failed: rounding-level
            shortest = 0.0  # dependence of the vectors, which the check above let through
        if not shortest >= MIN_INTERATOMIC_DISTANCE:
            raise StructureError(
                f"{label}: every atom and its own periodic image are {shortest:.3g} Å apart "
                f"(the shortest lattice vector), closer than {MIN_INTERATOMIC_DISTANCE} Å: "
                "the cell is too small"
            )


_FULL_OCCUPANCY = 1.0 - 1e-3  # CIFs round occupancies such as 1/3 to a few digits


def check_ordered(atoms: Atoms, label: str = "structure") -> None:
    """Refuse ``atoms`` read from a file with partially occupied sites (mixed species or
    vacancies): ASE's CIF reader keeps one species per site and records the occupancies in
    ``atoms.info["occupancy"]`` (``{site tag: {symbol: fraction}}``), so the atoms alone look
    like an ordered compound of the wrong composition."""
    occupancy = atoms.info.get("occupancy")
    if not isinstance(occupancy, dict):
        return
    for tag, species in occupancy.items():
        if not isinstance(species, dict):
            continue
        fractions = {str(symbol): float(value) for symbol, value in species.items()}
        if len(fractions) > 1 or any(value < _FULL_OCCUPANCY for value in fractions.values()):
            shown = ", ".join(f"{symbol} {value:g}" for symbol, value in fractions.items())
            raise StructureError(
                f"{label}: site {tag} is partially occupied ({shown}); GPTFF evaluates ordered "
                "structures only: order it first (e.g. pymatgen's "
                "OrderDisorderedStructureTransformation or a special quasirandom structure)"
            )


def shortest_lattice_vector(cell: np.ndarray, pbc: np.ndarray) -> float:
    """Length (Å) of the shortest non-zero vector of the lattice spanned by the periodic cell
    vectors (Minkowski reduction, then all combinations with coefficients −1, 0, 1)."""
    reduced, _ = minkowski_reduce(np.asarray(cell, dtype=np.float64), pbc=pbc)
    periodic = np.asarray(reduced)[np.asarray(pbc, dtype=bool)]
    coefficients = np.array(list(itertools.product((-1, 0, 1), repeat=len(periodic))))
    coefficients = coefficients[np.abs(coefficients).sum(axis=1) > 0]
    return float(np.linalg.norm(coefficients @ periodic, axis=1).min())


def check_min_distance(
    atoms: Atoms,
    centre: np.ndarray,
    neighbour: np.ndarray,
    length: np.ndarray,
    label: str = "structure",
) -> None:
    """Refuse any bond shorter than :data:`MIN_INTERATOMIC_DISTANCE` (Å), naming the structure
    (``label``) and the pair."""
    if length.size == 0:
        return
    shortest = int(np.argmin(length))
    if length[shortest] < MIN_INTERATOMIC_DISTANCE:
        symbols = atoms.get_chemical_symbols()
        i, j = int(centre[shortest]), int(neighbour[shortest])
        what = "and its own periodic image" if i == j else f"and atom {j} ({symbols[j]})"
        raise StructureError(
            f"{label}: atom {i} ({symbols[i]}) {what} are {length[shortest]:.3f} Å apart, "
            f"closer than {MIN_INTERATOMIC_DISTANCE} Å: the structure has overlapping atoms"
        )
