"""Batched prediction: energies, forces and stresses of many structures at once.

Structures are validated, their graphs built one by one, and consecutive structures stacked into
batches bounded in atoms, bonds and triplets (which bound the memory of an evaluation) and
evaluated together; results are returned per structure in the input order. Units: eV, eV/Å, eV/Å³
(ASE sign).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from ase import Atoms
from tqdm.auto import tqdm

from gptff_core.checkpoint import load_model
from gptff_core.devices import builds_on_device
from gptff_core.dispersion import D3Dispersion, add_dispersion
from gptff_core.errors import GPTFFInputError
from gptff_core.evaluate import Prediction, evaluate, require_finite, to_host
from gptff_core.graph import (
    BOND_CUTOFF,
    THREE_BODY_CUTOFF,
    Graph,
    stack_graphs,
    structure_graph,
)
from gptff_core.graph_torch import (
    check_shortest_torch,
    stack_graphs_torch,
    structure_bonds_torch,
    triplet_count_torch,
)
from gptff_core.model import GPTFF
from gptff_core.pretrained import DEFAULT_MODEL
from gptff_core.validation import as_atoms, check_structure

MAX_BONDS_PER_BATCH = 60_000
"""Default bound on the bonds of a batch. An energy + forces + stress evaluation in float32 holds
about 24 KB per bond at its peak (measured on CPU, torch 2.13: fcc Cu, rocksalt NaCl, bcc W and
diamond Si of 2,000–2,700 atoms), so 60,000 bonds take about 1.4 GB (twice that in float64)."""

MAX_TRIPLETS_PER_BATCH = 800_000
"""Default bound on the triplets of a batch: about 0.6 KB per triplet at the peak of a float32
evaluation (same measurement), so 800,000 triplets take about 0.5 GB; with the bond bound a batch
stays under about 2 GB."""


@dataclass
class Predictions:
    """Results in input order.

    Attributes:
        energies: (B,) total energies, eV.
        forces: one (n_atoms, 3) array per structure, eV/Å (None if not computed).
        stresses: one (3, 3) array per structure, eV/Å³, positive = tensile; None for a
            structure whose cell has no volume (e.g. a molecule without a box) or if not computed.
    """

    energies: np.ndarray
    forces: list[np.ndarray] | None
    stresses: list[np.ndarray | None] | None


def batches_by_size(sizes: Iterable[Sequence[int]], limits: Sequence[int]) -> Iterator[list[int]]:
    """Consecutive groups of indices whose sizes add up to at most ``limits`` in every component
    (e.g. atoms, bonds and triplets); an item that alone exceeds a limit forms a group of its own.

    ``sizes`` is read lazily: a group is yielded as soon as the size of the first item that does
    not fit in it has been read.
    """
    group: list[int] = []
    totals = [0] * len(limits)
    for index, size in enumerate(sizes):
        grown = [total + s for total, s in zip(totals, size, strict=True)]
        if group and any(g > limit for g, limit in zip(grown, limits, strict=True)):
            yield group
            group, grown = [], list(size)
        group.append(index)
        totals = grown
    if group:
        yield group


def _checked_atoms(structures: object) -> list[Atoms]:
    """``structures`` (one structure or a sequence) as checked ASE Atoms, refusing an empty
    input and naming a bad structure by its index in the input."""
    from pymatgen.core import SiteCollection

    if isinstance(structures, Atoms | SiteCollection):
        structures = [structures]
    atoms_list = [as_atoms(s) for s in structures]
    if not atoms_list:
        raise GPTFFInputError("no structures given: pass at least one structure")
    for index, atoms in enumerate(atoms_list):
        check_structure(atoms, label=f"structure {index}")
    return atoms_list


def predict(
    structures: Sequence[object] | object,
    model: str | os.PathLike | GPTFF = DEFAULT_MODEL,
    *,
    device: str | None = None,
    dtype: str | None = None,
    smooth: bool | None = None,
    forces: bool = True,
    stress: bool = True,
    max_atoms_per_batch: int = 2000,
    max_bonds_per_batch: int = MAX_BONDS_PER_BATCH,
    max_triplets_per_batch: int = MAX_TRIPLETS_PER_BATCH,
    progress: bool | None = None,
    dispersion: bool = False,
) -> Predictions:
    """Energies, forces and stresses of ``structures`` (ASE Atoms or pymatgen Structures).

    Args:
        structures: a structure or a sequence of them; positions and cells in Å.
        model: registry name, checkpoint path or a loaded :class:`GPTFF`.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``; ``None``: the CPU, or a loaded network's
            device.
        dtype: ``"float32"`` or ``"float64"``; ``None``: float32, or a loaded network's dtype.
        smooth: envelopes at the cutoffs (``None``: the checkpoint's setting, off when published).
        forces: compute forces (eV/Å).
        stress: compute stresses (eV/Å³).
        max_atoms_per_batch: atoms evaluated together at most.
        max_bonds_per_batch: bonds (≤ 5 Å) evaluated together at most; with the triplets they
            set the memory of an evaluation (see :data:`MAX_BONDS_PER_BATCH`).
        max_triplets_per_batch: triplets together at most (:data:`MAX_TRIPLETS_PER_BATCH`).
        progress: show a progress bar (``None``: only when stderr is a terminal).
        dispersion: add D3(BJ) for PBE (:mod:`gptff_core.dispersion`; needs torch-dftd).

    Raises:
        GPTFFInputError: for an empty input or a structure GPTFF cannot evaluate, named by its
            index in the input; all structures are checked before any evaluation (close
            contacts are found with the neighbours, when the structure's graph is built).
        ComputationError: a result is NaN or infinite (a damaged checkpoint), naming the
            structure.
    """
    atoms_list = _checked_atoms(structures)
    network = load_model(model, device=device, dtype=dtype, smooth=smooth).requires_grad_(False)
    parameter = next(network.parameters())
    d3 = D3Dispersion("pbe", device=parameter.device) if dispersion else None
    show = sys.stderr.isatty() if progress is None else progress
    limits = (max_atoms_per_batch, max_bonds_per_batch, max_triplets_per_batch)
    n = len(atoms_list)
    predictions = Predictions(
        energies=np.zeros(n),
        forces=[np.zeros((0, 3))] * n if forces else None,
        stresses=[None] * n if stress else None,
    )
    batches = _batched_graphs(atoms_list, limits, parameter.dtype, parameter.device)
    with tqdm(total=n, disable=not show, unit="structure") as bar:
        for group, graph in batches:
            result = evaluate(network, graph, forces=forces, stress=stress)
            require_finite(result, graph, [f"structure {i}" for i in group])
            _store(result, graph, group, predictions)
            bar.update(len(group))
    return predictions if d3 is None else add_dispersion(predictions, atoms_list, d3)


def _batched_graphs(
    atoms_list: Sequence[Atoms],
    limits: Sequence[int],
    dtype: torch.dtype,
    device: torch.device,
) -> Iterator[tuple[list[int], Graph]]:
    """Consecutive groups of ``atoms_list`` within ``limits`` (atoms, bonds ≤ 5 Å, triplets ≤
    3.5 Å) with their stacked graph. Each structure's graph is built when the batcher reads its
    size: at most one structure ahead of the batch being evaluated, so memory stays bounded. On
    the CPU the graphs are built in numpy; on another device in torch there."""
    on_device = builds_on_device(device)
    parts: dict[int, object] = {}  # graphs (CPU) or bonds (device) built and not yet stacked

    def sizes() -> Iterator[tuple[int, int, int]]:
        """(atoms, bonds, triplets) of each structure, its graph built as it is read."""
        for index, atoms in enumerate(atoms_list):
            label = f"structure {index}"
            if on_device:
                part = structure_bonds_torch(atoms, label, device)
                check_shortest_torch([part], [label], lambda _, atoms=atoms: atoms)
                counts = part[0].numel(), triplet_count_torch(part[0], part[3])
            else:
                part = structure_graph(atoms, BOND_CUTOFF, THREE_BODY_CUTOFF, label)
                counts = part.centre.size, part.triplet_first.size
            parts[index] = part
            yield len(atoms), *counts

    stack = stack_graphs_torch if on_device else stack_graphs
    for group in batches_by_size(sizes(), limits):
        atoms = [atoms_list[i] for i in group]
        yield group, stack(atoms, [parts.pop(i) for i in group], dtype, device)


def _store(result: Prediction, graph: Graph, group: list[int], predictions: Predictions) -> None:
    """Copy a batch's energies (eV), forces (eV/Å) and stresses (eV/Å³) into ``predictions``
    (float64, at the structures' input indices ``group``); forces and stresses only where
    ``predictions`` holds lists for them, a stress only for a cell with a volume."""
    host = to_host(result, graph)
    predictions.energies[group] = host.energies
    for slot, index in enumerate(group):
        if predictions.forces is not None:
            predictions.forces[index] = host.forces[slot]
        if predictions.stresses is not None:
            predictions.stresses[index] = host.stresses[slot]
