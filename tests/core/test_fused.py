"""The fused elementwise chains equal their plain formulas, with exact first and second
derivatives, through the compiled kernels and the PyTorch fallback, on one and several threads."""

import pytest
import torch
from torch.nn import functional as F

from gptff_core import fused

ROWS, ATOMS, WIDTH = 23, 5, 6


@pytest.fixture
def rand():
    generator = torch.Generator().manual_seed(1)

    def make(*shape, dtype=torch.float64):
        return torch.randn(*shape, generator=generator, dtype=dtype).requires_grad_()

    return make


@pytest.fixture
def index():
    generator = torch.Generator().manual_seed(2)
    first = torch.sort(torch.randint(0, ATOMS, (ROWS,), generator=generator))[0]
    return first, torch.randint(0, ATOMS, (ROWS,), generator=generator)


def plain_gated(y, m=None):
    core, gate = y.chunk(2, dim=-1)
    out = F.silu(core) * torch.sigmoid(gate)
    return out if m is None else out * m


def cases(rand, index, dtype=torch.float64):
    first, second = index
    y2, m = rand(ROWS, 2 * WIDTH, dtype=dtype), rand(ROWS, WIDTH, dtype=dtype)
    y, a, b = (rand(n, WIDTH, dtype=dtype) for n in (ROWS, ATOMS, ATOMS))
    x, r, e = (rand(ROWS, WIDTH, dtype=dtype) for _ in range(3))
    gathered = lambda y, a, b: y + a[first] + b[second]  # noqa: E731
    return {
        "gather_add": (lambda *t: fused.gather_add(t[0], t[1], first, t[2], second), gathered,
                       (y, a, b)),
        "gather_add_silu": (
            lambda *t: fused.gather_add(t[0], t[1], first, t[2], second, activate=True),
            lambda *t: F.silu(gathered(*t)), (y, a, b),
        ),
        "gated_silu": (fused.gated_silu, plain_gated, (y2,)),
        "gated_silu_times": (fused.gated_silu, plain_gated, (y2, m)),
        "silu_times": (fused.silu_times, lambda x, r, e: e + F.silu(x) * r, (x, r, e)),
    }  # fmt: skip


NAMES = ["gather_add", "gather_add_silu", "gated_silu", "gated_silu_times", "silu_times"]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_values_and_gradients_equal_the_plain_formula(rand, index, kernel, name, dtype):
    function, formula, inputs = cases(rand, index, dtype)[name]
    tolerance = dict(rtol=0, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-6)
    got, want = function(*inputs), formula(*inputs)
    torch.testing.assert_close(got, want, **tolerance)
    weights = torch.randn_like(want)
    for a, b in zip(
        torch.autograd.grad((got * weights).sum(), inputs),
        torch.autograd.grad((want * weights).sum(), inputs),
        strict=True,
    ):
        torch.testing.assert_close(a, b, **tolerance)
    assert bool(kernel.called) == (kernel.name == "native")


@pytest.mark.parametrize("name", NAMES)
def test_first_and_second_derivatives_pass_gradcheck(rand, index, kernel, name):
    function, _, inputs = cases(rand, index)[name]
    assert torch.autograd.gradcheck(function, inputs)
    assert torch.autograd.gradgradcheck(function, inputs)


@pytest.mark.parametrize("threads", [2, 3])
def test_threads_give_the_same_numbers(rand, index, kernel, threads):
    """The compiled kernels split rows between OpenMP threads (the session runs on one)."""
    built = cases(rand, index)
    single = {name: function(*inputs) for name, (function, _, inputs) in built.items()}
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for name, (function, _, inputs) in built.items():
            torch.testing.assert_close(function(*inputs), single[name], rtol=0, atol=1e-14)
    finally:
        torch.set_num_threads(previous)
