"""The per-triplet part of GPTFF's three-body update, computed in cache-sized chunks.

For triplets ``t = (a, b)`` (positions of their two short bonds) this computes, per first bond a,

    Σ_{t: first(t) = a}  σ(g_t) ⊙ silu(c_t) ⊙ R[b_t] ⊙ (cosθ_t·w_A + b_A),
    [g_t, c_t] = W · silu(P[a_t] + Q[b_t]) + bias,

which is the only work of the network whose size is the number of triplets. Written as plain
tensor operations it streams a dozen (triplets × 64) arrays through memory forwards and twice as
many backwards. Here forward and backward walk over the triplets in chunks whose intermediates fit
in cache and keep nothing per triplet between the passes (backward recomputes a chunk's
intermediates). When a second derivative is wanted (training on forces: the backward runs with
grad mode on) the backward accumulates out of place, so it is itself differentiable; otherwise it
accumulates in place.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from gptff_core import native

CHUNK_TRIPLETS = 8192
"""Triplets per chunk: 8192 × 128 float32 intermediates are 4 MiB (fastest of 1024–70,000 for
500-atom Cu on the 2-core benchmark machine: 627 ms against 736 ms at 2048 and 695 ms unchunked)."""


KEEP_PRE_ACTIVATION_BYTES = 256 * 2**20
"""The compiled forward keeps each chunk's (triplets × 2F) pre-activations for the backward when
they take at most this much memory (Cu 500 atoms: 36 MB per layer), instead of recomputing
them (one matrix product per layer)."""


def _silu_backward(grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``grad·silu′(x)``: ATen's fused kernel, or (when a second derivative is being recorded,
    which that kernel lacks) the composite ``grad·σ(x)·(1 + x·(1 − σ(x)))``."""
    if not torch.is_grad_enabled():
        return torch.ops.aten.silu_backward(grad, x)
    s = torch.sigmoid(x)
    return grad * s * (1.0 + x * (1.0 - s))


