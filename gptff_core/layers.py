"""The interaction layers of the GPTFF network (:mod:`gptff_core.model`), as specified in
``shared/docs/gptff-architecture.md``: the three-body, edge and atom updates, the v2 transformer
block over the atoms of each structure, and :class:`BondGeometry`, the per-graph geometry they
share.

Units: bond lengths and cutoffs in Å, radial bases in Å⁻¹; features are dimensionless.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn import functional as F

from gptff_core import fused
from gptff_core.graph import Graph
from gptff_core.triplets import triplet_messages

if TYPE_CHECKING:
    from gptff_core.model import GPTFFConfig


@dataclass
class BondGeometry:
    """Per-graph geometry shared by every layer (bonds E, short bonds S, triplets T).

    Attributes:
        centre, neighbour: (E,) atoms i and j of each bond i→j.
        basis: (E, n_radial) radial basis of the bond lengths at the 5 Å cutoff, Å⁻¹.
        short_centre, short_neighbour: (S,) atoms of the short bonds.
        short_basis: (S, n_radial) radial basis of the short bonds at the 3.5 Å cutoff, Å⁻¹.
        cosine: (T,) cosine of each triplet's angle (clamped and scaled as published).
        bond_envelope: (E,) smooth-mode envelope at 5 Å, or None.
        short_envelope: (S,) smooth-mode envelope at 3.5 Å, or None.
    """

    centre: torch.Tensor
    neighbour: torch.Tensor
    basis: torch.Tensor
    short_centre: torch.Tensor
    short_neighbour: torch.Tensor
    short_basis: torch.Tensor
    cosine: torch.Tensor
    bond_envelope: torch.Tensor | None
    short_envelope: torch.Tensor | None
    padding: StructurePadding | None = None


@dataclass
class StructurePadding:
    """Where each atom sits in the (structures, longest, features) layout of the transformer,
    computed once per graph and shared by every layer (its one host sync, for ``longest``).

    Attributes:
        slot: (N,) position of each atom within its structure.
        mask: (B, longest) True where a slot holds an atom; None for one structure.
        longest: the most atoms in one structure.
    """

    slot: torch.Tensor
    mask: torch.Tensor | None
    longest: int


def structure_padding(graph: Graph) -> StructurePadding:
    """The padding layout of ``graph`` (atoms of a structure are contiguous in it); the largest
    structure size is the graph's ``largest_structure``, read back from the device only for a
    graph built without it."""
    counts = graph.atoms_per_structure
    atoms = graph.atom_structure.shape[0]
    offsets = torch.cumsum(counts, 0) - counts
    slot = torch.arange(atoms, device=counts.device) - offsets[graph.atom_structure]
    if graph.n_structures == 1:
        return StructurePadding(slot, None, atoms)
    longest = graph.largest_structure
    if longest is None:
        longest = int(counts.max())
    mask = torch.arange(longest, device=counts.device).unsqueeze(0) < counts.unsqueeze(1)
    return StructurePadding(slot, mask, longest)


def gather(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows ``values[index]`` (``index_select``: its backward is a fast ``index_add``)."""
    return torch.index_select(values, 0, index)


def split_input(layer: nn.Linear, widths: list[int]) -> list[torch.Tensor]:
    """The blocks of ``layer.weight`` acting on each part of a concatenated input.

    ``W·[x₁, x₂, …] = W₁·x₁ + W₂·x₂ + …``: each part is projected once per atom or bond and the
    projections are gathered, instead of gathering and concatenating the inputs per bond or
    triplet and multiplying the wide concatenation."""
    return list(layer.weight.split(widths, dim=1))


