"""The fused and triplet kernels as ``torch.library`` custom operators (``torch.ops.gptff.*``):
opcheck (schema, fake kernels, autograd registration, AOT dispatch) on the CPU with the compiled
kernels and with the PyTorch fallback, shape inference on the meta device without building the
library, the dispatcher route (as taken on other devices and under ``torch.compile``) equal to
the plain formulas with exact first and second derivatives, ``torch.compile`` tracing through
them, and the transformer's padding layout computed once per graph."""

import pytest
import torch
from torch.nn import functional as F

from gptff_core import fused, layers, native, triplets
from gptff_core.triplets import triplet_messages

OPS = torch.ops.gptff
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def make_inputs(dtype=torch.float64, device="cpu", grad=True):
    """Random inputs of every operator (rows: 23 bonds, 5 atoms, 6 short bonds, 29 triplets)."""
    g = torch.Generator().manual_seed(3)

    def rand(*shape):
        t = torch.randn(*shape, generator=g, dtype=torch.float64).to(device, dtype)
        return t.requires_grad_(grad)

    first = torch.sort(torch.randint(0, 5, (23,), generator=g))[0].to(device)
    second = torch.randint(0, 5, (23,), generator=g).to(device)
    t_first = torch.sort(torch.randint(0, 6, (29,), generator=g))[0].to(device)
    t_second = torch.randint(0, 6, (29,), generator=g).to(device)
    width = 4
    triplet = [rand(6, width), rand(6, width), t_first, t_second, rand(2 * width, width),
               rand(2 * width), rand(6, width), rand(29), rand(1, width), rand(width)]  # fmt: skip
    return {
        "gather_add": [rand(23, 6), rand(5, 6), first, rand(5, 6), second],
        "gated_silu": [rand(23, 12), rand(23, 6)],
        "silu_times": [rand(23, 6), rand(23, 6), rand(23, 6)],
        "triplet_messages": triplet,
    }


def op_cases(dtype=torch.float64, device="cpu", grad=True):
    """(operator, arguments) for every forward and backward operator."""
    i = make_inputs(dtype, device, grad)
    y, a, first, b, second = i["gather_add"]
    ys, m = i["gated_silu"]
    x, r, e = i["silu_times"]
    t = i["triplet_messages"]
    plain = lambda z: z.detach()  # noqa: E731
    return {
        "gather_add": (OPS.gather_add, (y, a, first, b, second, False)),
        "gather_add_silu": (OPS.gather_add, (y, a, first, b, second, True)),
        "silu_backward": (OPS.silu_backward, (plain(y), plain(a[first]))),
        "gated_silu": (OPS.gated_silu, (ys, None)),
        "gated_silu_times": (OPS.gated_silu, (ys, m)),
        "gated_silu_backward": (OPS.gated_silu_backward, (plain(ys), plain(m), plain(x))),
        "gated_silu_backward_none": (OPS.gated_silu_backward, (plain(ys), None, plain(x))),
        "silu_times": (OPS.silu_times, (x, r, e)),
        "silu_times_backward": (OPS.silu_times_backward, (plain(x), plain(r), plain(e))),
        "triplet_messages": (OPS.triplet_messages, (*t, False)),
        "triplet_messages_kept": (OPS.triplet_messages, (*t, True)),
        "triplet_messages_backward": (
            OPS.triplet_messages_backward,
            (plain(t[0]), *map(plain, t), plain(t[4])[:0].new_empty(0, 8)),
        ),
        "triplet_messages_backward_kept": (
            OPS.triplet_messages_backward,
            (plain(t[0]), *map(plain, t), OPS.triplet_messages(*map(plain, t), True)[1]),
        ),
    }


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", list(op_cases()))
def test_opcheck(kernel, name, dtype):
    """All of opcheck in float64; float32 without its (slow) AOT-dispatch test."""
    op, arguments = op_cases(dtype)[name]
    tests = ["test_schema", "test_autograd_registration", "test_faketensor"]
    if dtype == torch.float64:
        tests.append("test_aot_dispatch_dynamic")
    torch.library.opcheck(op, arguments, test_utils=tests)
    if kernel.name == "native":
        assert kernel.called


@pytest.mark.parametrize("name", list(op_cases()))
def test_meta_shapes_equal_cpu_shapes_without_building(name, monkeypatch):
    op, arguments = op_cases()[name]
    want = op(*arguments)

    def refuse():
        raise AssertionError("the library was asked for by meta tensors")

    monkeypatch.setattr(native, "kernels", refuse)
    meta = [a.detach().to("meta") if isinstance(a, torch.Tensor) else a for a in arguments]
    got = op(*meta)
    want, got = (v if isinstance(v, tuple) else (v,) for v in (want, got))
    assert [(g.shape, g.dtype, g.device.type) for g in got] == [
        (w.shape, w.dtype, "meta") for w in want
    ]


