"""Compiled fused kernels (``gptff_core/kernels/*.cpp``), built on first use with the system's C++
compiler and loaded with ctypes.

The library is compiled for the CPU it runs on (``-march=native``) and cached under
``$XDG_CACHE_HOME/gptff/kernels/<key>/`` (else ``~/.cache/gptff/kernels``), where the key hashes
the source, the compiler, its flags and the CPU's feature flags, so a cache shared by different
machines (a cluster's home directory) holds one build per kind of CPU. The build is written
atomically, so concurrent first uses are safe.

When no compiler is found, or the build fails, or ``GPTFF_NATIVE=0`` is set, :func:`kernels`
returns None (with one logged warning when a build failed) and callers use their PyTorch code,
which gives the same numbers.

The kernels are the CPU kernels of custom operators (namespace ``gptff``, seen as
``torch.ops.gptff.*``, defined in :mod:`gptff_core.fused` and :mod:`gptff_core.triplets`): each
has a CPU kernel (this library when it can take the tensors, else the PyTorch formula), a kernel
for every other device (the PyTorch formula), a fake kernel (shape inference on the meta device
and under ``torch.compile``) and an autograd formula. On the CPU, outside ``torch.compile``, the
same kernels and autograd formulas are called through a plain :class:`torch.autograd.Function`
instead of the dispatcher (:func:`dispatch`, :func:`function`), which skips about 10 µs of Python
per call, a few per cent of a 64-atom evaluation. The library is built on the first call that
receives a CPU tensor.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

KERNELS = Path(__file__).with_name("kernels")
SOURCES = [KERNELS / "triplets.cpp", KERNELS / "elementwise.cpp"]
HEADERS = [KERNELS / "common.h"]
FLAGS = ["-O3", "-march=native", "-fopenmp", "-fno-math-errno", "-fno-trapping-math", "-shared",
         "-fPIC"]  # fmt: skip
_FUNCTIONS = {
    "silu_of_sum": ["p", "p", "p", "p", "n", "n", "p", "i"],
    "gated_messages": ["p", "p", "p", "p", "p", "p", "p", "n", "n", "p", "i"],
    "gated_messages_backward": ["p"] * 7 + ["n", "n"] + ["p"] * 4 + ["i"],
    "silu_of_sum_backward": ["p", "p", "p", "p", "n", "n", "p", "i"],
    "gather_add": ["p", "p", "p", "p", "p", "n", "n", "i", "p", "p", "i"],
    "silu_backward": ["p", "p", "n", "n", "p", "i"],
    "gated_silu": ["p", "p", "n", "n", "p", "i"],
    "gated_silu_backward": ["p", "p", "p", "n", "n", "p", "p", "i"],
    "silu_times": ["p", "p", "p", "n", "n", "p", "i"],
    "silu_times_backward": ["p", "p", "p", "n", "n", "p", "p", "i"],
}
_CTYPES = {"p": ctypes.c_void_p, "n": ctypes.c_int64, "i": ctypes.c_int}


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return name
    return None


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return ""


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "gptff" / "kernels"


def _build(compiler: str) -> Path:
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256(
        "\n".join(
            [*(f.read_text() for f in SOURCES + HEADERS), compiler, version, *FLAGS, _cpu_flags()]
        ).encode()
    ).hexdigest()[:16]
    target = cache_dir() / key / "libgptff_kernels.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as work:
        partial = Path(work) / target.name
        result = subprocess.run(
            [compiler, *FLAGS, *map(str, SOURCES), "-o", str(partial)],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise RuntimeError(result.stderr.strip()[-2000:])
        os.replace(partial, target)
    return target


@functools.cache
def kernels() -> ctypes.CDLL | None:
    """The fused-kernel library, built if needed; None when disabled or unavailable."""
    if os.environ.get("GPTFF_NATIVE", "1") == "0":
        return None
    compiler = _compiler()
    if compiler is None:
        logger.info("no C++ compiler found; GPTFF uses its PyTorch kernels")
        return None
    try:
        library = ctypes.CDLL(str(_build(compiler)))
    except (OSError, RuntimeError, subprocess.SubprocessError) as error:
        logger.warning("could not build GPTFF's fused kernels (%s); using PyTorch kernels", error)
        return None
    for name, signature in _FUNCTIONS.items():
        for suffix in ("f32", "f64"):
            function = getattr(library, f"{name}_{suffix}")
            function.argtypes = [_CTYPES[code] for code in signature]
            function.restype = None
    return library


def call(name: str, *arguments: torch.Tensor | int) -> None:
    """Call kernel ``name`` for the dtype of its first tensor; tensors must be contiguous CPU
    float32/float64 (int64 for indices), integers are passed as counts; the thread count is
    PyTorch's."""
    library = kernels()
    suffix = "f32" if arguments[0].dtype == torch.float32 else "f64"
    raw = [a.data_ptr() if isinstance(a, torch.Tensor) else a for a in arguments]  # None → NULL
    getattr(library, f"{name}_{suffix}")(*raw, torch.get_num_threads())


def usable(*tensors: torch.Tensor) -> bool:
    """Whether the kernels can take these tensors (CPU, float32/float64, contiguous, built);
    the library is built only when CPU tensors ask for it."""
    return (
        tensors[0].dtype in (torch.float32, torch.float64)
        and all(t.is_cpu and t.is_contiguous() for t in tensors)
        and kernels() is not None
    )


_PLAIN = (torch.Tensor, torch.nn.Parameter)


def eager_cpu(tensor: torch.Tensor) -> bool:
    """Whether to call the CPU kernels directly: a plain CPU tensor, not under ``torch.compile``
    nor any tracing (fake or functional tensors, a dispatch mode), which must see the operators."""
    return (
        tensor.is_cpu
        and type(tensor) in _PLAIN
        and not torch.compiler.is_compiling()
        and torch._C._len_torch_dispatch_stack() == 0
    )


def dispatch(op: Callable, cpu_kernel: Callable, *arguments):
    """``cpu_kernel(*arguments)`` on the eager CPU path, else the operator ``op``."""
    if eager_cpu(arguments[0]):
        return cpu_kernel(*arguments)
    return op(*arguments)


def function(name: str, forward: Callable, setup: Callable, backward: Callable) -> type:
    """A :class:`torch.autograd.Function` whose forward is ``forward`` (a CPU kernel) followed by
    ``setup`` (the operator's ``setup_context``) and whose backward is ``backward``. Written in
    the ``forward(ctx, ...)`` style, whose ``apply`` costs half as much Python as the
    ``setup_context`` style's."""

    def forward_with_context(ctx, *arguments):
        output = forward(*arguments)
        setup(ctx, arguments, output)
        return output

    return type(
        name,
        (torch.autograd.Function,),
        {"forward": staticmethod(forward_with_context), "backward": staticmethod(backward)},
    )
