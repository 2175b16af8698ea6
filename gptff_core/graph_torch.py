"""The crystal graph built with torch on the graph's device (CUDA or CPU).

:func:`build_graph_torch` returns the same :class:`~gptff_core.graph.Graph` as
:func:`gptff_core.graph.build_graph` (same bonds ``(i, j, S)``, triplets, homed positions; the
order of the bonds of one centre atom may differ) but searches neighbours with vesin's torch
neighbour list and enumerates triplets, homes positions and stacks structures with torch
operations on ``device``. Only the structure checks and the cheap per-structure preparation of
the search box (narrowing vacuum gaps along non-periodic directions, refusing lopsided boxes, both
as in :mod:`gptff_core.graph`) run on the host, from the input ``Atoms``.

Host synchronisations that remain on CUDA: vesin learns its pair count, ``nonzero`` and
``repeat_interleave`` learn the number of short bonds and triplets, and one reduction checks the
shortest bond of the whole batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from ase import Atoms
from vesin_torch import NeighborList

from gptff_core.errors import StructureError
from gptff_core.graph import (
    BOND_CUTOFF,
    SEARCH_MARGIN,
    THREE_BODY_CUTOFF,
    VACUUM_GAP,
    Graph,
    cell_volume,
    check_search_box,
    narrow_vacuum_gaps,
    non_periodic_axes,
    structure_labels,
    structure_list,
)
from gptff_core.validation import (
    MIN_INTERATOMIC_DISTANCE,
    check_min_distance,
    check_structure,
)

_INDEX = torch.int64


def bonds_torch(
    positions: torch.Tensor,
    cell: torch.Tensor,
    pbc: Sequence[bool],
    cutoff: float = BOND_CUTOFF,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """All bonds ``0 < d ≤ cutoff`` (Å) of one structure, sorted by centre atom, on the
    device of ``positions`` (float64, Å; ``cell`` rows are lattice vectors, Å).

    The search box must already be compact (see :func:`search_positions`); a structure without
    any periodic direction may have a zero cell.

    Returns:
        ``(i, j, S, d)``: centre and neighbour indices (int64), integer image shifts (E, 3, int64)
        and lengths (Å, float64).
    """
    pbc = [bool(p) for p in pbc]
    if not any(pbc):
        cell = torch.eye(3, dtype=positions.dtype, device=positions.device)
    search = NeighborList(cutoff=cutoff + SEARCH_MARGIN, full_list=True, sorted=True)
    periodic = torch.tensor(pbc, dtype=torch.bool, device=positions.device)
    i, j, shifts, d = search.compute(positions, cell, periodic, "ijSd")
    keep = d <= cutoff
    i, j, shifts, d = i[keep].to(_INDEX), j[keep].to(_INDEX), shifts[keep].to(_INDEX), d[keep]
    if positions.device.type != "cpu":  # not relying on every vesin version sorting on CUDA
        order = torch.argsort(i, stable=True)
        i, j, shifts, d = i[order], j[order], shifts[order], d[order]
    return i, j, shifts, d


def triplets_torch(
    centre: torch.Tensor, length: torch.Tensor, cutoff: float = THREE_BODY_CUTOFF
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ordered pairs of different bonds of the same centre, both ≤ ``cutoff`` (Å), in torch.

    Same contract as :func:`gptff_core.graph.find_triplets`: ``centre`` (E,) is sorted
    ascending, ``length`` (E,) in Å; returns ``(short, a, b)`` with ``a``, ``b`` positions in
    ``short``, grouped by ``a`` and ``b`` ascending within a group.
    """
    short = torch.nonzero(length <= cutoff).reshape(-1)
    _, group_size = torch.unique_consecutive(centre[short], return_counts=True)
    group_start = torch.cumsum(group_size, 0) - group_size
    size_of_bond = torch.repeat_interleave(group_size, group_size)
    start_of_bond = torch.repeat_interleave(group_start, group_size)
    others = size_of_bond - 1  # each short bond pairs with every other short bond of its centre
    first = torch.repeat_interleave(torch.arange(short.numel(), device=short.device), others)
    # k-th partner of bond a (k = 0 … n−2) is the k-th bond of the group, skipping a itself.
    first_of_run = torch.repeat_interleave(torch.cumsum(others, 0) - others, others)
    k = torch.arange(first.numel(), device=short.device) - first_of_run
    own = first - start_of_bond[first]
    second = start_of_bond[first] + k + (k >= own).to(_INDEX)
    return short, first, second


