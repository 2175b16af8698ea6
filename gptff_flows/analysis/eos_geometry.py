"""Geometry behind the EOS verdicts: cutoff crossings between strained cells, and the check
that a structure is a 3D bulk before an EOS is computed (pure functions, ASE only).

* :func:`cutoff_crossings`: where a pair distance crosses the network's 5.0 Å bond or 3.5 Å
  three-body cutoff between neighbouring strained cells (the published network's energy is
  discontinuous there; :func:`~gptff_flows.analysis.eos_fit.fit_eos` flags a step off the
  curve there).
* :func:`check_bulk`: refuses, before any work, a structure whose volume is not that of a 3D bulk
  material: no periodic cell, an empty gap through the cell, isolated atoms.

Units: Å, volumes Å³/atom.
"""

from __future__ import annotations

import itertools

import numpy as np
from ase import Atoms
from ase.neighborlist import neighbor_list
from pydantic import BaseModel, Field

from gptff_core.errors import GPTFFInputError, StructureError
from gptff_core.graph import BOND_CUTOFF, THREE_BODY_CUTOFF


class CutoffCrossing(BaseModel):
    """Pair distances that cross one of the network's cutoffs between two neighbouring points."""

    cutoff: float = Field(description="Å, the cutoff crossed (5.0 bond, 3.5 three-body)")
    kind: str = Field(description="'bond' or 'three-body'")
    volumes_per_atom: list[float] = Field(description="Å³/atom, the two neighbouring points")
    n_pairs: int = Field(description="number of atom pairs whose distance crosses the cutoff")
    example: str = Field(description="one of them, e.g. 'Al–Al 4.960 → 5.079 Å'")


MAX_VACUUM_GAP = BOND_CUTOFF
"""Å. A structure with an empty slab wider than this through its cell (no atom centre in it) is
not a 3D bulk for GPTFF: no bond of the network (≤ 5.0 Å) crosses the gap, so the cell volume
includes vacuum the energy does not see, and an EOS of it is meaningless. Bulk crystals have no
such gap (layered graphite and MoS₂: 3–3.5 Å between atomic planes; bcc Cs, one atom per
primitive cell: 4.3 Å)."""

_GAP_DIRECTIONS = [
    hkl for hkl in itertools.product((-1, 0, 1), repeat=3) if hkl > (0, 0, 0)
]  # 13 plane families (100), (110), (111)… of the cell, one of each ± pair


