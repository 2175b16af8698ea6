"""Energy, forces and stress of a graph in one autograd pass.

Forces are ``F = −∂E/∂r`` (eV/Å). Stress is ``σ = (1/V) ∂E/∂ε`` at ``ε = 0`` (eV/Å³, positive =
tensile, ASE's sign), where positions and cell rows of each structure are mapped ``x → x·(I + ε)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from gptff_core.errors import ComputationError
from gptff_core.graph import Graph
from gptff_core.model import GPTFF


@dataclass
class Prediction:
    """Results for the structures of one graph (tensors, detached).

    Attributes:
        energy: (B,) eV.
        forces: (N, 3) eV/Å, or None when not asked for.
        stress: (B, 3, 3) eV/Å³, ASE sign, or None when not asked for; zero for structures whose
            cell has no volume (see ``has_stress``).
        has_stress: (B,) whether the structure's cell has a volume, so that a stress is defined.
    """

    energy: torch.Tensor
    forces: torch.Tensor | None
    stress: torch.Tensor | None
    has_stress: torch.Tensor


def evaluate(
    model: GPTFF,
    graph: Graph,
    *,
    forces: bool = True,
    stress: bool = True,
    keep_graph: bool = False,
) -> Prediction:
    """Evaluate ``model`` on ``graph``; forces and stress come from one backward pass.

    ``keep_graph=True`` keeps the autograd graph of the results (for training on forces and
    stress); otherwise they are detached."""
    has_stress = graph.volumes > 0
    if not (forces or stress):
        with torch.inference_mode():
            energy = model(graph, graph.positions, graph.cells)
        return Prediction(energy.detach(), None, None, has_stress)

    with torch.enable_grad():
        positions = graph.positions.detach().requires_grad_(forces)
        strain = torch.zeros_like(graph.cells, requires_grad=stress)
        deformation = torch.eye(3, dtype=strain.dtype, device=strain.device) + strain
        strained_positions = torch.einsum(
            "ni,nij->nj", positions, deformation[graph.atom_structure]
        )
        strained_cells = torch.bmm(graph.cells, deformation)
        energy = model(graph, strained_positions, strained_cells)
        inputs = [t for t, wanted in ((positions, forces), (strain, stress)) if wanted]
        gradients = list(torch.autograd.grad(energy.sum(), inputs, create_graph=keep_graph))

    result_forces = -gradients.pop(0) if forces else None
    result_stress = None
    if stress:
        volume = torch.where(has_stress, graph.volumes, torch.ones_like(graph.volumes))
        result_stress = gradients.pop(0) / volume[:, None, None]
        result_stress = torch.where(has_stress[:, None, None], result_stress, 0.0)
    if not keep_graph:
        energy = energy.detach()
        result_forces = None if result_forces is None else result_forces.detach()
        result_stress = None if result_stress is None else result_stress.detach()
    return Prediction(energy, result_forces, result_stress, has_stress)


def require_finite(result: Prediction, graph: Graph, labels: Sequence[str] | None = None) -> None:
    """Refuse a result with a NaN or infinite energy, force or stress, naming the first structure
    it belongs to (``labels``, default ``structure <index>``), so no NaN is passed on silently.

    Raises:
        ComputationError: some result of a structure is not finite.
    """
    bad = (~torch.isfinite(result.energy)).long()
    if result.forces is not None:
        bad_atoms = ~torch.isfinite(result.forces).all(dim=1)
        bad = bad.index_add(0, graph.atom_structure, bad_atoms.long())
    if result.stress is not None:
        bad = bad + (~torch.isfinite(result.stress).flatten(1).all(dim=1)).long()
    if not bool(bad.any()):
        return
    index = int(torch.nonzero(bad)[0])
    name = labels[index] if labels is not None else f"structure {index}"
    raise ComputationError(
        f"GPTFF gave a non-finite (NaN or infinite) energy, force or stress for {name}: the "
        "checkpoint may be damaged (a path is not sha256-checked; `gptff models --verify` checks "
        "the published ones) or the structure is far outside what the network knows"
    )


@dataclass
class HostResults:
    """One batch's results per structure, float64 numpy, each array copied off the device once.

    Attributes:
        energies: (B,) eV.
        forces: one (n_atoms, 3) array per structure, eV/Å (None if not computed).
        stresses: one (3, 3) array per structure, eV/Å³, ASE sign, None for a structure whose
            cell has no volume (None if not computed).
    """

    energies: np.ndarray
    forces: list[np.ndarray] | None
    stresses: list[np.ndarray | None] | None


def to_host(result: Prediction, graph: Graph) -> HostResults:
    """``result`` (of ``graph``) split per structure on the host, with one device-to-host copy
    per array rather than one per structure."""

    def host(tensor: torch.Tensor) -> np.ndarray:
        return tensor.detach().to("cpu", torch.float64, copy=True).numpy()

    forces = stresses = None
    if result.forces is not None:
        ends = np.cumsum(graph.atoms_per_structure.cpu().numpy())[:-1]
        forces = np.split(host(result.forces), ends)
    if result.stress is not None:
        has_stress = result.has_stress.cpu().numpy()
        stresses = [
            s if ok else None for s, ok in zip(host(result.stress), has_stress, strict=True)
        ]
    return HostResults(host(result.energy), forces, stresses)
