"""Loading and saving GPTFF networks.

Two file formats are read, both with ``torch.load(..., weights_only=True)``:

* the **published** checkpoints (``{"state_dict", "cfg"}``, upstream key names), mapped onto
  this project's modules by :func:`published_key_map`; their per-element reference energies are
  not in the file and come from ``gptff_core/data/atom_refs.json``;
* the project's **own** checkpoints (``{"format": "gptff-toolkit", "config", "state_dict",
  "metadata"}``), written by :func:`save_checkpoint`, which carry their config, reference energies
  and provenance.

A file whose keys or shapes do not match the network is refused with a :class:`CheckpointError`
that lists the differences. Every file is also checked for damage before it is used: the CRC-32 of
each member of its zip archive (:func:`gptff_core.pretrained.check_archive`), finite weights
(no NaN or infinity, the tensor named otherwise) and, for the project's own checkpoints, the
sha256 of the weights stored by :func:`save_checkpoint` (:func:`weights_sha256`; files written
before format version 2 have none and load with a log line saying so).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

import torch

from gptff_core.allocator import tune_malloc
from gptff_core.devices import resolve_device, resolve_dtype
from gptff_core.errors import CheckpointError
from gptff_core.model import GPTFF, GPTFFConfig
from gptff_core.paths import write_atomically
from gptff_core.pretrained import (
    DEFAULT_MODEL,
    PRETRAINED_MODELS,
    cached_sha256,
    load_checkpoint_file,
    resolve_checkpoint,
)

logger = logging.getLogger(__name__)

PROJECT_FORMAT = "gptff-toolkit"
PROJECT_FORMAT_VERSION = 2
"""1: config, weights, metadata; 2: also ``weights_sha256`` (:func:`weights_sha256`)."""


@dataclass(frozen=True)
class ModelSource:
    """Where a loaded network came from (recorded in every result's provenance)."""

    name: str
    path: str
    sha256: str
    format: str
    metadata: dict = field(default_factory=dict)


def published_reference_energies() -> torch.Tensor:
    """The 95 per-element reference energies (eV, index = Z) of the published checkpoints."""
    text = resources.files("gptff_core").joinpath("data/atom_refs.json").read_text()
    return torch.tensor(json.loads(text)["values"], dtype=torch.float64)


def _published_layer_keys(layer: int, transformer: bool) -> dict[str, str]:
    mine = f"layers.{layer}"
    names = {
        f"three.{layer}.W_fea": f"{mine}.three_body.mix",
        f"three.{layer}.W_1": f"{mine}.three_body.gate",
        f"three.{layer}.W_2": f"{mine}.three_body.core",
        f"three.{layer}.bond_embedding_j": f"{mine}.three_body.radial_first",
        f"three.{layer}.bond_embedding_k": f"{mine}.three_body.radial_second",
        f"three.{layer}.angle_embedding": f"{mine}.three_body.angle",
        f"edge_updates.{layer}.W_1": f"{mine}.edge_update.core",
        f"edge_updates.{layer}.W_2": f"{mine}.edge_update.gate",
        f"edge_updates.{layer}.W_r": f"{mine}.edge_update.radial",
        f"edge_updates.{layer}.W_3": f"{mine}.edge_update.out",
        f"convs.{layer}.fc_full": f"{mine}.atom_update.expand",
        f"convs.{layer}.W_1": f"{mine}.atom_update.core",
        f"convs.{layer}.W_2": f"{mine}.atom_update.gate",
        f"convs.{layer}.W_r": f"{mine}.atom_update.radial",
    }
    if transformer:
        block = f"transformers.{layer}.encoder.layers.0"
        names |= {
            f"{block}.self_attn.out_proj": f"{mine}.transformer.out_proj",
            f"{block}.linear1": f"{mine}.transformer.linear1",
            f"{block}.linear2": f"{mine}.transformer.linear2",
            f"{block}.norm1": f"{mine}.transformer.norm1",
            f"{block}.norm2": f"{mine}.transformer.norm2",
            f"norms1.{layer}": f"{mine}.pre_norm",
            f"norms2.{layer}": f"{mine}.post_norm",
        }
    keys = {f"{a}.{p}": f"{b}.{p}" for a, b in names.items() for p in ("weight", "bias")}
    if transformer:
        block = f"transformers.{layer}.encoder.layers.0.self_attn"
        keys[f"{block}.in_proj_weight"] = f"{mine}.transformer.in_proj.weight"
        keys[f"{block}.in_proj_bias"] = f"{mine}.transformer.in_proj.bias"
    return keys


def published_key_map(config: GPTFFConfig) -> tuple[dict[str, str], set[str]]:
    """Map of published state-dict keys to this project's, and the published keys that are
    stored but unused by the network (``convs.l.fc_core``)."""
    keys = {"atom_embedding.weight": "embedding"}
    for published, mine in [("w_b", "bond_basis_proj"), ("w_eij", "bond_init"),
                            ("w_r", "bond_init_radial"), ("fc1", "readout.0"),
                            ("fc2", "readout.2"), ("fc_out", "readout.4")]:  # fmt: skip
        keys |= {f"{published}.weight": f"{mine}.weight", f"{published}.bias": f"{mine}.bias"}
    unused = set()
    for layer in range(config.n_layers):
        keys |= _published_layer_keys(layer, config.transformer)
        unused |= {f"convs.{layer}.fc_core.weight", f"convs.{layer}.fc_core.bias"}
    return keys, unused


def _config_from_published(cfg: object, path: Path) -> GPTFFConfig:
    try:
        return GPTFFConfig(
            transformer=bool(cfg["transformer_activate"]),
            n_layers=int(cfg["n_layers"]),
            atom_feature_len=int(cfg["node_feature_len"]),
            bond_feature_len=int(cfg["edge_feature_len"]),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(
            f"{path}: its 'cfg' is not a published GPTFF config ({error!r}); expected keys "
            "transformer_activate, n_layers, node_feature_len, edge_feature_len"
        ) from error


def _check_and_load(
    model: GPTFF, state: dict, path: Path, file_keys: dict[str, str] | None = None
) -> None:
    """Load ``state`` into ``model`` after checking every key, shape and value; refuse any
    mismatch or non-finite weight, naming keys as the file holds them (``file_keys`` maps the
    network's keys to the file's)."""
    named = (file_keys or {}).get
    expected = model.state_dict()
    problems = [f"missing key {named(k, k)}" for k in expected if k not in state]
    problems += [f"unexpected key {k}" for k in state if k not in expected]
    problems += [f"{named(k, k)} is not a tensor" for k in state if not torch.is_tensor(state[k])]
    problems += [
        f"{named(k, k)}: shape {tuple(state[k].shape)} in the file, {tuple(v.shape)} expected"
        for k, v in expected.items()
        if torch.is_tensor(state.get(k)) and tuple(state[k].shape) != tuple(v.shape)
    ]
    if problems:
        shown = "; ".join(problems[:8]) + (
            f"; and {len(problems) - 8} more" if len(problems) > 8 else ""
        )
        raise CheckpointError(f"{path} does not match the GPTFF network: {shown}")
    bad = non_finite_tensors(state)
    if bad:
        shown = ", ".join(f"{named(k, k)} ({n} of {state[k].numel()} values)" for k, n in bad)
        raise CheckpointError(
            f"{path} has non-finite weights (NaN or infinity) in {shown}: the file is damaged or "
            "was written by a run that diverged. Use an intact checkpoint (for a training run, an "
            "earlier best.pt or a rerun with a lower learning rate)."
        )
    model.load_state_dict(state)


def non_finite_tensors(state: dict) -> list[tuple[str, int]]:
    """``(name, count)`` of the floating-point tensors of ``state`` holding NaN or infinity."""
    found = []
    for name, value in state.items():
        if torch.is_tensor(value) and value.is_floating_point():
            count = int((~torch.isfinite(value)).sum())
            if count:
                found.append((name, count))
    return found


def weights_sha256(state: dict[str, torch.Tensor]) -> str:
    """Canonical sha256 (hex) of a state dict's tensors: for each name in sorted order, the
    name, dtype, shape and the bytes of the values (C order, the machine's byte order), so that
    it depends on the weights only, not on how ``torch.save`` laid out the file."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().to("cpu").contiguous()
        dtype = str(tensor.dtype).removeprefix("torch.")
        digest.update(f"{name}\0{dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _verify_weights_sha256(raw: dict, state: dict, path: Path) -> None:
    """Compare the weights with the sha256 stored by :func:`save_checkpoint`."""
    stored = raw.get("weights_sha256")
    if stored is None:
        logger.warning(
            "%s was written before checkpoints stored a sha256 of their weights (format "
            "version %s): only its zip CRCs and finite weights were checked",
            path,
            raw.get("format_version"),
        )
        return
    actual = weights_sha256(state)
    if actual != stored:
        raise CheckpointError(
            f"{path}: its weights do not match the sha256 stored when the file was written "
            f"({actual[:16]}… instead of {str(stored)[:16]}…): the weights were changed after "
            "save_checkpoint wrote it. Use the original file, or rerun the training that wrote it."
        )


def _published_state(
    raw: dict, config: GPTFFConfig, path: Path
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The file's tensors under the network's keys, and the map back to the file's keys."""
    state = raw["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: 'state_dict' is not a mapping of tensors")
    mapping, unused = published_key_map(config)
    unknown = sorted(set(state) - set(mapping) - unused)
    missing = sorted(set(mapping) - set(state))
    if unknown or missing:
        raise CheckpointError(
            f"{path} is not a published GPTFF checkpoint of this shape "
            f"(transformer={config.transformer}, n_layers={config.n_layers}): "
            f"missing keys {missing[:6]}, unexpected keys {unknown[:6]}"
        )
    width = config.atom_feature_len
    for key in sorted(unused):  # stored but unused (fc_core: width → width); still must fit
        shape = (width, width) if key.endswith("weight") else (width,)
        found = tuple(state[key].shape) if torch.is_tensor(state[key]) else "not a tensor"
        if found != shape:
            raise CheckpointError(
                f"{path} does not match the GPTFF network: {key}: shape {found} in the file, "
                f"{shape} expected"
            )
    mine = {mapping[k]: v for k, v in state.items() if k in mapping}
    mine["reference_energies"] = published_reference_energies()
    return mine, {v: k for k, v in mapping.items()}


def load_model(
    model: str | os.PathLike | GPTFF = DEFAULT_MODEL,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    smooth: bool | None = None,
    bond_window: float | None = None,
    three_body_window: float | None = None,
) -> GPTFF:
    """Load a GPTFF network in evaluation mode.

    Args:
        model: a registry name (``"gptff-v1"``, ``"gptff-v2"``), a checkpoint path (published or
            this project's format), or an already built :class:`GPTFF` (moved and cast only).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (CUDA when available);
            ``None``: the CPU, or the device of a loaded network passed as ``model``.
        dtype: ``"float32"`` or ``"float64"`` (or the torch dtype); ``None``: float32, or the
            dtype of a loaded network passed as ``model``.
        smooth: multiply messages by C² envelopes at the cutoffs (see the README); ``None`` keeps
            the checkpoint's setting (off for the published networks).
        bond_window: Å, width of the envelope below the 5 Å bond cutoff (``None``: keep).
        three_body_window: Å, width of the envelope below the 3.5 Å triplet cutoff (``None``: keep).

    Raises:
        CheckpointError: the file is missing, corrupted, tampered with, or does not match.
    """
    tune_malloc()
    overrides = {
        k: v
        for k, v in dict(
            smooth=smooth, bond_window=bond_window, three_body_window=three_body_window
        ).items()
        if v is not None
    }
    if isinstance(model, GPTFF):
        # never change the caller's network: cast, move or reconfigure a copy
        network = copy.deepcopy(model)
        network.config = replace(network.config, **overrides)
    else:
        path = resolve_checkpoint(model)
        raw = load_checkpoint_file(path)
        network = _network_from_file(raw, path, overrides)
        network.source = ModelSource(
            name=_registry_name(model) or path.stem,
            path=str(path),
            sha256=cached_sha256(path),
            format=raw.get("format", "published"),
            metadata=raw.get("metadata", {}),
        )
    _validate_windows(network.config)
    parameter = next(network.parameters())
    if dtype is None:
        dtype = parameter.dtype if isinstance(model, GPTFF) else "float32"
    if device is None:  # a network passed in stays where it is
        device = parameter.device if isinstance(model, GPTFF) else "cpu"
    return network.to(device=resolve_device(device), dtype=resolve_dtype(dtype)).eval()


def _registry_name(model: str | os.PathLike) -> str | None:
    """The registry name ``model`` refers to, or None for a path."""
    if isinstance(model, str) and model.strip().lower() in PRETRAINED_MODELS:
        return model.strip().lower()
    return None


def _network_from_file(raw: dict, path: Path, overrides: dict) -> GPTFF:
    file_keys = None
    if raw.get("format") == PROJECT_FORMAT:
        config = GPTFFConfig.from_dict(raw.get("config", {}))
        state = raw.get("state_dict")
    elif "state_dict" in raw and "cfg" in raw:
        config = _config_from_published(raw["cfg"], path)
        state, file_keys = _published_state(raw, config, path)
    else:
        raise CheckpointError(
            f"{path} is neither a published GPTFF checkpoint (keys 'state_dict', 'cfg') nor this "
            f"project's format ('format': '{PROJECT_FORMAT}'); its keys are {sorted(raw)[:8]}"
        )
    network = GPTFF(replace(config, **overrides))
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: 'state_dict' is not a mapping of tensors")
    _check_and_load(network, state, path, file_keys)
    if raw.get("format") == PROJECT_FORMAT:
        _verify_weights_sha256(raw, state, path)
    return network


def _validate_windows(config: GPTFFConfig) -> None:
    for name, window, cutoff in [
        ("bond_window", config.bond_window, config.bond_cutoff),
        ("three_body_window", config.three_body_window, config.three_body_cutoff),
    ]:
        if not 0.0 < window < cutoff:
            raise CheckpointError(f"{name} must be between 0 and {cutoff} Å, got {window}")


def save_checkpoint(model: GPTFF, path: str | os.PathLike, metadata: dict | None = None) -> Path:
    """Write ``model`` in the project's format (config, weights in their dtype, float64 reference
    energies, the sha256 of the weights and ``metadata`` such as provenance), atomically.
    Returns the path.

    Raises:
        CheckpointError: a weight is NaN or infinite (nothing is written).
    """
    path = Path(path)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    bad = non_finite_tensors(state)
    if bad:
        shown = ", ".join(f"{name} ({count} values)" for name, count in bad[:6])
        raise CheckpointError(f"refusing to write {path}: non-finite weights in {shown}")
    payload = {
        "format": PROJECT_FORMAT,
        "format_version": PROJECT_FORMAT_VERSION,
        "config": model.config.to_dict(),
        "state_dict": state,
        "weights_sha256": weights_sha256(state),
        "metadata": metadata or {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomically(path, lambda temporary: torch.save(payload, temporary))
