"""The chunked triplet kernel equals the plain tensor formula, with exact first and second
derivatives (gradcheck and gradgradcheck in float64, chunks smaller than the input), with the
compiled fused kernels and with the PyTorch fallback."""

import pytest
import torch
from torch.nn import functional as F

from gptff_core import triplets
from gptff_core.triplets import triplet_messages


def plain_formula(p, q, first, second, weight, bias, radial, cosine, angle_w, angle_b):
    x = F.silu(p[first] + q[second])
    gate, core = F.linear(x, weight, bias).chunk(2, dim=-1)
    angle = cosine[:, None] * angle_w + angle_b
    message = torch.sigmoid(gate) * F.silu(core) * radial[second] * angle
    return torch.zeros_like(p).index_add(0, first, message)


@pytest.fixture
def inputs():
    generator = torch.Generator().manual_seed(0)
    n_short, n_triplets, width = 6, 29, 4

    def rand(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64, requires_grad=True)

    first = torch.sort(torch.randint(0, n_short, (n_triplets,), generator=generator))[0]
    second = torch.randint(0, n_short, (n_triplets,), generator=generator)
    cosine = torch.rand(n_triplets, generator=generator, dtype=torch.float64) * 2 - 1
    return [rand(n_short, width), rand(n_short, width), first, second, rand(2 * width, width),
            rand(2 * width), rand(n_short, width), cosine.requires_grad_(), rand(1, width),
            rand(width)]  # fmt: skip


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    monkeypatch.setattr(triplets, "CHUNK_TRIPLETS", 5)  # several chunks, the last one partial


def _forces_only(inputs):
    """The inputs with the parameters frozen, as in inference (forces and stress only), which is
    when the fused backward runs."""
    frozen = {4, 5, 8, 9}
    return [t.detach() if i in frozen else t for i, t in enumerate(inputs)]


@pytest.mark.parametrize("keep", [True, False], ids=["kept", "recomputed"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_inference_gradients_equal_the_plain_formula(inputs, kernel, dtype, keep, monkeypatch):
    """Also when the compiled backward recomputes the pre-activations instead of keeping them."""
    if not keep:
        monkeypatch.setattr(triplets, "KEEP_PRE_ACTIVATION_BYTES", 0)
    inputs = [
        t.detach().to(dtype).requires_grad_(t.requires_grad) if t.is_floating_point() else t
        for t in _forces_only(inputs)
    ]
    differentiable = [t for t in inputs if t.requires_grad]
    tolerance = dict(rtol=0, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)
    got = triplet_messages(*inputs)
    want = plain_formula(*inputs)
    torch.testing.assert_close(got, want, **tolerance)
    weights = torch.randn_like(want)
    for a, b in zip(
        torch.autograd.grad((got * weights).sum(), differentiable),
        torch.autograd.grad((want * weights).sum(), differentiable),
        strict=True,
    ):
        torch.testing.assert_close(a, b, **tolerance)
    if kernel.name == "native":
        assert {"gated_messages", "gated_messages_backward"} <= set(kernel.called)


def test_inference_gradients_pass_gradcheck(inputs, kernel):
    assert torch.autograd.gradcheck(triplet_messages, _forces_only(inputs))


def test_equals_the_plain_formula_and_its_gradients(inputs, kernel):
    differentiable = [t for t in inputs if t.requires_grad]
    chunked = triplet_messages(*inputs)
    plain = plain_formula(*inputs)
    torch.testing.assert_close(chunked, plain, rtol=0, atol=1e-12)
    weights = torch.randn_like(plain)
    for got, want in zip(
        torch.autograd.grad((chunked * weights).sum(), differentiable),
        torch.autograd.grad((plain * weights).sum(), differentiable),
        strict=True,
    ):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_first_and_second_derivatives_pass_gradcheck(inputs, kernel):
    assert torch.autograd.gradcheck(triplet_messages, inputs)
    assert torch.autograd.gradgradcheck(triplet_messages, inputs)


def test_no_triplets_gives_zeros_and_zero_gradients(inputs, kernel):
    empty = torch.zeros(0, dtype=torch.long)
    args = [
        *inputs[:2],
        empty,
        empty,
        *inputs[4:7],
        torch.zeros(0, dtype=torch.float64),
        *inputs[8:],
    ]
    out = triplet_messages(*args)
    assert torch.count_nonzero(out) == 0
    (grad_p,) = torch.autograd.grad(out.sum(), [args[0]])
    assert torch.count_nonzero(grad_p) == 0


@pytest.mark.parametrize("threads", [2, 3])
def test_threads_give_the_same_numbers(inputs, kernel, threads):
    """The compiled kernels split triplets between threads at boundaries of their first bond
    (the test session runs on one thread)."""
    inputs = _forces_only(inputs)
    differentiable = [t for t in inputs if t.requires_grad]

    def values_and_gradients():
        out = triplet_messages(*inputs)
        return [out, *torch.autograd.grad(out.square().sum(), differentiable)]

    single = values_and_gradients()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for got, want in zip(values_and_gradients(), single, strict=True):
            torch.testing.assert_close(got, want, rtol=0, atol=1e-13)
    finally:
        torch.set_num_threads(previous)
