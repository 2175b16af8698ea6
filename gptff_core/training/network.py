"""The network a run trains: a new one (training from scratch), its provenance, the checks and
settings the recipe applies to it (intact weights, dropout, frozen parameters)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch

from gptff_core.checkpoint import non_finite_tensors
from gptff_core.errors import GPTFFInputError
from gptff_core.layers import AtomTransformer
from gptff_core.model import GPTFF, GPTFFConfig


def new_network(config: GPTFFConfig | None = None, seed: int = 0) -> GPTFF:
    """A randomly initialised network of ``config`` (default: v2's size) for training from
    scratch: PyTorch's default layer initialisation and a standard-normal embedding (rescaled to
    norm 1 by the embedding's max-norm rule), with zero reference energies."""
    torch.manual_seed(seed)
    network = GPTFF(config or GPTFFConfig())
    with torch.no_grad():
        torch.nn.init.normal_(network.embedding)
    return network


def provenance(requested: object, network: GPTFF) -> dict:
    """The base model's record: registry name, sha256 and path of its checkpoint, or the name
    requested (``"scratch"`` for a network passed as an object)."""
    source = getattr(network, "source", None)
    if source is None:
        return {"name": "scratch" if isinstance(requested, GPTFF) else str(requested)}
    return {"name": source.name, "sha256": source.sha256, "path": source.path}


def check_intact(network: GPTFF) -> None:
    """Refuse a network with non-finite weights (NaN or infinity), naming up to six tensors."""
    bad = non_finite_tensors(network.state_dict())
    if bad:
        raise GPTFFInputError(
            f"the network to train has non-finite weights (NaN or infinity) in "
            f"{', '.join(name for name, _ in bad[:6])}; start from an intact network"
        )


def set_dropout(network: GPTFF, dropout: float) -> None:
    """Set the transformer dropout (probability) of ``network`` and of its config."""
    network.config = replace(network.config, dropout=dropout)
    for module in network.modules():
        if isinstance(module, AtomTransformer):
            module.dropout = dropout


def trainable_parameters(network: GPTFF, freeze: Sequence[str]) -> list[torch.nn.Parameter]:
    """The parameters of ``network`` outside the ``freeze`` name prefixes (those inside stop
    requiring gradients).

    Raises:
        GPTFFInputError: a prefix that matches no parameter, or nothing left to train.
    """
    trainable = []
    names = dict(network.named_parameters())
    for prefix in freeze:
        if not any(n == prefix or n.startswith(prefix + ".") for n in names):
            raise GPTFFInputError(
                f"recipe: freeze {prefix!r} matches no parameter; use a prefix such as "
                "embedding, bond_init, bond_basis_proj, layers.0, readout"
            )
    for name, parameter in names.items():
        frozen = any(name == p or name.startswith(p + ".") for p in freeze)
        parameter.requires_grad_(not frozen)
        if not frozen:
            trainable.append(parameter)
    if not trainable:
        raise GPTFFInputError("recipe: freeze leaves no parameter to train")
    return trainable
