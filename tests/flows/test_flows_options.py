"""One set of GPTFF fields for every Maker (gptff_flows.options): each Maker inherits them, keeps
``name`` as its first positional argument, and refuses a bad value naming the field."""

import dataclasses

import pytest

pytest.importorskip("jobflow")

from gptff_core.errors import GPTFFInputError
from gptff_flows.flows.eos import GPTFFEosMaker
from gptff_flows.flows.finetune_md import FineTuneMDMaker
from gptff_flows.flows.screening import SubstitutionScreeningMaker
from gptff_flows.flows.tensile import TensileMDMaker
from gptff_flows.jobs import GPTFFMDMaker, GPTFFRelaxMaker, GPTFFStaticMaker
from gptff_flows.options import (
    GPTFFOptions,
    check_gptff_options,
    require_int,
    require_number,
)

MAKERS = [
    GPTFFStaticMaker,
    GPTFFRelaxMaker,
    GPTFFMDMaker,
    GPTFFEosMaker,
    SubstitutionScreeningMaker,
    FineTuneMDMaker,
    TensileMDMaker,
]
SHARED = {"model", "dtype", "smooth", "device", "calculator_kwargs"}


@pytest.mark.parametrize("maker", MAKERS, ids=lambda m: m.__name__)
def test_every_maker_shares_the_gptff_fields_and_keeps_name_first(maker):
    assert issubclass(maker, GPTFFOptions)
    fields = {f.name: f for f in dataclasses.fields(maker)}
    assert SHARED <= set(fields)
    assert all(fields[name].kw_only for name in SHARED)
    positional = [f.name for f in dataclasses.fields(maker) if f.init and not f.kw_only]
    assert positional[0] == "name"
    assert maker("my run").name == "my run"


@pytest.mark.parametrize(
    "field, value",
    [("model", ""), ("dtype", "float16"), ("smooth", "yes"), ("device", ""), ("device", "gpu")],
)
def test_a_bad_shared_field_is_refused_by_name(field, value):
    options = dict(model="gptff-v2", dtype="float32", smooth=None, device="cpu") | {field: value}
    with pytest.raises(GPTFFInputError, match=rf"^{field} must be"):
        check_gptff_options(**options)


def test_the_fields_win_over_calculator_kwargs():
    options = GPTFFOptions(dtype="float64", calculator_kwargs={"skin": 1.0, "dtype": "float32"})
    assert options.calculator_arguments() == dict(
        skin=1.0, model="gptff-v2", dtype="float64", smooth=None, device="cpu"
    )


@pytest.mark.parametrize("value", [0, -1.0, float("nan"), float("inf"), True, "1"])
def test_require_number_refuses_what_is_not_a_finite_positive_number(value):
    with pytest.raises(GPTFFInputError, match=r"^fmax must be a number > 0 eV/Å"):
        require_number("fmax", value, "eV/Å")


def test_require_number_and_int_accept_their_bounds():
    assert require_number("steps", 0, inclusive=True) == 0.0
    assert require_int("n", 3, minimum=3) == 3
    for bad in (2, 3.0, True):
        with pytest.raises(GPTFFInputError, match=r"^n must be an integer ≥ 3"):
            require_int("n", bad, minimum=3)


def test_a_device_is_checked_by_name_not_by_presence():
    """A flow built on a login node without a GPU may run on a GPU node: "cuda" is accepted
    here (the job's calculator checks it where it runs), a typo is not."""
    check_gptff_options("gptff-v2", "float32", None, "cuda:1")
    check_gptff_options("gptff-v2", "float32", None, "auto")
