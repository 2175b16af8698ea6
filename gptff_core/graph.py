"""Crystal graphs for GPTFF: bonds (≤ 5.0 Å), triplets (pairs of bonds ≤ 3.5 Å), batching.

A *bond* is an ordered pair ``(i, j, S)`` with ``r_ij = r_j + S·cell − r_i`` and
``0 < |r_ij| ≤ bond_cutoff``; both directions are present and periodic images of an atom itself are
bonds. A *triplet* is an ordered pair ``(a, b)`` of two different bonds of the same centre atom that
are both ≤ ``three_body_cutoff``. Periodicity is honoured per direction (``pbc``): a non-periodic
direction gets no images.

Neighbours come from `vesin <https://github.com/Luthaf/vesin>`_ (see
``benchmarks/neighbour_lists.py`` for why vesin rather than matscipy); triplets are built with
vectorised index arithmetic. Many structures are stacked into one :class:`Graph` with a per-atom
structure index.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import vesin
from ase import Atoms

from gptff_core.devices import builds_on_device
from gptff_core.errors import GPTFFInputError, StructureError
from gptff_core.validation import as_atoms, check_min_distance, check_structure

BOND_CUTOFF = 5.0
"""Å, bond cutoff of the published network."""
THREE_BODY_CUTOFF = 3.5
"""Å, cutoff of the bonds that form triplets in the published network."""

# vesin keeps pairs with d < cutoff; the network's bonds are d ≤ cutoff, so search slightly wider
# and cut exactly afterwards.
SEARCH_MARGIN = 1e-6  # Å
# vesin bins space into cells about one cutoff wide and caps their number (about 1e5): a search box
# much longer in one or two directions than in another then kills the process (SIGFPE), and atoms
# far apart along a non-periodic direction make the search very slow. So empty gaps wider than
# this along a non-periodic direction are narrowed before the search (bonds are unchanged: no pair
# across such a gap is within the cutoff), and a box that is still too lopsided is refused.
VACUUM_GAP = 20.0  # Å
_MAX_BIN_ASPECT = 5e4  # (product of bins per direction) / (fewest bins)³; vesin fails near 1e5


@dataclass
class Graph:
    """One or more structures stacked into one graph (tensors on one device).

    Attributes:
        numbers: (N,) atomic numbers.
        positions: (N, 3) Cartesian positions, Å.
        cells: (B, 3, 3) cells, Å, rows are lattice vectors.
        atom_structure: (N,) index of the structure each atom belongs to (atoms are contiguous).
        atoms_per_structure: (B,) number of atoms of each structure.
        bond_centre, bond_neighbour: (E,) atom indices i and j of each bond i→j.
        bond_shift: (E, 3) integer image shift S of each bond (stored in the float dtype).
        short_bonds: (S,) indices of the bonds no longer than the three-body cutoff.
        triplet_first, triplet_second: (T,) the two bonds a (i→j) and b (i→k) of each triplet, as
            positions in ``short_bonds``; triplets are grouped by their first bond.
        volumes: (B,) cell volumes, Å³ (0 where the cell is not full rank).
        largest_structure: atoms of the largest structure, a host integer (the builders set it,
            so padding by structure needs no read from the device); None: read when needed.
    """

    numbers: torch.Tensor
    positions: torch.Tensor
    cells: torch.Tensor
    atom_structure: torch.Tensor
    atoms_per_structure: torch.Tensor
    bond_centre: torch.Tensor
    bond_neighbour: torch.Tensor
    bond_shift: torch.Tensor
    short_bonds: torch.Tensor
    triplet_first: torch.Tensor
    triplet_second: torch.Tensor
    volumes: torch.Tensor
    largest_structure: int | None = None

    @property
    def n_structures(self) -> int:
        return int(self.cells.shape[0])

    @property
    def n_bonds(self) -> int:
        return int(self.bond_centre.shape[0])

    @property
    def n_triplets(self) -> int:
        return int(self.triplet_first.shape[0])


@dataclass
class StructureGraph:
    """Index arrays of one structure (numpy, before stacking)."""

    centre: np.ndarray
    neighbour: np.ndarray
    shift: np.ndarray
    short_bonds: np.ndarray
    triplet_first: np.ndarray
    triplet_second: np.ndarray


def non_periodic_axes(cell: np.ndarray, pbc: np.ndarray) -> np.ndarray:
    """Orthonormal rows spanning the directions perpendicular to every periodic cell vector."""
    periodic = cell[pbc]
    if len(periodic) == 0:
        return np.eye(3)
    return np.linalg.svd(periodic)[2][len(periodic) :]


def narrow_vacuum_gaps(positions: np.ndarray, axes: np.ndarray, gap: float) -> np.ndarray:
    """Positions with every empty gap wider than ``gap`` (Å) along each of ``axes`` narrowed to
    ``gap``: pairs closer than ``gap`` along an axis keep their separation, farther pairs stay
    farther than ``gap``; periodic images move with their atom (the axes are perpendicular to
    the periodic vectors)."""
    for axis in axes:
        coordinate = positions @ axis
        order = np.argsort(coordinate, kind="stable")
        excess = np.maximum(np.diff(coordinate[order]) - gap, 0.0)
        if not excess.any():
            continue
        shift = np.empty_like(coordinate)
        shift[order] = np.concatenate([[0.0], np.cumsum(excess)])
        positions = positions - shift[:, None] * axis
    return positions


def check_search_box(
    positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, axes: np.ndarray, cutoff: float
) -> None:
    """Refuse a search box (periodic vectors, extent of the atoms along the other directions)
    so lopsided that vesin's cell list would fail."""
    extents = np.array([np.ptp(positions @ axis) for axis in axes]).reshape(-1)
    box = np.concatenate([cell[pbc], axes * np.maximum(extents, cutoff)[:, None]])
    faces = np.linalg.norm(np.cross(box[[1, 2, 0]], box[[2, 0, 1]]), axis=1)
    widths = abs(np.linalg.det(box)) / faces
    bins = np.maximum(1.0, np.floor(widths / cutoff))
    if bins.prod() / bins.min() ** 3 > _MAX_BIN_ASPECT:
        size = " × ".join(f"{w:.4g}" for w in widths)
        raise StructureError(
            f"the atoms and the periodic cell span a box of {size} Å, too lopsided for the "
            "neighbour search: use a more compact periodic cell (or make thin directions thicker)"
        )


