"""Graphs of fully periodic structures already held as tensors on the network's device (the
systems of a TorchSim state), built there without going through ASE Atoms.

:class:`PeriodicGraphBuilder` gives the graph :func:`~gptff_core.graph.build_graph` gives for the
same structures (same bonds and triplets; tested against it). Host work per call: a copy of the
cells (B × 3 × 3) for the cell checks of :func:`~gptff_core.validation.check_cell`, repeated only
when a cell changed since the last call (NVT keeps them), one reduction for the atomic numbers and
finite positions, one for the shortest bond, and vesin's pair count per structure. When a check
fails, the offending structure is converted to Atoms and the Atoms path raises its message.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from ase import Atoms

from gptff_core.graph import BOND_CUTOFF, THREE_BODY_CUTOFF, Graph, check_search_box
from gptff_core.graph_torch import bonds_torch, check_shortest_torch, stack_homed_torch
from gptff_core.validation import MAX_ATOMIC_NUMBER, check_cell, check_structure

_PERIODIC = np.ones(3, dtype=bool)


class PeriodicGraphBuilder:
    """Builds the :class:`Graph` of fully periodic structures given as tensors on one device.

    Args:
        bond_cutoff: Å.
        three_body_cutoff: Å.
    """

    def __init__(
        self, bond_cutoff: float = BOND_CUTOFF, three_body_cutoff: float = THREE_BODY_CUTOFF
    ):
        self.bond_cutoff = float(bond_cutoff)
        self.three_body_cutoff = float(three_body_cutoff)
        self._checked_cells: np.ndarray | None = None  # host copy of the cells last checked

    def build(
        self,
        positions: torch.Tensor,
        cells: torch.Tensor,
        numbers: torch.Tensor,
        atoms_per_structure: Sequence[int],
        *,
        dtype: torch.dtype = torch.float32,
        labels: Sequence[str] | None = None,
    ) -> Graph:
        """The graph, on the device of ``positions``.

        Args:
            positions: (N, 3) Å, the structures' atoms one after the other.
            cells: (B, 3, 3) Å, lattice vectors as rows, every direction periodic.
            numbers: (N,) atomic numbers.
            atoms_per_structure: B host integers, the atoms of each structure.
            dtype: floating dtype of positions, cells and shifts.
            labels: names of the structures in error messages (default "structure <index>").

        Raises:
            StructureError: for a structure GPTFF cannot evaluate (as ``build_graph``).
        """
        sizes = [int(n) for n in atoms_per_structure]
        labels = (
            list(labels) if labels is not None else [f"structure {k}" for k in range(len(sizes))]
        )
        positions = positions.detach().to(torch.float64)
        cells = cells.detach().to(torch.float64)
        numbers = numbers.detach().to(torch.int64)

        def atoms_of(k: int) -> Atoms:
            start = sum(sizes[:k])
            return Atoms(
                numbers=numbers[start : start + sizes[k]].cpu().numpy(),
                positions=positions[start : start + sizes[k]].cpu().numpy(),
                cell=cells[k].cpu().numpy(),
                pbc=True,
            )

        self._check_cells(cells, labels)
        _check_atoms(positions, numbers, sizes, labels, atoms_of)
        homed = []
        for r, cell in zip(positions.split(sizes), cells, strict=True):
            i, j, shift, length = bonds_torch(r, cell, _PERIODIC, self.bond_cutoff)
            homed.append(_homed(r, cell, (i, j, shift, length)))
        check_shortest_torch([bonds for _, bonds in homed], labels, atoms_of)
        volumes = torch.linalg.det(cells).abs()
        return stack_homed_torch(homed, cells, numbers, volumes, dtype, self.three_body_cutoff)

    def _check_cells(self, cells: torch.Tensor, labels: Sequence[str]) -> None:
        """:func:`check_cell` and the search-box check on each cell, unless no cell changed."""
        host = cells.cpu().numpy()
        if self._checked_cells is not None and np.array_equal(host, self._checked_cells):
            return
        for cell, label in zip(host, labels, strict=True):
            check_cell(cell, _PERIODIC, label)
            check_search_box(np.zeros((1, 3)), cell, _PERIODIC, np.zeros((0, 3)), self.bond_cutoff)
        self._checked_cells = host.copy()


def _check_atoms(positions, numbers, sizes, labels, atoms_of) -> None:
    """Atomic numbers 1–94, finite positions and no empty structure, with one reduction; when one
    fails, :func:`check_structure` of each structure's Atoms raises the message."""
    bad = ((numbers < 1) | (numbers > MAX_ATOMIC_NUMBER)).any() | ~torch.isfinite(positions).all()
    if min(sizes) > 0 and not bool(bad):
        return
    for k, label in enumerate(labels):
        check_structure(atoms_of(k), label=label)


def _homed(
    positions: torch.Tensor, cell: torch.Tensor, bonds: tuple[torch.Tensor, ...]
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """Positions moved into the cell by whole lattice vectors and the bonds with the image
    shifts that keep every bond vector (as :func:`gptff_core.graph.home_positions`)."""
    i, j, shift, length = bonds
    images = torch.floor(positions @ torch.linalg.inv(cell))
    whole = images.to(shift.dtype)
    return positions - images @ cell, (i, j, shift + whole[j] - whole[i], length)