class ThreeBodyUpdate(nn.Module):
    """Adds to each bond a the messages of the triplets (a: i→j, b: i→k) that start with it:
    ``m = σ(W1·x)⊙silu(W2·x)⊙Bj(T_a)⊙Bk(T_b)⊙A(cosθ)``, ``x = silu(W·[h_i, h_j, h_k, e_a, e_b])``.

    Computed per short bond wherever possible: ``W·[…]`` is the sum of a part that depends on
    the first bond and a part that depends on the second, and ``Bj(T_a)`` (with the smooth
    envelope of a) multiplies the sum over triplets after it is taken."""

    def __init__(self, config: GPTFFConfig):
        super().__init__()
        a, b = config.atom_feature_len, config.bond_feature_len
        self.widths = [a, a, a, b, b]
        self.mix = nn.Linear(3 * a + 2 * b, b)  # [h_i, h_j, h_k, e_a, e_b]
        self.gate = nn.Linear(b, b)
        self.core = nn.Linear(b, b)
        self.radial_first = nn.Linear(config.n_radial, b)
        self.radial_second = nn.Linear(config.n_radial, b)
        self.angle = nn.Linear(1, b)

    def forward(
        self, h: torch.Tensor, e: torch.Tensor, graph: Graph, geometry: BondGeometry
    ) -> torch.Tensor:
        first, second = graph.triplet_first, graph.triplet_second
        w_i, w_j, w_k, w_a, w_b = split_input(self.mix, self.widths)
        short_e = gather(e, graph.short_bonds)
        as_first = fused.gather_add(
            F.linear(short_e, w_a, self.mix.bias),
            F.linear(h, w_i),
            geometry.short_centre,
            F.linear(h, w_j),
            geometry.short_neighbour,
        )
        as_second = gather(F.linear(h, w_k), geometry.short_neighbour) + F.linear(short_e, w_b)
        radial_first = self.radial_first(geometry.short_basis)
        radial_second = self.radial_second(geometry.short_basis)
        if geometry.short_envelope is not None:
            radial_first = radial_first * geometry.short_envelope.unsqueeze(-1)
            radial_second = radial_second * geometry.short_envelope.unsqueeze(-1)
        per_first_bond = triplet_messages(
            as_first,
            as_second,
            first,
            second,
            torch.cat([self.gate.weight, self.core.weight]),
            torch.cat([self.gate.bias, self.core.bias]),
            radial_second,
            geometry.cosine,
            self.angle.weight.T,
            self.angle.bias,
        )
        return e.index_add(0, graph.short_bonds, per_first_bond * radial_first)


class EdgeUpdate(nn.Module):
    """``e_b ← e_b + silu(W3·(silu(W1·y)⊙σ(W2·y)))⊙Wr(R_b)`` with ``y = [h_i, h_j, e_b]``."""

    def __init__(self, config: GPTFFConfig):
        super().__init__()
        a, b = config.atom_feature_len, config.bond_feature_len
        self.widths = [a, a, b]
        self.core = nn.Linear(2 * a + b, b)
        self.gate = nn.Linear(2 * a + b, b)
        self.radial = nn.Linear(config.n_radial, b)
        self.out = nn.Linear(b, b)

    def forward(self, h: torch.Tensor, e: torch.Tensor, geometry: BondGeometry) -> torch.Tensor:
        core_i, core_j, core_e = split_input(self.core, self.widths)
        gate_i, gate_j, gate_e = split_input(self.gate, self.widths)
        # core and gate side by side: one projection per atom side and one per bond
        y = fused.gather_add(
            F.linear(e, torch.cat([core_e, gate_e]), torch.cat([self.core.bias, self.gate.bias])),
            F.linear(h, torch.cat([core_i, gate_i])),
            geometry.centre,
            F.linear(h, torch.cat([core_j, gate_j])),
            geometry.neighbour,
        )
        return fused.silu_times(self.out(fused.gated_silu(y)), self.radial(geometry.basis), e)


