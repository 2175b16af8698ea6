"""The glibc malloc tuning is applied once, on Linux, and can be switched off."""

import sys

import pytest

from gptff_core import allocator


@pytest.fixture(autouse=True)
def fresh_state(monkeypatch):
    monkeypatch.setattr(allocator, "_applied", None)


def test_switched_off_by_the_environment(monkeypatch):
    monkeypatch.setenv("GPTFF_TUNE_MALLOC", "0")
    assert allocator.tune_malloc() is False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_applied_once_on_linux(monkeypatch):
    monkeypatch.delenv("GPTFF_TUNE_MALLOC", raising=False)
    assert allocator.tune_malloc() is True
    monkeypatch.setattr(allocator.ctypes, "CDLL", None)  # a second call must not touch libc
    assert allocator.tune_malloc() is True