def cutoff_crossings(structures: list[Atoms]) -> list[CutoffCrossing]:
    """Where a pair distance crosses the bond (5.0 Å) or three-body (3.5 Å) cutoff between
    neighbouring cells of ``structures`` (the strained cells, sorted by volume; same atoms in the
    same order). Volumes in the result are Å³/atom."""
    crossings = []
    for a, b in itertools.pairwise(structures):
        if len(a) != len(b) or (a.numbers != b.numbers).any():
            raise GPTFFInputError("EOS cells must hold the same atoms in the same order")
        keys, da, db = _pair_distances(a, b)
        volumes = [a.get_volume() / len(a), b.get_volume() / len(b)]
        for cutoff, kind in ((BOND_CUTOFF, "bond"), (THREE_BODY_CUTOFF, "three-body")):
            crossing = (da <= cutoff) != (db <= cutoff)
            if not crossing.any():
                continue
            nearest = np.flatnonzero(crossing)[np.argmin(np.abs(da[crossing] - cutoff))]
            i, j = keys[nearest, :2]
            symbols = a.get_chemical_symbols()
            crossings.append(
                CutoffCrossing(
                    cutoff=cutoff,
                    kind=kind,
                    volumes_per_atom=volumes,
                    n_pairs=max(1, int(crossing.sum()) // 2),  # i→j and j→i are one pair
                    example=f"{symbols[i]}–{symbols[j]} {da[nearest]:.3f} → {db[nearest]:.3f} Å",
                )
            )
    return crossings


def _pair_distances(a: Atoms, b: Atoms) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (i, j, S) within the bond cutoff in ``a`` or ``b``, and their distances (Å) in both.
    ``b``'s atoms are taken as the periodic images nearest to ``a``'s, so S means the same."""
    fa = a.get_scaled_positions(wrap=False)
    fb = b.get_scaled_positions(wrap=False)
    fb = fb - np.round(fb - fa)
    b = b.copy()
    b.set_scaled_positions(fb)
    radius = BOND_CUTOFF + 1e-6
    found = [np.column_stack(neighbor_list("ijS", x, radius)) for x in (a, b)]
    keys = np.unique(np.concatenate(found).astype(int), axis=0).reshape(-1, 5)
    i, j, shift = keys[:, 0], keys[:, 1], keys[:, 2:]

    def distances(frac: np.ndarray, cell: np.ndarray) -> np.ndarray:
        return np.linalg.norm((frac[j] + shift - frac[i]) @ cell, axis=1)

    return keys, distances(fa, a.cell.array), distances(fb, b.cell.array)


def check_bulk(atoms: Atoms, label: str = "structure") -> None:
    """Refuse, before any work, an EOS of a structure that is not a 3D bulk for GPTFF: a
    non-periodic direction or no cell volume, an empty gap wider than :data:`MAX_VACUUM_GAP`
    through the cell (a slab, a wire, a molecule in a box), or an atom with no neighbour within
    the 5.0 Å bond cutoff.

    Raises:
        StructureError: naming what is wrong and what to do.
    """
    pbc = np.asarray(atoms.pbc, dtype=bool)
    if not pbc.all():
        periodic = "".join("abc"[k] for k in np.flatnonzero(pbc)) or "none"
        raise StructureError(
            f"{label}: an equation of state needs a crystal periodic in all three directions, "
            f"this structure is periodic along {periodic} (a molecule, wire or slab); give the "
            "bulk crystal's cell (use `gptff relax` for a molecule)"
        )
    cell = np.asarray(atoms.cell.array, dtype=float)
    volume = abs(float(np.linalg.det(cell)))
    if not volume > 1e-6 * len(atoms):
        raise StructureError(f"{label}: the cell has no volume; give the crystal's lattice vectors")
    gap, hkl = _widest_gap(atoms)
    if gap > MAX_VACUUM_GAP:
        raise StructureError(
            f"{label}: an empty gap {gap:.1f} Å wide runs through the cell (parallel to its "
            f"({' '.join(map(str, hkl))}) planes), wider than the {MAX_VACUUM_GAP:g} Å bond "
            "cutoff: it is a slab, wire or molecule in vacuum, not a 3D bulk, and its volume is "
            "not a material's; fit the EOS of the bulk crystal (remove the vacuum)"
        )
    lonely = np.setdiff1d(np.arange(len(atoms)), neighbor_list("i", atoms, BOND_CUTOFF))
    if lonely.size:
        k = int(lonely[0])
        raise StructureError(
            f"{label}: {lonely.size} atom(s), e.g. atom {k} ({atoms[k].symbol}), have no "
            f"neighbour within the {BOND_CUTOFF:g} Å bond cutoff, so GPTFF sees isolated atoms and "
            "their energy does not depend on the volume; compress the cell until every atom has "
            "a neighbour within 5 Å (GPTFF cannot describe bonds longer than that)"
        )


def _widest_gap(atoms: Atoms) -> tuple[float, tuple[int, int, int]]:
    """The widest empty slab (Å) between neighbouring atomic planes of the 13 low-index plane
    families (hkl), h, k, l ∈ {−1, 0, 1}, of the cell, and its (hkl)."""
    reciprocal = np.linalg.inv(atoms.cell.array).T  # rows b_i with a_i · b_j = δ_ij
    frac = atoms.get_scaled_positions(wrap=False)
    widest = (0.0, (0, 0, 1))
    for hkl in _GAP_DIRECTIONS:
        spacing = 1.0 / np.linalg.norm(np.asarray(hkl) @ reciprocal)
        levels = np.sort(np.mod(frac @ np.asarray(hkl, dtype=float), 1.0))
        gaps = np.diff(np.append(levels, levels[0] + 1.0))
        widest = max(widest, (float(gaps.max() * spacing), hkl))
    return widest
