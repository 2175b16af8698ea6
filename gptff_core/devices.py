"""Parsing of the ``device`` and ``dtype`` options shared by every entry point, and where graphs
are built for a device."""

from __future__ import annotations

import os

import torch

from gptff_core.errors import GPTFFInputError

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``"float32"``/``"float64"`` (or the torch dtype) → torch dtype; anything else is refused."""
    if isinstance(dtype, torch.dtype) and dtype in _DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype in _DTYPES:
        return _DTYPES[dtype]
    raise GPTFFInputError(f"dtype must be 'float32' or 'float64', got {dtype!r}")


def check_device_name(device: str | torch.device) -> None:
    """Refuse a device that is not ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"auto"`` or another
    torch device name; whether it exists here is not checked (a flow built on a login node may
    run on a GPU node)."""
    if isinstance(device, str) and device == "auto":
        return
    try:
        torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise GPTFFInputError(
            f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got {device!r}"
        ) from error


def resolve_device(device: str | torch.device) -> torch.device:
    """``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (CUDA when available, else CPU)."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise GPTFFInputError(f"unknown device {device!r}: use 'cpu', 'cuda' or 'auto'") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise GPTFFInputError(
            "device 'cuda' requested but CUDA is not available: use 'cpu' or 'auto'"
        )
    return resolved


def builds_on_device(device: torch.device | str) -> bool:
    """Whether graphs for ``device`` are built there in torch (:mod:`gptff_core.graph_torch`)
    rather than on the host in numpy: on every device but the CPU, where numpy is faster. The
    environment variable ``GPTFF_GRAPH_BUILDER`` = ``torch`` or ``numpy`` forces one builder
    everywhere (both give the same graph; for tests and benchmarks), ``auto`` or unset decides
    by device."""
    choice = os.environ.get("GPTFF_GRAPH_BUILDER", "auto")
    if choice not in ("auto", "torch", "numpy"):
        raise GPTFFInputError(f"GPTFF_GRAPH_BUILDER must be auto, torch or numpy, got {choice!r}")
    if choice == "auto":
        return torch.device(device).type != "cpu"
    return choice == "torch"
