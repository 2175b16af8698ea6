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

Forward and first-order backward are custom operators, ``torch.ops.gptff.triplet_messages`` and
``triplet_messages_backward`` (dispatch by device as described in :mod:`gptff_core.native`): on
the CPU the compiled kernels (which need ``first`` sorted), elsewhere the PyTorch formula in
chunks of :func:`chunk_size` triplets.
"""

from __future__ import annotations

import weakref

import torch
from torch import Tensor
from torch.library import custom_op
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


CHUNK_TRIPLETS_DEVICE = 2**18
"""Triplets per chunk on other devices (GPUs): large enough that a chunk is a few large kernel
launches rather than many small ones (2**18 × 128 float32 intermediates are 128 MiB)."""


def chunk_size(device: torch.device) -> int:
    """Triplets per chunk on ``device``: :data:`CHUNK_TRIPLETS` on the CPU (cache-sized), else
    :data:`CHUNK_TRIPLETS_DEVICE`."""
    return CHUNK_TRIPLETS if device.type == "cpu" else CHUNK_TRIPLETS_DEVICE


def _chunks(n: int, device: torch.device):
    size = chunk_size(device)
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def _native_forward(p, q, first, second, weight, bias, radial, cosine, angle_w, angle_b, keep):
    """The forward with the fused kernels: gather-add-silu, one matrix product, gate-and-sum.
    Returns the output and, when ``keep``, each chunk's pre-activations ``y`` for the backward
    (a list: chunk-sized buffers are reused by the allocator, one (T, 2F) buffer is not)."""
    out = p.new_zeros(p.shape)
    kept = []
    features = p.shape[1]
    angle_w = angle_w.reshape(-1).contiguous()
    for c in _chunks(first.shape[0], p.device):
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


def _kept(p, first, weight, keep):
    return p.new_empty(first.shape[0] if keep else 0, weight.shape[0])


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
    for i, c in enumerate(_chunks(first.shape[0], p.device)):
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


_LAST_SORTED: list = [None, -1, False]
"""(weak reference to an index tensor, its version, whether it is sorted): every layer's forward
and backward passes the graph's same ``triplet_first``, which is then checked once."""


def _sorted(index: torch.Tensor) -> bool:
    """Whether ``index`` is non-decreasing (the compiled kernels need it; a CPU check)."""
    reference, version, answer = _LAST_SORTED
    if reference is not None and reference() is index and version == index._version:
        return answer
    answer = index.numel() < 2 or bool((index[1:] >= index[:-1]).all())
    _LAST_SORTED[:] = [weakref.ref(index), index._version, answer]
    return answer


def _native_usable(p, q, first, second, weight, bias, radial, cosine, angle_b) -> bool:
    tensors = (p, q, first, second, weight, bias, radial, cosine, angle_b)
    same = all(t.dtype == p.dtype for t in tensors if t.is_floating_point())
    return same and native.usable(*tensors) and _sorted(first)


