"""Graph reuse for dynamics: a Verlet neighbour list with a skin, exact at every step.

:class:`VerletGraphBuilder` keeps the candidate pairs ``(i, j, S)`` within ``bond_cutoff + skin``
of a reference configuration (found by :func:`~gptff_core.graph.find_bonds`) and, while no pair
outside that list can have come within ``bond_cutoff``, rebuilds only the cheap part of the graph:
the exact lengths of the candidate pairs from the current positions and cell, the bonds among them
(``d ≤ bond_cutoff``, the rule of ``find_bonds``) and their triplets. The graph is therefore the
one :func:`~gptff_core.graph.build_graph` gives, bond for bond, at every step (up to a bond within
rounding, ~1e-15 Å, of a cutoff, whose length both compute in a different order).

The bound that decides when the list is still complete holds for any change of positions and cell.
Let ``C₀``, ``r⁰`` be the reference cell and positions, ``C`` and ``r`` the current ones, and ``G``
the smallest linear map with ``C₀ₚ·G = Cₚ`` on the periodic cell vectors (``G = C₀⁻¹C`` for a
fully periodic cell, the identity without periodicity). Every pair vector is then exactly::

    r_j − r_i + S·C = (r⁰_j − r⁰_i + S·C₀)·G + δ_j − δ_i,    δ_i = r_i − r⁰_i·G,

so a pair outside the list (reference length > ``bond_cutoff + skin``) is now longer than
``σ_min(G)·(bond_cutoff + skin) − 2·max|δ|``. The list is reused while that stays ≥ ``bond_cutoff``:
``2·max|δ| + (1 − σ_min(G))·(bond_cutoff + skin) ≤ skin``. Without a cell change this is the usual
``2·max|Δr| ≤ skin``; a cell change that carries the atoms along (ASE's NPT integrators, cell
filters) only costs the strain term. Positions are used as given, unwrapped or not: an atom wrapped
back into the cell has moved by a lattice vector, which the bound sees, so it triggers a rebuild
when that matters.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
from ase import Atoms

from gptff_core.devices import builds_on_device
from gptff_core.errors import GPTFFInputError
from gptff_core.graph import (
    BOND_CUTOFF,
    THREE_BODY_CUTOFF,
    Graph,
    find_bonds,
    graph_from_bonds,
)
from gptff_core.graph_torch import check_shortest_torch, stack_graphs_torch
from gptff_core.validation import as_atoms, check_structure

logger = logging.getLogger(__name__)

_ROUNDING = 1e-9  # Å, taken off the skin so that rounding in the bound never keeps a stale list


class VerletGraphBuilder:
    """Builds the :class:`~gptff_core.graph.Graph` of successive configurations of one structure,
    searching for neighbours only when the bound in the module docstring requires it.

    Args:
        skin: Å, extra search distance beyond ``bond_cutoff``; 1.0 Å suits MD at ordinary
            temperatures (a rebuild every few tens of 1 fs steps).
        bond_cutoff: Å.
        three_body_cutoff: Å.

    Attributes:
        n_rebuilds: number of neighbour searches done so far.
    """

    def __init__(
        self,
        skin: float = 1.0,
        bond_cutoff: float = BOND_CUTOFF,
        three_body_cutoff: float = THREE_BODY_CUTOFF,
    ):
        if not (math.isfinite(skin) and skin > 0):
            raise GPTFFInputError(f"skin must be a positive, finite distance in Å, got {skin}")
        self.skin = float(skin)
        self.bond_cutoff = float(bond_cutoff)
        self.three_body_cutoff = float(three_body_cutoff)
        self.n_rebuilds = 0
        self._numbers: np.ndarray | None = None
        self._pbc: np.ndarray | None = None
        self._positions = np.zeros((0, 3))
        self._cell = np.zeros((3, 3))
        self._cell_inverse = np.zeros((3, 3))  # pseudo-inverse of the periodic reference rows
        self._centre = np.zeros(0, dtype=np.int64)
        self._neighbour = np.zeros(0, dtype=np.int64)
        self._shift = np.zeros((0, 3), dtype=np.int64)
        # The few distinct shifts, and each pair's neighbour image as an index into the table of
        # every atom's images (atom-major): faster than a (pairs × 3) @ (3 × 3) product per step.
        self._distinct_shifts = np.zeros((0, 3))
        self._image = np.zeros(0, dtype=np.int64)
        self._on_device: tuple | None = None  # (device, the same arrays there)

    def build(
        self,
        atoms: Atoms,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> Graph:
        """The graph of ``atoms`` (positions and cell in Å), identical in bonds and triplets to
        ``build_graph([atoms])``; the structure is validated on every call.

        Raises:
            StructureError: for a structure GPTFF cannot evaluate.
        """
        atoms = as_atoms(atoms)
        check_structure(atoms)
        positions = np.asarray(atoms.positions, dtype=np.float64)
        cell = np.asarray(atoms.cell.array, dtype=np.float64)
        if self._needs_search(atoms, positions, cell):
            self._search(atoms, positions, cell)
        if builds_on_device(device):
            return self._device_graph(atoms, positions, cell, dtype, torch.device(device))
        images = positions[:, None, :] + (self._distinct_shifts @ cell)[None]
        vectors = images.reshape(-1, 3)[self._image] - positions[self._centre]
        length = np.sqrt(np.einsum("ij,ij->i", vectors, vectors))
        bond = length <= self.bond_cutoff
        return graph_from_bonds(
            atoms,
            self._centre[bond],
            self._neighbour[bond],
            self._shift[bond],
            length[bond],
            dtype=dtype,
            device=device,
            three_body_cutoff=self.three_body_cutoff,
        )

    def _device_graph(
        self,
        atoms: Atoms,
        positions: np.ndarray,
        cell: np.ndarray,
        dtype: torch.dtype,
        device: torch.device,
    ) -> Graph:
        """:meth:`build`'s graph with the candidate lengths, bonds, triplets and stacking in torch
        on ``device``; the candidate pairs are uploaded once per neighbour search."""
        if self._on_device is None or self._on_device[0] != device:
            arrays = (self._centre, self._neighbour, self._shift, self._image)
            shifts = torch.as_tensor(self._distinct_shifts, dtype=torch.float64, device=device)
            self._on_device = (device, *(torch.as_tensor(a, device=device) for a in arrays), shifts)
        _, centre, neighbour, shift, image, distinct_shifts = self._on_device
        r = torch.as_tensor(positions, device=device)
        images = r[:, None, :] + (distinct_shifts @ torch.as_tensor(cell, device=device))[None]
        length = torch.linalg.vector_norm(images.reshape(-1, 3)[image] - r[centre], dim=1)
        bond = length <= self.bond_cutoff
        part = (centre[bond], neighbour[bond], shift[bond], length[bond])
        check_shortest_torch([part], ["structure"], lambda _: atoms)
        return stack_graphs_torch([atoms], [part], dtype, device, self.three_body_cutoff)

    def _needs_search(self, atoms: Atoms, positions: np.ndarray, cell: np.ndarray) -> bool:
        """Whether a pair outside the candidate list may now be a bond (or the atoms changed)."""
        if (
            self._numbers is None
            or not np.array_equal(atoms.numbers, self._numbers)
            or not np.array_equal(atoms.pbc, self._pbc)
        ):
            return True
        periodic = self._pbc
        mapping = np.eye(3) + self._cell_inverse @ (cell[periodic] - self._cell[periodic])
        drift = positions - self._positions @ mapping
        largest_drift = np.sqrt(np.einsum("ij,ij->i", drift, drift).max())
        shortest_stretch = np.linalg.svd(mapping, compute_uv=False).min()
        shrink = 2.0 * largest_drift + (1.0 - shortest_stretch) * (self.bond_cutoff + self.skin)
        return not shrink <= self.skin - _ROUNDING  # a NaN also rebuilds

    def _search(self, atoms: Atoms, positions: np.ndarray, cell: np.ndarray) -> None:
        """New candidate pairs within ``bond_cutoff + skin`` and new reference configuration."""
        self._centre, self._neighbour, self._shift, _ = find_bonds(
            atoms, self.bond_cutoff + self.skin
        )
        self._distinct_shifts, which = np.unique(self._shift, axis=0, return_inverse=True)
        self._image = self._neighbour * len(self._distinct_shifts) + which.reshape(-1)
        self._numbers = np.array(atoms.numbers, copy=True)
        self._pbc = np.array(atoms.pbc, dtype=bool, copy=True)
        self._positions = positions.copy()
        self._cell = cell.copy()
        self._cell_inverse = np.linalg.pinv(cell[self._pbc])
        self._on_device = None
        self.n_rebuilds += 1
        logger.debug("neighbour search %d: %d candidate pairs", self.n_rebuilds, self._centre.size)
