"""The GPTFF network (Xie et al., Sci. Bull. 69 (2024) 3525), as specified in
``shared/docs/gptff-architecture.md``: embedding, radial basis, initial bond features, three
interaction layers (three-body, edge and atom updates; v2 adds LayerNorms and a transformer block
over the atoms of each structure), sum-pooling readout and per-element reference energies.

Units: positions and cells in Å, energies in eV. The network maps a :class:`~gptff_core.graph.Graph`
and (possibly strained) positions and cells to one energy per structure; forces and stress come
from autograd in :mod:`gptff_core.evaluate`. The interaction layers are in
:mod:`gptff_core.layers`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
from torch import nn
from torch.nn import functional as F

from gptff_core import fused
from gptff_core.graph import Graph
from gptff_core.layers import BondGeometry, InteractionLayer, gather, split_input


@dataclass(frozen=True)
class GPTFFConfig:
    """Sizes and options of a GPTFF network; saved inside the project's checkpoints.

    The defaults are the published v2 network; v1 is the same with ``transformer=False``.
    Lengths are feature-vector lengths; cutoffs and windows are in Å.
    """

    atom_feature_len: int = 64
    bond_feature_len: int = 64
    n_layers: int = 3
    n_radial: int = 16
    conv_hidden_len: int = 128
    readout_hidden_len: int = 64
    transformer: bool = True
    n_heads: int = 2
    transformer_ff_len: int = 256
    dropout: float = 0.1
    n_embeddings: int = 95
    embedding_max_norm: float = 1.0
    bond_cutoff: float = 5.0
    three_body_cutoff: float = 3.5
    smooth: bool = False
    bond_window: float = 0.5
    three_body_window: float = 0.5

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> GPTFFConfig:
        """Build from a dict, refusing unknown keys (a sign of an incompatible checkpoint)."""
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            from gptff_core.errors import CheckpointError

            raise CheckpointError(f"unknown GPTFF config keys {sorted(unknown)}")
        return cls(**values)


def radial_basis(distance: torch.Tensor, n_radial: int, cutoff: float) -> torch.Tensor:
    """``sqrt(2/rc)·sin(nπd/rc)/d`` for ``n = 0 … n_radial−1`` (Å⁻¹); shape (len(d), n_radial)."""
    n = torch.arange(n_radial, dtype=distance.dtype, device=distance.device)
    d = distance.unsqueeze(-1)
    return math.sqrt(2.0 / cutoff) * torch.sin(n * (math.pi / cutoff) * d) / d


def cutoff_envelope(distance: torch.Tensor, cutoff: float, window: float) -> torch.Tensor:
    """1 below ``cutoff − window``, 0 at ``cutoff``, a C² quintic smoothstep in between (Å)."""
    x = ((distance - (cutoff - window)) / window).clamp(0.0, 1.0)
    return 1.0 - x**3 * (10.0 - 15.0 * x + 6.0 * x**2)


class GPTFF(nn.Module):
    """The GPTFF network: energy (eV) per structure of a graph."""

    def __init__(self, config: GPTFFConfig):
        super().__init__()
        self.config = config
        a, b, n = config.atom_feature_len, config.bond_feature_len, config.n_radial
        self.embedding = nn.Parameter(torch.zeros(config.n_embeddings, a))
        self.bond_basis_proj = nn.Linear(n, b)
        self.bond_init = nn.Linear(2 * a + b, b)
        self.bond_init_radial = nn.Linear(n, b)
        self.layers = nn.ModuleList(InteractionLayer(config) for _ in range(config.n_layers))
        self.readout = nn.Sequential(
            nn.Linear(a, config.readout_hidden_len),
            nn.SiLU(),
            nn.Linear(config.readout_hidden_len, config.readout_hidden_len),
            nn.SiLU(),
            nn.Linear(config.readout_hidden_len, 1),
        )
        self.register_buffer(
            "reference_energies", torch.zeros(config.n_embeddings, dtype=torch.float64)
        )
        """eV per atom of each element (index = Z), added to the network energy; kept float64."""

    def _apply(self, fn, recurse=True):
        # Keep the reference energies in float64 whatever dtype the network is cast to: their
        # sum is formed in float64 and rounded once to float32, as the published code does.
        references = self.reference_energies
        super()._apply(fn, recurse)
        self.reference_energies = references.to(device=self.embedding.device)
        return self

    def reference_energy(self, graph: Graph) -> torch.Tensor:
        """Σ_i ref[Z_i] per structure (eV): summed in float64, then rounded to float32 as in the
        published implementation (up to ~1e-5 eV for hundreds of atoms; forces are unaffected)."""
        per_atom = self.reference_energies[graph.numbers]
        total = per_atom.new_zeros(graph.n_structures).index_add(0, graph.atom_structure, per_atom)
        return total.to(torch.float32)

    def embed(self, numbers: torch.Tensor) -> torch.Tensor:
        """Embedding rows with PyTorch's ``max_norm`` rule: a row whose L2 norm exceeds the maximum
        is scaled by ``max_norm / (norm + 1e-7)`` (the scale is not differentiated, as in torch)."""
        table = self.embedding
        norm = table.detach().norm(dim=-1, keepdim=True)
        limit = self.config.embedding_max_norm
        scale = torch.where(norm > limit, limit / (norm + 1e-7), torch.ones_like(norm))
        return (table * scale)[numbers]

    def geometry(self, graph: Graph, positions: torch.Tensor, cells: torch.Tensor) -> BondGeometry:
        """Bond vectors, lengths, radial bases, triplet cosines and envelopes at ``positions``
        (N, 3) and ``cells`` (B, 3, 3), Å."""
        cfg = self.config
        centre, neighbour = graph.bond_centre, graph.bond_neighbour
        image = torch.einsum("ek,ekl->el", graph.bond_shift, cells[graph.atom_structure[centre]])
        vectors = gather(positions, neighbour) + image - gather(positions, centre)
        length = vectors.norm(dim=-1)
        short_vectors = gather(vectors, graph.short_bonds)
        short_length = gather(length, graph.short_bonds)
        first, second = graph.triplet_first, graph.triplet_second
        cosine = (gather(short_vectors, first) * gather(short_vectors, second)).sum(-1) / (
            gather(short_length, first) * gather(short_length, second)
        )
        smooth = cfg.smooth
        return BondGeometry(
            centre=centre,
            neighbour=neighbour,
            basis=radial_basis(length, cfg.n_radial, cfg.bond_cutoff),
            short_centre=gather(centre, graph.short_bonds),
            short_neighbour=gather(neighbour, graph.short_bonds),
            short_basis=radial_basis(short_length, cfg.n_radial, cfg.three_body_cutoff),
            cosine=cosine.clamp(-1.0, 1.0) * (1.0 - 1e-6),
            bond_envelope=cutoff_envelope(length, cfg.bond_cutoff, cfg.bond_window)
            if smooth
            else None,
            short_envelope=cutoff_envelope(
                short_length, cfg.three_body_cutoff, cfg.three_body_window
            )
            if smooth
            else None,
        )

    def forward(self, graph: Graph, positions: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
        """Energies (eV), shape (structures,), of ``graph`` at ``positions`` (N, 3) and ``cells``
        (B, 3, 3), both in Å (they may carry a strain for the stress)."""
        geometry = self.geometry(graph, positions, cells)
        h = self.embed(graph.numbers)
        a = self.config.atom_feature_len
        w_i, w_j, w_basis = split_input(self.bond_init, [a, a, self.config.bond_feature_len])
        e = fused.gather_add(
            F.linear(self.bond_basis_proj(geometry.basis), w_basis, self.bond_init.bias),
            F.linear(h, w_i),
            geometry.centre,
            F.linear(h, w_j),
            geometry.neighbour,
        ) * self.bond_init_radial(geometry.basis)
        for layer in self.layers:
            h, e = layer(h, e, graph, geometry)

        pooled = h.new_zeros(graph.n_structures, h.shape[-1]).index_add(0, graph.atom_structure, h)
        return self.readout(pooled).squeeze(-1) + self.reference_energy(graph).to(h.dtype)