# ------------------------------------------------------------- the dispatcher route, as on a GPU
def formulas(name, arguments):
    """The plain PyTorch formula of each public function."""
    if name == "gather_add":
        y, a, first, b, second = arguments
        return F.silu(y + a[first] + b[second])
    if name == "gated_silu":
        core, gate = arguments[0].chunk(2, dim=-1)
        return F.silu(core) * torch.sigmoid(gate) * arguments[1]
    if name == "silu_times":
        x, r, e = arguments
        return e + F.silu(x) * r
    p, q, first, second, weight, bias, radial, cosine, angle_w, angle_b = arguments
    gate, core = F.linear(F.silu(p[first] + q[second]), weight, bias).chunk(2, dim=-1)
    message = (
        torch.sigmoid(gate) * F.silu(core) * radial[second] * (cosine[:, None] * angle_w + angle_b)
    )
    return torch.zeros_like(p).index_add(0, first, message)


FUNCTIONS = {
    "gather_add": lambda *t: fused.gather_add(*t, activate=True),
    "gated_silu": fused.gated_silu,
    "silu_times": fused.silu_times,
    "triplet_messages": triplet_messages,
}


@pytest.fixture
def dispatcher(monkeypatch):
    """Every call through ``torch.ops.gptff`` (the route of other devices and of tracing)."""
    monkeypatch.setattr(native, "eager_cpu", lambda tensor: False)
    monkeypatch.setattr(triplets, "CHUNK_TRIPLETS", 5)  # several chunks, the last one partial


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_dispatcher_route_equals_the_formula(kernel, dispatcher, name):
    arguments = make_inputs()[name]
    differentiable = [t for t in arguments if t.requires_grad]
    got, want = FUNCTIONS[name](*arguments), formulas(name, arguments)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    weights = torch.randn_like(want)
    for a, b in zip(
        torch.autograd.grad((got * weights).sum(), differentiable),
        torch.autograd.grad((want * weights).sum(), differentiable),
        strict=True,
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    assert bool(kernel.called) == (kernel.name == "native")


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_dispatcher_route_passes_gradcheck(kernel, dispatcher, name):
    arguments = make_inputs()[name]
    assert torch.autograd.gradcheck(FUNCTIONS[name], arguments)
    assert torch.autograd.gradgradcheck(FUNCTIONS[name], arguments)


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_dispatcher_route_first_order_inference_gradients(kernel, dispatcher, name):
    """With frozen parameters and no second derivative: the backward operators."""
    arguments = make_inputs()[name]
    if name == "triplet_messages":
        arguments = [t.detach() if i in (4, 5, 8, 9) else t for i, t in enumerate(arguments)]
    assert torch.autograd.gradcheck(FUNCTIONS[name], arguments)


def test_torch_compile_traces_the_operators(kernel):
    """One graph (fullgraph) through the operators; the values equal the eager ones."""
    arguments = make_inputs(grad=False)

    def network(arguments):
        t = triplet_messages(*arguments["triplet_messages"])
        y = fused.gather_add(*arguments["gather_add"])
        return t.sum() + fused.gated_silu(*arguments["gated_silu"]).sum() + y.sum()

    compiled = torch.compile(network, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(arguments), network(arguments), rtol=0, atol=1e-12)


@CUDA
@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_cuda_equals_cpu(name):
    cpu, cuda = make_inputs()[name], make_inputs(device="cuda")[name]
    torch.testing.assert_close(FUNCTIONS[name](*cuda).cpu(), FUNCTIONS[name](*cpu))
    (got,) = torch.autograd.grad(FUNCTIONS[name](*cuda).square().sum(), cuda[0])
    (want,) = torch.autograd.grad(FUNCTIONS[name](*cpu).square().sum(), cpu[0])
    torch.testing.assert_close(got.cpu(), want)


# ------------------------------------------------------------------- the transformer's padding
def test_padding_is_computed_once_per_graph(monkeypatch):
    """One host read of the largest structure per evaluation, not one per transformer layer;
    the batched energies equal the one-by-one energies."""
    from ase.build import bulk

    from gptff_core import load_model
    from gptff_core.evaluate import evaluate
    from gptff_core.graph import build_graph

    model = load_model("gptff-v2", dtype="float64")
    members = [bulk("Cu", "fcc", a=3.61, cubic=True), bulk("NaCl", "rocksalt", a=5.64)]
    singles = [evaluate(model, build_graph([m], dtype=torch.float64)).energy for m in members]
    calls = []
    original = layers.structure_padding
    monkeypatch.setattr(layers, "structure_padding", lambda g: calls.append(1) or original(g))
    batched = evaluate(model, build_graph(members, dtype=torch.float64)).energy
    assert len(calls) == 1 < len(model.layers)
    torch.testing.assert_close(batched, torch.cat(singles), rtol=0, atol=1e-10)


def test_sortedness_check_follows_changes_of_the_index():
    """The one-entry cache of the CPU kernels' sortedness check sees in-place changes."""
    index = torch.arange(5)
    assert triplets._sorted(index)
    index[0] = 9
    assert not triplets._sorted(index)
    assert triplets._sorted(torch.arange(5))