def find_bonds(
    atoms: Atoms, cutoff: float = BOND_CUTOFF
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All bonds of one structure with ``0 < d ≤ cutoff`` (Å), sorted by centre atom.

    Returns:
        ``(i, j, S, d)``: centre and neighbour indices, integer image shifts (E, 3) and lengths (Å).

    Raises:
        StructureError: the atoms and cell span a box too lopsided for the neighbour search.
    """
    pbc = np.asarray(atoms.pbc, dtype=bool)
    box = np.asarray(atoms.cell.array, dtype=np.float64)
    axes = non_periodic_axes(box, pbc)
    positions = np.asarray(atoms.positions, dtype=np.float64)
    positions = narrow_vacuum_gaps(positions, axes, max(VACUUM_GAP, 2.0 * cutoff))
    check_search_box(positions, box, pbc, axes, cutoff)
    if not pbc.any():
        box = np.eye(3)  # ignored by vesin without periodicity, but it needs a non-zero box
    search = vesin.NeighborList(cutoff=cutoff + SEARCH_MARGIN, full_list=True, sorted=True)
    i, j, shifts, d = search.compute(positions, box, pbc.tolist(), "ijSd")
    keep = d <= cutoff
    return (
        i[keep].astype(np.int64),
        j[keep].astype(np.int64),
        shifts[keep].astype(np.int64),
        d[keep],
    )


def find_triplets(
    centre: np.ndarray, length: np.ndarray, cutoff: float = THREE_BODY_CUTOFF
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ordered pairs of different bonds of the same centre, both with length ≤ ``cutoff`` (Å).

    Args:
        centre: (E,) centre atom of each bond, sorted ascending.
        length: (E,) bond lengths, Å.

    Returns:
        ``(short, a, b)``: the indices of the short bonds, and for each triplet the positions of
        its two bonds in ``short``, grouped by ``a``; a centre with ``n`` short bonds gives
        ``n(n−1)`` triplets.
    """
    short = np.flatnonzero(length <= cutoff)
    if short.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return short.astype(np.int64), empty, empty
    short_centre = centre[short]
    # Short bonds are grouped by centre (the bond list is sorted by centre).
    _, group_start, group_size = np.unique(short_centre, return_index=True, return_counts=True)
    size_of_bond = np.repeat(group_size, group_size)
    start_of_bond = np.repeat(group_start, group_size)
    # Pair every short bond with every short bond of its group (itself included, removed below).
    first = np.repeat(np.arange(short.size), size_of_bond)
    pair_offset = np.arange(first.size) - np.repeat(
        np.cumsum(size_of_bond) - size_of_bond, size_of_bond
    )
    second = np.repeat(start_of_bond, size_of_bond) + pair_offset
    different = first != second
    return short.astype(np.int64), first[different], second[different]


def structure_graph(
    atoms: Atoms, bond_cutoff: float, three_body_cutoff: float, label: str
) -> StructureGraph:
    """Bonds (≤ ``bond_cutoff``, Å) and triplets (≤ ``three_body_cutoff``, Å) of one checked
    structure, refusing close contacts; ``label`` names it in error messages."""
    try:
        centre, neighbour, shift, length = find_bonds(atoms, bond_cutoff)
    except StructureError as error:
        raise StructureError(f"{label}: {error}") from None
    return _with_triplets(atoms, centre, neighbour, shift, length, three_body_cutoff, label)


def _with_triplets(
    atoms: Atoms,
    centre: np.ndarray,
    neighbour: np.ndarray,
    shift: np.ndarray,
    length: np.ndarray,
    three_body_cutoff: float,
    label: str,
) -> StructureGraph:
    check_min_distance(atoms, centre, neighbour, length, label)
    short, first, second = find_triplets(centre, length, three_body_cutoff)
    return StructureGraph(centre, neighbour, shift, short, first, second)


def graph_from_bonds(
    atoms: Atoms,
    centre: np.ndarray,
    neighbour: np.ndarray,
    shift: np.ndarray,
    length: np.ndarray,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    three_body_cutoff: float = THREE_BODY_CUTOFF,
    label: str = "structure",
) -> Graph:
    """The :class:`Graph` of one structure whose bonds are already known (as :func:`find_bonds`
    returns them, sorted by centre atom; lengths in Å): checks the shortest bond and adds the
    triplets of bonds ≤ ``three_body_cutoff`` (Å). The structure itself is not validated here
    (see :func:`~gptff_core.validation.check_structure`).

    Raises:
        StructureError: a bond is shorter than the minimum interatomic distance.
    """
    part = _with_triplets(atoms, centre, neighbour, shift, length, three_body_cutoff, label)
    return stack_graphs([atoms], [part], dtype, device)


def cell_volume(atoms: Atoms) -> float:
    """|det(cell)| in Å³; 0 when the cell is not full rank (e.g. a molecule without a box)."""
    return float(abs(np.linalg.det(np.asarray(atoms.cell.array, dtype=np.float64))))


def structure_list(structures: Sequence[object], caller: str) -> list[Atoms]:
    """``structures`` as ASE Atoms; a bare structure or an empty list is refused, naming
    ``caller``."""
    if isinstance(structures, Atoms) or len(structures) == 0:
        raise GPTFFInputError(f"{caller} takes a list of structures: pass at least one, as [atoms]")
    return [as_atoms(s) for s in structures]


def structure_labels(structures: Sequence[object], labels: Sequence[str] | None) -> list[str]:
    """Names of ``structures`` in error messages: ``labels``, else "structure" for one and
    "structure <index>" for several."""
    if labels is not None:
        return list(labels)
    if len(structures) == 1:
        return ["structure"]
    return [f"structure {i}" for i in range(len(structures))]


def build_graph(
    structures: Sequence[Atoms],
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    bond_cutoff: float = BOND_CUTOFF,
    three_body_cutoff: float = THREE_BODY_CUTOFF,
    labels: Sequence[str] | None = None,
) -> Graph:
    """Validate ``structures`` and stack their bonds and triplets into one :class:`Graph`.

    Args:
        structures: ASE Atoms or pymatgen Structures/Molecules (positions and cell in Å).
        dtype: floating dtype of positions, cells and shifts.
        device: torch device of every tensor.
        bond_cutoff: Å.
        three_body_cutoff: Å.
        labels: names of the structures in error messages (default: "structure <index>").

    On the CPU the search and triplets run in numpy/vesin; on any other device the graph is built
    there, by :func:`gptff_core.graph_torch.build_graph_torch` (the same bonds and triplets); see
    :func:`builds_on_device`.

    Raises:
        StructureError: for an input GPTFF cannot evaluate (see :mod:`gptff_core.validation`).
    """
    if builds_on_device(device):
        from gptff_core.graph_torch import build_graph_torch  # imports this module

        return build_graph_torch(
            structures,
            dtype=dtype,
            device=device,
            bond_cutoff=bond_cutoff,
            three_body_cutoff=three_body_cutoff,
            labels=labels,
        )
    structures = structure_list(structures, "build_graph")
    labels = structure_labels(structures, labels)
    parts = []
    for atoms, label in zip(structures, labels, strict=True):
        check_structure(atoms, label=label)
        parts.append(structure_graph(atoms, bond_cutoff, three_body_cutoff, label))
    return stack_graphs(structures, parts, dtype, device)


def home_positions(atoms: Atoms, part: StructureGraph) -> tuple[np.ndarray, np.ndarray]:
    """Positions (Å, float64) moved near the origin before they are cast to the graph's dtype,
    and the bond image shifts that keep every bond vector ``r_j + S·cell − r_i`` unchanged.

    Along periodic directions each atom moves into the cell by whole lattice vectors ``n_i``
    (``S`` becomes ``S + n_j − n_i``); along the other directions all atoms move together so that
    their mean lies at 0. Energy, forces and stress are unchanged (a lattice translation of one
    atom, a rigid translation of all), but float32 keeps its precision: unwrapped MD coordinates
    at 1e7 Å would otherwise lose ~1 eV/Å of force, and at ~1e9 Å give NaN.
    """
    positions = np.asarray(atoms.positions, dtype=np.float64)
    cell = np.asarray(atoms.cell.array, dtype=np.float64)
    pbc = np.asarray(atoms.pbc, dtype=bool)
    images = np.zeros((len(positions), 3))
    if pbc.any():
        fractional = positions @ np.linalg.pinv(cell[pbc])
        images[:, pbc] = np.floor(fractional)
        positions = positions - images[:, pbc] @ cell[pbc]
    axes = non_periodic_axes(cell, pbc)
    if len(axes):
        positions = positions - (positions @ axes.T).mean(axis=0) @ axes
    shift = part.shift + (images[part.neighbour] - images[part.centre]).astype(np.int64)
    return positions, shift


def stack_graphs(
    structures: list[Atoms],
    parts: list[StructureGraph],
    dtype: torch.dtype,
    device: torch.device | str,
) -> Graph:
    """Stack the index arrays of validated structures into one :class:`Graph`."""
    atom_counts = np.array([len(atoms) for atoms in structures], dtype=np.int64)
    bond_counts = np.array([part.centre.size for part in parts], dtype=np.int64)
    short_counts = np.array([part.short_bonds.size for part in parts], dtype=np.int64)
    atom_offsets = np.concatenate([[0], np.cumsum(atom_counts)[:-1]])
    bond_offsets = np.concatenate([[0], np.cumsum(bond_counts)[:-1]])
    short_offsets = np.concatenate([[0], np.cumsum(short_counts)[:-1]])

    def stack(arrays: list[np.ndarray], offsets: np.ndarray) -> torch.Tensor:
        joined = np.concatenate([a + o for a, o in zip(arrays, offsets, strict=True)])
        return torch.from_numpy(joined).to(device)

    def floats(array: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(array, dtype=dtype, device=device)

    moved = [home_positions(atoms, part) for atoms, part in zip(structures, parts, strict=True)]
    return Graph(
        numbers=torch.from_numpy(
            np.concatenate([np.asarray(atoms.numbers, dtype=np.int64) for atoms in structures])
        ).to(device),
        positions=floats(np.concatenate([positions for positions, _ in moved])),
        cells=floats(np.stack([atoms.cell.array for atoms in structures])),
        atom_structure=torch.from_numpy(np.repeat(np.arange(len(structures)), atom_counts)).to(
            device
        ),
        atoms_per_structure=torch.from_numpy(atom_counts).to(device),
        bond_centre=stack([p.centre for p in parts], atom_offsets),
        bond_neighbour=stack([p.neighbour for p in parts], atom_offsets),
        bond_shift=floats(np.concatenate([shift for _, shift in moved])),
        short_bonds=stack([p.short_bonds for p in parts], bond_offsets),
        triplet_first=stack([p.triplet_first for p in parts], short_offsets),
        triplet_second=stack([p.triplet_second for p in parts], short_offsets),
        volumes=floats(np.array([cell_volume(atoms) for atoms in structures])),
        largest_structure=int(atom_counts.max()),
    )