@custom_op("gptff::triplet_messages", mutates_args=())
def triplet_messages_op(
    p: Tensor, q: Tensor, first: Tensor, second: Tensor, weight: Tensor, bias: Tensor,
    radial: Tensor, cosine: Tensor, angle_w: Tensor, angle_b: Tensor, keep: bool,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """(the sum over triplets, the pre-activations (T, 2F) if ``keep`` else (0, 2F))."""
    return _forward_formula(p, q, first, second, weight, bias, radial, cosine, angle_w, angle_b,
                            keep)  # fmt: skip


def _forward_formula(p, q, first, second, weight, bias, radial, cosine, angle_w, angle_b, keep):
    out = p.new_zeros(p.shape)
    kept = _kept(p, first, weight, keep)
    for c in _chunks(first.shape[0], p.device):
        f, s = first[c], second[c]
        x = F.silu(p.index_select(0, f) + q.index_select(0, s))
        y = torch.addmm(bias, x, weight.T, out=kept[c]) if keep else F.linear(x, weight, bias)
        gate, core = y.chunk(2, dim=-1)
        angle = torch.addcmul(angle_b, cosine[c].unsqueeze(-1), angle_w)
        message = torch.sigmoid(gate) * F.silu(core) * radial.index_select(0, s) * angle
        out.index_add_(0, f, message)
    return out, kept


@triplet_messages_op.register_kernel("cpu")
def _triplet_messages_cpu(p, q, first, second, weight, bias, radial, cosine, angle_w, angle_b,
                          keep):  # fmt: skip
    inputs = (p, q, first, second, weight, bias, radial, cosine, angle_w, angle_b)
    if not _native_usable(*inputs[:8], angle_b):
        return _forward_formula(*inputs, keep)
    out, kept = _native_forward(*inputs, keep)
    return out, torch.cat(kept) if kept else _kept(p, first, weight, keep)


@triplet_messages_op.register_fake
def _(p, q, first, second, weight, bias, radial, cosine, angle_w, angle_b, keep):
    return p.new_empty(p.shape), _kept(p, first, weight, keep)


@custom_op("gptff::triplet_messages_backward", mutates_args=())
def triplet_messages_backward_op(
    grad_out: Tensor, p: Tensor, q: Tensor, first: Tensor, second: Tensor, weight: Tensor,
    bias: Tensor, radial: Tensor, cosine: Tensor, angle_w: Tensor, angle_b: Tensor, kept: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    """First-order gradients with respect to p, q, radial and cosine (no parameter gradients)."""
    inputs = (p, q, first, second, weight, bias, radial, cosine, angle_w, angle_b)
    return _first_order_formula(grad_out, inputs)


def _first_order_formula(grad_out, inputs):
    with torch.no_grad():
        grads = _formula_backward(grad_out, inputs, parameters_wanted=False)
    return grads[0], grads[1], grads[6], grads[7]


def _first_order_cpu(grad_out, inputs, kept):
    """The first-order gradients on the CPU; ``kept``: the pre-activations per chunk or []."""
    if _native_usable(*inputs[:8], inputs[9]):
        return _native_backward(grad_out, *inputs, kept)
    return _first_order_formula(grad_out, inputs)


@triplet_messages_backward_op.register_kernel("cpu")
def _triplet_messages_backward_cpu(grad_out, p, q, first, second, weight, bias, radial, cosine,
                                   angle_w, angle_b, kept):  # fmt: skip
    inputs = (p, q, first, second, weight, bias, radial, cosine, angle_w, angle_b)
    if kept.shape[0] not in (0, first.shape[0]) or kept.shape[1:] != bias.shape:
        raise ValueError(f"kept: (0 or {first.shape[0]}, {bias.shape[0]}) pre-activations")
    chunks = list(kept.split(chunk_size(p.device))) if kept.shape[0] else []
    return _first_order_cpu(grad_out, inputs, chunks)


@triplet_messages_backward_op.register_fake
def _(grad_out, p, q, first, second, weight, bias, radial, cosine, angle_w, angle_b, kept):
    return (
        p.new_empty(p.shape),
        q.new_empty(q.shape),
        radial.new_empty(radial.shape),
        (cosine.new_empty(cosine.shape)),
    )


def _setup(ctx, inputs, output):
    ctx.set_materialize_grads(False)
    ctx.eager_cpu = False
    ctx.save_for_backward(*inputs[:10], output[1])


class _TripletMessages(torch.autograd.Function):
    """The eager CPU route: the CPU kernels without the dispatcher, the pre-activations kept as
    a list of chunks."""

    @staticmethod
    def forward(ctx, *arguments):
        *inputs, keep = arguments
        if _native_usable(*inputs[:8], inputs[9]):
            out, kept = _native_forward(*inputs, keep)
        else:
            out, kept = _forward_formula(*inputs, False)[0], []
        ctx.eager_cpu = True
        ctx.save_for_backward(*inputs, *kept)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        return _backward(ctx, grad_out, None)


def _backward(ctx, grad_out, _grad_kept):
    if grad_out is None:
        return (None,) * 11
    # autocast may be on where the backward runs (forces by autograd inside the autocast
    # region of training): the forward ran without it, so must the backward
    inputs, kept = ctx.saved_tensors[:10], ctx.saved_tensors[10:]
    with torch.autocast(grad_out.device.type, enabled=False):
        grad_out = grad_out.to(inputs[0].dtype)
        # parameters need gradients only in training: skip their matrix products otherwise
        parameters_wanted = any(ctx.needs_input_grad[4:6] + ctx.needs_input_grad[8:10])
        if parameters_wanted or torch.is_grad_enabled():
            return (*_formula_backward(grad_out, inputs, parameters_wanted), None)
        if ctx.eager_cpu:
            grads = _first_order_cpu(grad_out, inputs, list(kept))
        else:
            grads = triplet_messages_backward_op(grad_out, *inputs, *kept)
        grad_p, grad_q, grad_radial, grad_cos = grads
        return grad_p, grad_q, None, None, None, None, grad_radial, grad_cos, None, None, None


def _formula_backward(grad_out, inputs, parameters_wanted):
    """All the gradients by the PyTorch formula, chunk by chunk; differentiable when grad mode is
    on (training on forces)."""
    p, q, first, second, weight, bias, radial, cosine, angle_w, angle_b = inputs
    grad_p, grad_q, grad_radial = (
        torch.zeros_like(p),
        torch.zeros_like(q),
        torch.zeros_like(radial),
    )
    grad_weight, grad_bias = torch.zeros_like(weight), torch.zeros_like(bias)
    grad_angle_w, grad_angle_b = torch.zeros_like(angle_w), torch.zeros_like(angle_b)
    grad_cosine = []
    for c in _chunks(first.shape[0], p.device):
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


triplet_messages_op.register_autograd(_backward, setup_context=_setup)


def _apply(inputs: tuple) -> Tensor:
    """The operator (or on the eager CPU path its autograd.Function) on ``inputs``; on the CPU the
    pre-activations are kept for a first-order backward when they fit."""
    p, first, weight = inputs[0], inputs[2], inputs[4]
    keep = (
        p.device.type == "cpu"  # only the compiled backward reads them
        and torch.is_grad_enabled()
        and any(t.requires_grad for t in inputs)
        and first.shape[0] * weight.shape[0] * p.element_size() <= KEEP_PRE_ACTIVATION_BYTES
    )
    if native.eager_cpu(p):
        return _TripletMessages.apply(*inputs, keep)
    return triplet_messages_op(*inputs, keep)[0]


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
        return _apply(inputs)
    dtype = weight.dtype
    inputs = tuple(t.to(dtype) if t.is_floating_point() else t for t in inputs)
    with torch.autocast(device_type, enabled=False):
        out = _apply(inputs)
    return out.to(p.dtype)
