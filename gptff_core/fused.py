"""Fused elementwise chains of the bond and atom updates, each one memory pass instead of several.

Every function gives the same numbers as its plain PyTorch formula (its docstring), which is
what runs when the compiled kernels of :mod:`gptff_core.native` are unavailable or the tensors
are not contiguous float32/float64 on the CPU. The compiled backward runs when no second
derivative is being recorded; otherwise (training on forces) the backward is the plain formula's,
recomputed from the saved inputs, so that it is itself differentiable.

Row layout: ``y = [core | gate]``, two blocks of F columns, as produced by one linear layer whose
output rows are the core rows followed by the gate rows.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from gptff_core import native


def gather_add(
    y: torch.Tensor,
    a: torch.Tensor,
    first: torch.Tensor,
    b: torch.Tensor,
    second: torch.Tensor,
    activate: bool = False,
) -> torch.Tensor:
    """``y + a[first] + b[second]`` (rows of ``y``: bonds; of ``a``, ``b``: atoms), followed by
    SiLU when ``activate``."""
    if _native(y, a, b, first, second):
        return _GatherAdd.apply(y, a, first, b, second, activate)
    return _gather_add_formula(y, a, first, b, second, activate)


def gated_silu(y: torch.Tensor, multiplier: torch.Tensor | None = None) -> torch.Tensor:
    """``silu(core)·σ(gate)``, times ``multiplier`` (same shape as ``core``) when given."""
    if _native(y, *([] if multiplier is None else [multiplier])):
        return _GatedSilu.apply(y, multiplier)
    return _gated_silu_formula(y, multiplier)


def silu_times(x: torch.Tensor, r: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """``residual + silu(x)·r``."""
    if _native(x, r, residual):
        return _SiluTimes.apply(x, r, residual)
    return residual + F.silu(x) * r


def _native(*tensors: torch.Tensor) -> bool:
    """Whether the compiled kernels can take these tensors: :func:`native.usable` and one
    floating dtype for all (under autocast a layer's output may be bfloat16 beside float32
    inputs; the kernels read every array in the first one's dtype)."""
    dtype = tensors[0].dtype
    same = all(t.dtype == dtype for t in tensors if t.is_floating_point())
    return same and native.usable(*tensors)


def _gather_add_formula(y, a, first, b, second, activate):
    total = y + torch.index_select(a, 0, first) + torch.index_select(b, 0, second)
    return F.silu(total) if activate else total


def _gated_silu_formula(y, multiplier):
    core, gate = y.chunk(2, dim=-1)
    out = F.silu(core) * torch.sigmoid(gate)
    return out if multiplier is None else out * multiplier


def _rows(t: torch.Tensor) -> tuple[int, int]:
    return t.shape[0], t.shape[1]


class _GatherAdd(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y, a, first, b, second, activate):
        n, width = _rows(y)
        out = torch.empty_like(y)
        pre = torch.empty_like(y) if activate else None
        native.call("gather_add", y, a, b, first, second, n, width, int(activate), pre, out)
        ctx.activate = activate
        ctx.save_for_backward(y, a, first, b, second, pre)
        return out

    @staticmethod
    def backward(ctx, grad):
        y, a, first, b, second, pre = ctx.saved_tensors
        if ctx.activate:
            if torch.is_grad_enabled():
                total = y + torch.index_select(a, 0, first) + torch.index_select(b, 0, second)
                s = torch.sigmoid(total)
                grad = grad * s * (1.0 + total * (1.0 - s))
            else:
                d_out, grad = grad.contiguous(), torch.empty_like(pre)
                native.call("silu_backward", pre, d_out, *_rows(pre), grad)
        grad_a = torch.zeros_like(a).index_add(0, first, grad)
        grad_b = torch.zeros_like(b).index_add(0, second, grad)
        return grad, grad_a, None, grad_b, None, None


class _GatedSilu(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y, multiplier):
        n, width = y.shape[0], y.shape[1] // 2
        out = y.new_empty(n, width)
        native.call("gated_silu", y, multiplier, n, width, out)
        ctx.save_for_backward(y, multiplier)
        return out

    @staticmethod
    def backward(ctx, grad):
        y, multiplier = ctx.saved_tensors
        if torch.is_grad_enabled():
            core, gate = y.chunk(2, dim=-1)
            sc, sg = torch.sigmoid(core), torch.sigmoid(gate)
            g = grad if multiplier is None else grad * multiplier
            grad_y = torch.cat(
                [g * sg * sc * (1.0 + core * (1.0 - sc)), g * core * sc * sg * (1.0 - sg)], dim=-1
            )
            return grad_y, None if multiplier is None else grad * core * sc * sg
        grad = grad.contiguous()
        grad_y = torch.empty_like(y)
        grad_m = None if multiplier is None else torch.empty_like(multiplier)
        native.call("gated_silu_backward", y, multiplier, grad, *_rows(grad), grad_y, grad_m)
        return grad_y, grad_m


class _SiluTimes(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, r, residual):
        out = torch.empty_like(x)
        native.call("silu_times", x, r, residual, *_rows(x), out)
        ctx.save_for_backward(x, r)
        return out

    @staticmethod
    def backward(ctx, grad):
        x, r = ctx.saved_tensors
        if torch.is_grad_enabled():
            s = torch.sigmoid(x)
            return grad * r * s * (1.0 + x * (1.0 - s)), grad * x * s, grad
        grad = grad.contiguous()
        grad_x, grad_r = torch.empty_like(x), torch.empty_like(r)
        native.call("silu_times_backward", x, r, grad, *_rows(x), grad_x, grad_r)
        return grad_x, grad_r, grad