def search_positions(atoms: Atoms, cutoff: float, label: str) -> np.ndarray:
    """Positions (Å, float64) for the neighbour search of one structure, with vacuum gaps along
    non-periodic directions narrowed as in :func:`gptff_core.graph.find_bonds` (bonds are
    unchanged); refuses a box too lopsided for vesin (host work, O(N log N))."""
    pbc = np.asarray(atoms.pbc, dtype=bool)
    box = np.asarray(atoms.cell.array, dtype=np.float64)
    axes = non_periodic_axes(box, pbc)
    positions = np.asarray(atoms.positions, dtype=np.float64)
    if len(axes):
        positions = narrow_vacuum_gaps(positions, axes, max(VACUUM_GAP, 2.0 * cutoff))
    try:
        check_search_box(positions, box, pbc, axes, cutoff)
    except StructureError as error:
        raise StructureError(f"{label}: {error}") from None
    return positions


def home_positions_torch(
    atoms: Atoms, centre: torch.Tensor, neighbour: torch.Tensor, shift: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`gptff_core.graph.home_positions` in torch on the device of ``shift``: positions
    (Å, float64) moved into the cell along periodic directions and centred along the others,
    and the image shifts that keep every bond vector unchanged."""
    device = shift.device
    cell_np = np.asarray(atoms.cell.array, dtype=np.float64)
    pbc = np.asarray(atoms.pbc, dtype=bool)
    positions = torch.as_tensor(np.asarray(atoms.positions, dtype=np.float64), device=device)
    if pbc.any():
        periodic = torch.as_tensor(cell_np[pbc], device=device)
        inverse = torch.as_tensor(np.linalg.pinv(cell_np[pbc]), device=device)
        images = torch.floor(positions @ inverse)
        positions = positions - images @ periodic
        axis_of = torch.as_tensor(np.flatnonzero(pbc), device=device)
        full = torch.zeros(len(positions), 3, dtype=_INDEX, device=device)
        full[:, axis_of] = images.to(_INDEX)
        shift = shift + full[neighbour] - full[centre]
    axes = non_periodic_axes(cell_np, pbc)
    if len(axes):
        axes_t = torch.as_tensor(np.ascontiguousarray(axes), device=device)
        positions = positions - (positions @ axes_t.T).mean(dim=0) @ axes_t
    return positions, shift


def check_shortest_torch(
    parts: Sequence[tuple[torch.Tensor, ...]],
    labels: Sequence[str],
    atoms_of: Callable[[int], Atoms],
) -> None:
    """Refuse bonds shorter than the minimum interatomic distance with one reduction (one host
    sync) over the bonds ``(i, j, S, d)`` of every structure; on failure the host check of the
    offending structure (``atoms_of(k)`` gives structure k) raises the CPU builder's message."""
    lengths = [part[3] for part in parts if part[3].numel()]
    if not lengths or float(torch.cat(lengths).min()) >= MIN_INTERATOMIC_DISTANCE:
        return
    for k, ((i, j, _, d), label) in enumerate(zip(parts, labels, strict=True)):
        if d.numel() and float(d.min()) < MIN_INTERATOMIC_DISTANCE:
            numpy = (t.cpu().numpy() for t in (i, j, d))
            check_min_distance(atoms_of(k), *numpy, label)


def structure_bonds_torch(
    atoms: Atoms, label: str, device: torch.device, bond_cutoff: float = BOND_CUTOFF
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Check one structure (as :func:`~gptff_core.validation.check_structure`) and return its
    bonds ``(i, j, S, d)`` (≤ ``bond_cutoff``, Å) on ``device``, as :func:`bonds_torch`; the
    shortest bond is not checked here (see :func:`check_shortest_torch`)."""
    check_structure(atoms, label=label)
    points = torch.as_tensor(search_positions(atoms, bond_cutoff, label), device=device)
    cell = torch.as_tensor(np.asarray(atoms.cell.array, dtype=np.float64), device=device)
    return bonds_torch(points, cell, atoms.pbc, bond_cutoff)


def triplet_count_torch(
    centre: torch.Tensor, length: torch.Tensor, cutoff: float = THREE_BODY_CUTOFF
) -> int:
    """Number of triplets :func:`triplets_torch` gives for these bonds (one host sync): Σ n(n−1)
    over centres with n bonds ≤ ``cutoff`` (Å)."""
    per_centre = torch.bincount(centre[length <= cutoff])
    return int((per_centre * (per_centre - 1)).sum())


def build_graph_torch(
    structures: Sequence[Atoms],
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    bond_cutoff: float = BOND_CUTOFF,
    three_body_cutoff: float = THREE_BODY_CUTOFF,
    labels: Sequence[str] | None = None,
) -> Graph:
    """:func:`gptff_core.graph.build_graph` with the search, triplets and stacking in torch on
    ``device``: same arguments (cutoffs in Å), same checks and errors, the same graph up to the
    order of the bonds of each centre atom (and so of the triplets).

    Raises:
        GPTFFInputError: ``structures`` is not a non-empty list.
        StructureError: for an input GPTFF cannot evaluate (as ``build_graph``).
    """
    structures = structure_list(structures, "build_graph_torch")
    labels = structure_labels(structures, labels)
    device = torch.device(device)
    parts = [
        structure_bonds_torch(atoms, label, device, bond_cutoff)
        for atoms, label in zip(structures, labels, strict=True)
    ]
    check_shortest_torch(parts, labels, structures.__getitem__)
    return stack_graphs_torch(structures, parts, dtype, device, three_body_cutoff)


def stack_graphs_torch(
    structures: list[Atoms],
    parts: list[tuple[torch.Tensor, ...]],
    dtype: torch.dtype,
    device: torch.device,
    three_body_cutoff: float = THREE_BODY_CUTOFF,
) -> Graph:
    """The :class:`Graph` of checked structures from their bonds ``(i, j, S, d)`` on ``device``
    (as :func:`structure_bonds_torch` gives them): triplets (≤ ``three_body_cutoff``, Å), homed
    positions and offsets of every structure, concatenated."""
    homed = []
    for atoms, (i, j, shift, length) in zip(structures, parts, strict=True):
        positions, shift = home_positions_torch(atoms, i, j, shift)
        homed.append((positions, (i, j, shift, length)))
    cells = torch.as_tensor(
        np.stack([np.asarray(a.cell.array, dtype=np.float64) for a in structures]), device=device
    )
    numbers = torch.as_tensor(
        np.concatenate([np.asarray(a.numbers, dtype=np.int64) for a in structures]), device=device
    )
    volumes = torch.tensor([cell_volume(a) for a in structures], dtype=torch.float64)
    return stack_homed_torch(homed, cells, numbers, volumes.to(device), dtype, three_body_cutoff)


def stack_homed_torch(
    homed: list[tuple[torch.Tensor, tuple[torch.Tensor, ...]]],
    cells: torch.Tensor,
    numbers: torch.Tensor,
    volumes: torch.Tensor,
    dtype: torch.dtype,
    three_body_cutoff: float = THREE_BODY_CUTOFF,
) -> Graph:
    """One :class:`Graph` from each structure's homed positions (Å) and bonds ``(i, j, S, d)``
    (shifts already homed), with ``cells`` (B, 3, 3) rows in Å, ``numbers`` (N,) and ``volumes``
    (B,) Å³, all on one device: triplets (≤ ``three_body_cutoff``, Å) and offsets added."""
    device = cells.device
    columns: dict[str, list[torch.Tensor]] = {k: [] for k in ("i", "j", "S", "r", "s", "a", "b")}
    atom_offset = bond_offset = short_offset = 0
    for positions, (i, j, shift, length) in homed:
        short, first, second = triplets_torch(i, length, three_body_cutoff)
        for key, value in zip(
            "ijSrsab",
            (i + atom_offset, j + atom_offset, shift, positions, short + bond_offset,
             first + short_offset, second + short_offset),
            strict=True,
        ):  # fmt: skip
            columns[key].append(value)
        atom_offset += len(positions)
        bond_offset += i.numel()
        short_offset += short.numel()
    sizes = [len(positions) for positions, _ in homed]
    counts = torch.tensor(sizes, dtype=_INDEX, device=device)
    return Graph(
        numbers=numbers,
        positions=torch.cat(columns["r"]).to(dtype),
        cells=cells.to(dtype),
        atom_structure=torch.repeat_interleave(torch.arange(len(homed), device=device), counts),
        atoms_per_structure=counts,
        bond_centre=torch.cat(columns["i"]),
        bond_neighbour=torch.cat(columns["j"]),
        bond_shift=torch.cat(columns["S"]).to(dtype),
        short_bonds=torch.cat(columns["s"]),
        triplet_first=torch.cat(columns["a"]),
        triplet_second=torch.cat(columns["b"]),
        volumes=volumes.to(dtype),
        largest_structure=max(sizes),
    )