def _sigmoid_backward(grad: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``grad·y·(1 − y)`` for ``y = σ(x)`` (ATen's fused, differentiable kernel)."""
    return torch.ops.aten.sigmoid_backward(grad, y)


def _accumulate(total: torch.Tensor, index: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``total[index] += rows``, in place unless grad mode is on (a differentiable backward)."""
    if torch.is_grad_enabled():
        return total.index_add(0, index, rows)
    return total.index_add_(0, index, rows)


def _chunks(n: int):
    for start in range(0, n, CHUNK_TRIPLETS):
        yield slice(start, min(start + CHUNK_TRIPLETS, n))


def _native_forward(p, q, first, second, weight, bias, radial, cosine, angle_w, angle_b, keep):
    """The forward with the fused kernels: gather-add-silu, one matrix product, gate-and-sum.
    Returns the output and, when ``keep``, each chunk's pre-activations ``y`` for the backward."""
    out = p.new_zeros(p.shape)
    kept = []
    features = p.shape[1]
    angle_w = angle_w.reshape(-1).contiguous()
    for c in _chunks(first.shape[0]):
        f, s = first[c], second[c]
        n = f.shape[0]
        x = p.new_empty(n, features)
        native.call("silu_of_sum", p, q, f, s, n, features, x)
        y = torch.addmm(bias, x, weight.T)
        native.call(
            "gated_messages", y, radial, cosine[c], angle_w, angle_b, f, s, n, features, out
        )
        if keep:
            kept.append(y)
    return out, kept


def _native_backward(
    grad_out, p, q, first, second, weight, bias, radial, cosine, angle_w, angle_b, kept
):
    """Gradients with respect to p, q, radial and cosine with the fused kernels (first order,
    no parameter gradients); ``kept``: the forward's pre-activations per chunk, or empty to
    recompute them."""
    grad_p, grad_q, grad_radial = torch.zeros_like(p), torch.zeros_like(q), torch.zeros_like(radial)
    grad_cosine = torch.empty_like(cosine)
    features = p.shape[1]
    angle_w = angle_w.reshape(-1).contiguous()
    grad_out = grad_out.contiguous()
    for i, c in enumerate(_chunks(first.shape[0])):
        f, s = first[c], second[c]
        n = f.shape[0]
        if kept:
            y = kept[i]
        else:
            x = p.new_empty(n, features)
            native.call("silu_of_sum", p, q, f, s, n, features, x)
            y = torch.addmm(bias, x, weight.T)
        d_y, d_radial = torch.empty_like(y), p.new_empty(n, features)
        native.call("gated_messages_backward", y, radial, cosine[c], angle_w, angle_b, f, s, n,
                    features, grad_out, d_y, d_radial, grad_cosine[c])  # fmt: skip
        grad_radial.index_add_(0, s, d_radial)
        d_pre = d_y @ weight
        native.call("silu_of_sum_backward", p, q, f, s, n, features, d_pre)
        grad_p.index_add_(0, f, d_pre)
        grad_q.index_add_(0, s, d_pre)
    return grad_p, grad_q, grad_radial, grad_cosine


def _sorted(index: torch.Tensor) -> bool:
    return index.numel() < 2 or bool((index[1:] >= index[:-1]).all())


class _TripletMessages(torch.autograd.Function):
    @staticmethod
    def forward(ctx, p, q, first, second, weight, bias, radial, cosine, angle_w, angle_b):
        inputs = (p, q, first, second, weight, bias, radial, cosine, angle_w, angle_b)
        ctx.native = native.usable(p, q, first, second, weight, bias, radial, cosine, angle_b)
        ctx.native = ctx.native and _sorted(first)
        if ctx.native:
            keep = any(ctx.needs_input_grad) and (
                first.shape[0] * weight.shape[0] * p.element_size() <= KEEP_PRE_ACTIVATION_BYTES
            )
            out, kept = _native_forward(*inputs, keep)
            ctx.save_for_backward(*inputs, *kept)
            return out
        ctx.save_for_backward(*inputs)
        out = p.new_zeros(p.shape)
        for c in _chunks(first.shape[0]):
            f, s = first[c], second[c]
            x = F.silu(p.index_select(0, f) + q.index_select(0, s))
            gate, core = F.linear(x, weight, bias).chunk(2, dim=-1)
            angle = torch.addcmul(angle_b, cosine[c].unsqueeze(-1), angle_w)
            message = torch.sigmoid(gate) * F.silu(core) * radial.index_select(0, s) * angle
            out.index_add_(0, f, message)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        # autocast may be on where the backward runs (forces by autograd inside the autocast
        # region of training): the forward ran without it, so must the backward
        with torch.autocast(grad_out.device.type, enabled=False):
            return _TripletMessages._backward(ctx, grad_out.to(ctx.saved_tensors[0].dtype))

    @staticmethod
    def _backward(ctx, grad_out):
        p, q, first, second, weight, bias, radial, cosine, angle_w, angle_b, *kept = (
            ctx.saved_tensors
        )
        # parameters need gradients only in training: skip their matrix products otherwise
        parameters_wanted = any(ctx.needs_input_grad[4:6] + ctx.needs_input_grad[8:10])
        if ctx.native and not parameters_wanted and not torch.is_grad_enabled():
            grad_p, grad_q, grad_radial, grad_cos = _native_backward(
                grad_out, p, q, first, second, weight, bias, radial, cosine, angle_w, angle_b, kept
            )
            return grad_p, grad_q, None, None, None, None, grad_radial, grad_cos, None, None
        grad_p, grad_q, grad_radial = (
            torch.zeros_like(p),
            torch.zeros_like(q),
            torch.zeros_like(radial),
        )
        grad_weight, grad_bias = torch.zeros_like(weight), torch.zeros_like(bias)
        grad_angle_w, grad_angle_b = torch.zeros_like(angle_w), torch.zeros_like(angle_b)
        grad_cosine = []
        for c in _chunks(first.shape[0]):
            f, s = first[c], second[c]
            pre = p.index_select(0, f) + q.index_select(0, s)
            x = F.silu(pre)
            gate, core = F.linear(x, weight, bias).chunk(2, dim=-1)
            angle = torch.addcmul(angle_b, cosine[c].unsqueeze(-1), angle_w)
            r = radial.index_select(0, s)
            sg, sc = torch.sigmoid(gate), F.silu(core)
            upstream = grad_out.index_select(0, f)
            features = sg * sc
            geometric = r * angle
            d_features = upstream * geometric
            d_y = torch.cat(
                [_sigmoid_backward(d_features * sc, sg), _silu_backward(d_features * sg, core)], -1
            )
            d_pre = _silu_backward(d_y @ weight, pre)
            d_geometric = upstream * features
            d_angle = d_geometric * r
            grad_p = _accumulate(grad_p, f, d_pre)
            grad_q = _accumulate(grad_q, s, d_pre)
            grad_radial = _accumulate(grad_radial, s, d_geometric * angle)
            grad_cosine.append(d_angle @ angle_w.squeeze(0))
            if parameters_wanted:
                grad_weight = grad_weight + d_y.T @ x
                grad_bias = grad_bias + d_y.sum(0)
                grad_angle_w = grad_angle_w + (cosine[c].unsqueeze(-1) * d_angle).sum(0, True)
                grad_angle_b = grad_angle_b + d_angle.sum(0)
        grad_cos = torch.cat(grad_cosine) if grad_cosine else torch.zeros_like(cosine)
        return (grad_p, grad_q, None, None, grad_weight, grad_bias, grad_radial, grad_cos,
                grad_angle_w, grad_angle_b)  # fmt: skip


def triplet_messages(
    p: torch.Tensor,
    q: torch.Tensor,
    first: torch.Tensor,
    second: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    radial: torch.Tensor,
    cosine: torch.Tensor,
    angle_weight: torch.Tensor,
    angle_bias: torch.Tensor,
) -> torch.Tensor:
    """Sum over the triplets of each first bond (see the module docstring).

    Args:
        p, q: (S, F) per-short-bond parts of the triplet input as first and as second bond.
        first, second: (T,) positions of each triplet's two bonds among the short bonds.
        weight, bias: (2F, F) and (2F,): the gate rows, then the core rows.
        radial: (S, F) radial factor of the second bond.
        cosine: (T,) cosine of each triplet's angle.
        angle_weight, angle_bias: (1, F) and (F,): the affine angle embedding (row layout).

    Returns:
        (S, F) sum of the messages of the triplets that start with each short bond.

    Under autocast (mixed precision) the triplet part runs in the dtype of ``weight`` (the
    parameters' dtype, float32) with autocast off, as ``index_add`` needs one dtype for the sum
    and the summands and sums over many triplets would lose accuracy in bfloat16; the result is
    returned in ``p``'s dtype (autocast's), like the output of any autocast layer.
    """
    inputs = (p, q, first, second, weight, bias, radial, cosine, angle_weight, angle_bias)
    device_type = p.device.type
    if not torch.is_autocast_enabled(device_type):
        return _TripletMessages.apply(*inputs)
    dtype = weight.dtype
    inputs = tuple(t.to(dtype) if t.is_floating_point() else t for t in inputs)
    with torch.autocast(device_type, enabled=False):
        out = _TripletMessages.apply(*inputs)
    return out.to(p.dtype)
