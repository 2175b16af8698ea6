"""The GPTFF network (Xie et al., Sci. Bull. 69 (2024) 3525), as specified in
``shared/docs/gptff-architecture.md``: embedding, radial basis, initial bond features, three
interaction layers (three-body, edge and atom updates; v2 adds LayerNorms and a transformer block
over the atoms of each structure), sum-pooling readout and per-element reference energies.

Units: positions and cells in Å, energies in eV. The network maps a :class:`~gptff_core.graph.Graph`
and (possibly strained) positions and cells to one energy per structure; forces and stress come
from autograd in :mod:`gptff_core.evaluate`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
from torch import nn
from torch.nn import functional as F

from gptff_core import fused
from gptff_core.graph import Graph
from gptff_core.triplets import triplet_messages


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


def _gather(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows ``values[index]`` (``index_select``: its backward is a fast ``index_add``)."""
    return torch.index_select(values, 0, index)


def _split_input(layer: nn.Linear, widths: list[int]) -> list[torch.Tensor]:
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
        w_i, w_j, w_k, w_a, w_b = _split_input(self.mix, self.widths)
        short_e = _gather(e, graph.short_bonds)
        as_first = fused.gather_add(
            F.linear(short_e, w_a, self.mix.bias),
            F.linear(h, w_i),
            geometry.short_centre,
            F.linear(h, w_j),
            geometry.short_neighbour,
        )
        as_second = _gather(F.linear(h, w_k), geometry.short_neighbour) + F.linear(short_e, w_b)
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
        core_i, core_j, core_e = _split_input(self.core, self.widths)
        gate_i, gate_j, gate_e = _split_input(self.gate, self.widths)
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
        w_i, w_j, w_e = _split_input(self.expand, self.widths)
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

    def forward(self, h: torch.Tensor, graph: Graph) -> torch.Tensor:
        dense, mask, slot = _pad_by_structure(h, graph)
        x = self.norm1(dense + self._self_attention(dense, mask))
        feed = self.linear2(F.dropout(F.gelu(self.linear1(x)), self.dropout, self.training))
        x = self.norm2(x + F.dropout(feed, self.dropout, self.training))
        return x[graph.atom_structure, slot]


def _pad_by_structure(
    h: torch.Tensor, graph: Graph
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Atom features as (structures, max atoms, features), a key mask (None if no padding) and
    each atom's slot; atoms of a structure are contiguous in the graph."""
    counts = graph.atoms_per_structure
    offsets = torch.cumsum(counts, 0) - counts
    slot = torch.arange(h.shape[0], device=h.device) - offsets[graph.atom_structure]
    if graph.n_structures == 1:
        return h.unsqueeze(0), None, slot
    longest = int(counts.max())
    dense = h.new_zeros(graph.n_structures, longest, h.shape[-1])
    dense = dense.index_put((graph.atom_structure, slot), h)
    mask = torch.arange(longest, device=h.device).unsqueeze(0) < counts.unsqueeze(1)
    return dense, mask, slot


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
            h = self.post_norm(self.transformer(h, graph)) + h
        return h, e


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
        vectors = _gather(positions, neighbour) + image - _gather(positions, centre)
        length = vectors.norm(dim=-1)
        short_vectors = _gather(vectors, graph.short_bonds)
        short_length = _gather(length, graph.short_bonds)
        first, second = graph.triplet_first, graph.triplet_second
        cosine = (_gather(short_vectors, first) * _gather(short_vectors, second)).sum(-1) / (
            _gather(short_length, first) * _gather(short_length, second)
        )
        smooth = cfg.smooth
        return BondGeometry(
            centre=centre,
            neighbour=neighbour,
            basis=radial_basis(length, cfg.n_radial, cfg.bond_cutoff),
            short_centre=_gather(centre, graph.short_bonds),
            short_neighbour=_gather(neighbour, graph.short_bonds),
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
        w_i, w_j, w_basis = _split_input(self.bond_init, [a, a, self.config.bond_feature_len])
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
