"""Batched prediction: energies, forces and stresses of many structures at once.

Structures are validated, stacked into graphs of at most ``max_atoms_per_batch`` atoms and evaluated
together; results are returned per structure in the input order. Units: eV, eV/Å, eV/Å³ (ASE sign).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from ase import Atoms
from tqdm.auto import tqdm

from gptff_core.checkpoint import load_model
from gptff_core.errors import GPTFFInputError
from gptff_core.evaluate import evaluate
from gptff_core.graph import build_graph
from gptff_core.model import GPTFF
from gptff_core.pretrained import DEFAULT_MODEL
from gptff_core.validation import as_atoms, check_structure


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


def batches_by_atoms(sizes: Sequence[int], max_atoms: int) -> Iterator[list[int]]:
    """Consecutive groups of indices whose sizes add up to at most ``max_atoms`` (a structure
    larger than that forms a group of its own)."""
    group: list[int] = []
    total = 0
    for index, size in enumerate(sizes):
        if group and total + size > max_atoms:
            yield group
            group, total = [], 0
        group.append(index)
        total += size
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
    device: str = "cpu",
    dtype: str = "float32",
    smooth: bool | None = None,
    forces: bool = True,
    stress: bool = True,
    max_atoms_per_batch: int = 2000,
    progress: bool | None = None,
) -> Predictions:
    """Energies, forces and stresses of ``structures`` (ASE Atoms or pymatgen Structures).

    Args:
        structures: a structure or a sequence of them; positions and cells in Å.
        model: registry name, checkpoint path or a loaded :class:`GPTFF`.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        dtype: ``"float32"`` or ``"float64"``.
        smooth: envelopes at the cutoffs (``None``: the checkpoint's setting, off when published).
        forces: compute forces (eV/Å).
        stress: compute stresses (eV/Å³).
        max_atoms_per_batch: atoms evaluated together (bounds memory).
        progress: show a progress bar (``None``: only when stderr is a terminal).

    Raises:
        GPTFFInputError: for an empty input or a structure GPTFF cannot evaluate, named by its
            index in the input; all structures are checked before any evaluation (close
            contacts are found with the neighbours, when the structure's batch is built).
    """
    atoms_list = _checked_atoms(structures)
    network = load_model(model, device=device, dtype=dtype, smooth=smooth)
    parameter = next(network.parameters())
    groups = list(batches_by_atoms([len(a) for a in atoms_list], max_atoms_per_batch))
    show = sys.stderr.isatty() if progress is None else progress

    energies = np.zeros(len(atoms_list))
    all_forces: list[np.ndarray] = [np.zeros((0, 3))] * len(atoms_list)
    all_stresses: list[np.ndarray | None] = [None] * len(atoms_list)
    with tqdm(total=len(atoms_list), disable=not show, unit="structure") as bar:
        for group in groups:
            graph = build_graph(
                [atoms_list[i] for i in group],
                dtype=parameter.dtype,
                device=parameter.device,
                labels=[f"structure {i}" for i in group],
            )
            result = evaluate(network, graph, forces=forces, stress=stress)
            counts = graph.atoms_per_structure.tolist()
            split_forces = torch.split(result.forces, counts) if forces else None
            for slot, index in enumerate(group):
                energies[index] = result.energy[slot].item()
                if forces:
                    all_forces[index] = split_forces[slot].cpu().numpy().astype(np.float64)
                if stress and bool(result.has_stress[slot]):
                    all_stresses[index] = result.stress[slot].cpu().numpy().astype(np.float64)
            bar.update(len(group))
    return Predictions(
        energies=energies,
        forces=all_forces if forces else None,
        stresses=all_stresses if stress else None,
    )
