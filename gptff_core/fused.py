"""Fused elementwise chains of the bond and atom updates, each one memory pass instead of several.

Every function gives the same numbers as its plain PyTorch formula (its docstring). Each is a
custom operator (``torch.ops.gptff.gather_add``, ``gated_silu``, ``silu_times`` and their
backward operators; dispatch by device as described in :mod:`gptff_core.native`): on the CPU the
compiled kernel when the tensors are contiguous float32/float64, else and on every other device
the PyTorch formula. The first-order backward is an operator too; when a second derivative is
being recorded (training on forces: grad mode on in the backward) the backward is the plain
formula's, recomputed from the saved inputs, so that it is itself differentiable.

Row layout: ``y = [core | gate]``, two blocks of F columns, as produced by one linear layer whose
output rows are the core rows followed by the gate rows.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.library import custom_op
from torch.nn import functional as F

from gptff_core import native


def gather_add(
    y: Tensor, a: Tensor, first: Tensor, b: Tensor, second: Tensor, activate: bool = False
) -> Tensor:
    """``y + a[first] + b[second]`` (rows of ``y``: bonds; of ``a``, ``b``: atoms), followed by
    SiLU when ``activate``."""
    if not _one_dtype(y, a, b):
        return _gather_add_formula(y, a, first, b, second, activate)[0]
    if native.eager_cpu(y):
        return _GatherAdd.apply(y, a, first, b, second, activate)[0]
    return gather_add_op(y, a, first, b, second, activate)[0]


def gated_silu(y: Tensor, multiplier: Tensor | None = None) -> Tensor:
    """``silu(core)·σ(gate)``, times ``multiplier`` (same shape as ``core``) when given."""
    if multiplier is not None and not _one_dtype(y, multiplier):
        return _gated_silu_formula(y, multiplier)
    if native.eager_cpu(y):
        return _GatedSilu.apply(y, multiplier)
    return gated_silu_op(y, multiplier)


def silu_times(x: Tensor, r: Tensor, residual: Tensor) -> Tensor:
    """``residual + silu(x)·r``."""
    if not _one_dtype(x, r, residual):
        return residual + F.silu(x) * r
    if native.eager_cpu(x):
        return _SiluTimes.apply(x, r, residual)
    return silu_times_op(x, r, residual)


def _one_dtype(*tensors: Tensor) -> bool:
    """Whether all the floating tensors share one dtype (under autocast a layer's output may be
    bfloat16 beside float32 inputs; the kernels read every array in the first one's dtype):
    otherwise the plain formula runs, with PyTorch's type promotion."""
    return all(t.dtype == tensors[0].dtype for t in tensors)


def _rows(t: Tensor) -> tuple[int, int]:
    return t.shape[0], t.shape[1]


# --- gather_add: returns (out, pre-activation or an empty tensor) -------------------------------


@custom_op("gptff::gather_add", mutates_args=())
def gather_add_op(
    y: Tensor, a: Tensor, first: Tensor, b: Tensor, second: Tensor, activate: bool
) -> tuple[Tensor, Tensor]:
    return _gather_add_formula(y, a, first, b, second, activate)


def _gather_add_formula(y, a, first, b, second, activate):
    total = y + torch.index_select(a, 0, first) + torch.index_select(b, 0, second)
    return (F.silu(total), total) if activate else (total, y.new_empty(0))


@gather_add_op.register_kernel("cpu")
def _gather_add_cpu(y, a, first, b, second, activate):
    if not native.usable(y, a, b, first, second):
        return _gather_add_formula(y, a, first, b, second, activate)
    out = torch.empty_like(y)
    pre = torch.empty_like(y) if activate else None
    native.call("gather_add", y, a, b, first, second, *_rows(y), int(activate), pre, out)
    return out, y.new_empty(0) if pre is None else pre


@gather_add_op.register_fake
def _(y, a, first, b, second, activate):
    return torch.empty_like(y), torch.empty_like(y) if activate else y.new_empty(0)


@custom_op("gptff::silu_backward", mutates_args=())
def silu_backward_op(pre: Tensor, grad: Tensor) -> Tensor:
    """``grad·silu′(pre)``."""
    return torch.ops.aten.silu_backward(grad, pre)


@silu_backward_op.register_kernel("cpu")
def _silu_backward_cpu(pre, grad):
    if not native.usable(pre, grad) or grad.dtype != pre.dtype:
        return torch.ops.aten.silu_backward(grad, pre)
    out = torch.empty_like(pre)
    native.call("silu_backward", pre, grad, *_rows(pre), out)
    return out


@silu_backward_op.register_fake
def _(pre, grad):
    return torch.empty_like(pre)


def _gather_add_setup(ctx, inputs, output):
    y, a, first, b, second, activate = inputs
    ctx.activate = activate
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(y, a, first, b, second, output[1])


def _gather_add_backward(ctx, grad, _grad_pre):
    y, a, first, b, second, pre = ctx.saved_tensors
    if grad is None:
        return None, None, None, None, None, None
    if ctx.activate:
        if torch.is_grad_enabled():
            total = y + torch.index_select(a, 0, first) + torch.index_select(b, 0, second)
            s = torch.sigmoid(total)
            grad = grad * s * (1.0 + total * (1.0 - s))
        else:
            grad = native.dispatch(silu_backward_op, _silu_backward_cpu, pre, grad.contiguous())
    grad_a = torch.zeros_like(a).index_add(0, first, grad)
    grad_b = torch.zeros_like(b).index_add(0, second, grad)
    return grad, grad_a, None, grad_b, None, None


gather_add_op.register_autograd(_gather_add_backward, setup_context=_gather_add_setup)
_GatherAdd = native.function("_GatherAdd", _gather_add_cpu, _gather_add_setup, _gather_add_backward)


# --- gated_silu ----------------------------------------------------------------------------------


@custom_op("gptff::gated_silu", mutates_args=())
def gated_silu_op(y: Tensor, multiplier: Tensor | None) -> Tensor:
    return _gated_silu_formula(y, multiplier)


def _gated_silu_formula(y, multiplier):
    core, gate = y.chunk(2, dim=-1)
    out = F.silu(core) * torch.sigmoid(gate)
    return out if multiplier is None else out * multiplier


@gated_silu_op.register_kernel("cpu")
def _gated_silu_cpu(y, multiplier):
    if not native.usable(y, *([] if multiplier is None else [multiplier])):
        return _gated_silu_formula(y, multiplier)
    out = y.new_empty(y.shape[0], y.shape[1] // 2)
    native.call("gated_silu", y, multiplier, *_rows(out), out)
    return out


@gated_silu_op.register_fake
def _(y, multiplier):
    return y.new_empty(y.shape[0], y.shape[1] // 2)


@custom_op("gptff::gated_silu_backward", mutates_args=())
def gated_silu_backward_op(
    y: Tensor, multiplier: Tensor | None, grad: Tensor
) -> tuple[Tensor, Tensor]:
    """(gradient with respect to ``y``, to ``multiplier`` or an empty tensor)."""
    return _gated_silu_backward_formula(y, multiplier, grad)


def _gated_silu_backward_formula(y, multiplier, grad):
    core, gate = y.chunk(2, dim=-1)
    sc, sg = torch.sigmoid(core), torch.sigmoid(gate)
    g = grad if multiplier is None else grad * multiplier
    grad_y = torch.cat(
        [g * sg * sc * (1.0 + core * (1.0 - sc)), g * core * sc * sg * (1.0 - sg)], dim=-1
    )
    return grad_y, y.new_empty(0) if multiplier is None else grad * core * sc * sg


@gated_silu_backward_op.register_kernel("cpu")
def _gated_silu_backward_cpu(y, multiplier, grad):
    tensors = [y, grad] + ([] if multiplier is None else [multiplier])
    if not native.usable(*tensors) or not _one_dtype(*tensors):
        return _gated_silu_backward_formula(y, multiplier, grad)
    grad_y = torch.empty_like(y)
    grad_m = None if multiplier is None else torch.empty_like(multiplier)
    native.call("gated_silu_backward", y, multiplier, grad, *_rows(grad), grad_y, grad_m)
    return grad_y, y.new_empty(0) if grad_m is None else grad_m


@gated_silu_backward_op.register_fake
def _(y, multiplier, grad):
    return torch.empty_like(y), y.new_empty(0) if multiplier is None else torch.empty_like(grad)


def _gated_silu_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _gated_silu_backward(ctx, grad):
    y, multiplier = ctx.saved_tensors
    if torch.is_grad_enabled():
        grad_y, grad_m = _gated_silu_backward_formula(y, multiplier, grad)
    else:
        grad_y, grad_m = native.dispatch(
            gated_silu_backward_op, _gated_silu_backward_cpu, y, multiplier, grad.contiguous()
        )
    return grad_y, None if multiplier is None else grad_m


gated_silu_op.register_autograd(_gated_silu_backward, setup_context=_gated_silu_setup)
_GatedSilu = native.function("_GatedSilu", _gated_silu_cpu, _gated_silu_setup, _gated_silu_backward)


# --- silu_times ----------------------------------------------------------------------------------


@custom_op("gptff::silu_times", mutates_args=())
def silu_times_op(x: Tensor, r: Tensor, residual: Tensor) -> Tensor:
    return residual + F.silu(x) * r


@silu_times_op.register_kernel("cpu")
def _silu_times_cpu(x, r, residual):
    if not native.usable(x, r, residual):
        return residual + F.silu(x) * r
    out = torch.empty_like(x)
    native.call("silu_times", x, r, residual, *_rows(x), out)
    return out


@silu_times_op.register_fake
def _(x, r, residual):
    return torch.empty_like(x)


@custom_op("gptff::silu_times_backward", mutates_args=())
def silu_times_backward_op(x: Tensor, r: Tensor, grad: Tensor) -> tuple[Tensor, Tensor]:
    """Gradients of ``silu(x)·r`` with respect to ``x`` and ``r``."""
    return _silu_times_backward_formula(x, r, grad)


def _silu_times_backward_formula(x, r, grad):
    s = torch.sigmoid(x)
    return grad * r * s * (1.0 + x * (1.0 - s)), grad * x * s


@silu_times_backward_op.register_kernel("cpu")
def _silu_times_backward_cpu(x, r, grad):
    if not native.usable(x, r, grad) or not _one_dtype(x, r, grad):
        return _silu_times_backward_formula(x, r, grad)
    grad_x, grad_r = torch.empty_like(x), torch.empty_like(r)
    native.call("silu_times_backward", x, r, grad, *_rows(x), grad_x, grad_r)
    return grad_x, grad_r


@silu_times_backward_op.register_fake
def _(x, r, grad):
    return torch.empty_like(x), torch.empty_like(r)


def _silu_times_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[0], inputs[1])


def _silu_times_backward(ctx, grad):
    x, r = ctx.saved_tensors
    if torch.is_grad_enabled():
        grad_x, grad_r = _silu_times_backward_formula(x, r, grad)
    else:
        grad_x, grad_r = native.dispatch(
            silu_times_backward_op, _silu_times_backward_cpu, x, r, grad.contiguous()
        )
    return grad_x, grad_r, grad


silu_times_op.register_autograd(_silu_times_backward, setup_context=_silu_times_setup)
_SiluTimes = native.function("_SiluTimes", _silu_times_cpu, _silu_times_setup, _silu_times_backward)