class AtomUpdate(nn.Module):
    """``h_i ← h_i + Σ_b silu(W1·g_b)⊙σ(W2·g_b)⊙Wr(R_b)``, ``g_b = silu(fc([h_i, h_j, e_b]))``."""

    def __init__(self, config: GPTFFConfig):
        super().__init__()
        a, b = config.atom_feature_len, config.bond_feature_len
        self.widths = [a, a, b]
        self.expand = nn.Linear(2 * a + b, config.conv_hidden_len)
        self.core = nn.Linear(config.conv_hidden_len, a)
        self.gate = nn.Linear(config.conv_hidden_len, a)
        self.radial = nn.Linear(config.n_radial, a)

    def forward(self, h: torch.Tensor, e: torch.Tensor, geometry: BondGeometry) -> torch.Tensor:
        w_i, w_j, w_e = split_input(self.expand, self.widths)
        g = fused.gather_add(
            F.linear(e, w_e, self.expand.bias),
            F.linear(h, w_i),
            geometry.centre,
            F.linear(h, w_j),
            geometry.neighbour,
            activate=True,
        )
        core_and_gate = F.linear(
            g,
            torch.cat([self.core.weight, self.gate.weight]),
            torch.cat([self.core.bias, self.gate.bias]),
        )
        radial = self.radial(geometry.basis)
        if geometry.bond_envelope is not None:
            radial = radial * geometry.bond_envelope.unsqueeze(-1)
        messages = fused.gated_silu(core_and_gate, radial)
        return h.index_add(0, geometry.centre, messages.to(h.dtype))  # h's dtype under autocast


class AtomTransformer(nn.Module):
    """One post-norm transformer encoder layer (as ``nn.TransformerEncoderLayer`` with GELU and
    ``batch_first``) whose attention runs over the atoms of each structure, never across
    structures of a batch."""

    def __init__(self, config: GPTFFConfig):
        super().__init__()
        a = config.atom_feature_len
        self.n_heads = config.n_heads
        self.dropout = config.dropout
        self.in_proj = nn.Linear(a, 3 * a)
        self.out_proj = nn.Linear(a, a)
        self.linear1 = nn.Linear(a, config.transformer_ff_len)
        self.linear2 = nn.Linear(config.transformer_ff_len, a)
        self.norm1 = nn.LayerNorm(a)
        self.norm2 = nn.LayerNorm(a)

    def _self_attention(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        batch, length, width = x.shape
        heads = self.in_proj(x).view(batch, length, 3, self.n_heads, width // self.n_heads)
        q, k, v = heads.permute(2, 0, 3, 1, 4)  # each (batch, heads, length, head_width)
        attended = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=None if mask is None else mask[:, None, None, :],
            dropout_p=self.dropout if self.training else 0.0,
        )
        attended = attended.transpose(1, 2).reshape(batch, length, width)
        return F.dropout(self.out_proj(attended), self.dropout, self.training)

    def forward(
        self, h: torch.Tensor, graph: Graph, padding: StructurePadding | None = None
    ) -> torch.Tensor:
        """``padding``: :func:`structure_padding` of ``graph`` (computed here when None)."""
        padding = structure_padding(graph) if padding is None else padding
        if padding.mask is None:
            dense = h.unsqueeze(0)
        else:
            dense = h.new_zeros(graph.n_structures, padding.longest, h.shape[-1])
            dense = dense.index_put((graph.atom_structure, padding.slot), h)
        x = self.norm1(dense + self._self_attention(dense, padding.mask))
        feed = self.linear2(F.dropout(F.gelu(self.linear1(x)), self.dropout, self.training))
        x = self.norm2(x + F.dropout(feed, self.dropout, self.training))
        return x[graph.atom_structure, padding.slot]


class InteractionLayer(nn.Module):
    """Three-body, edge and atom updates; in v2 followed by LayerNorm and the transformer block."""

    def __init__(self, config: GPTFFConfig):
        super().__init__()
        self.three_body = ThreeBodyUpdate(config)
        self.edge_update = EdgeUpdate(config)
        self.atom_update = AtomUpdate(config)
        if config.transformer:
            self.pre_norm = nn.LayerNorm(config.atom_feature_len)
            self.transformer = AtomTransformer(config)
            self.post_norm = nn.LayerNorm(config.atom_feature_len)

    def forward(
        self, h: torch.Tensor, e: torch.Tensor, graph: Graph, geometry: BondGeometry
    ) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.three_body(h, e, graph, geometry)
        e = self.edge_update(h, e, geometry)
        h = self.atom_update(h, e, geometry)
        if hasattr(self, "transformer"):
            h = self.pre_norm(h)
            if geometry.padding is None:  # once per graph, not per layer
                geometry.padding = structure_padding(graph)
            h = self.post_norm(self.transformer(h, graph, geometry.padding)) + h
        return h, e
