"""``dispersion`` on the Makers' shared options: passed on to the calculators of the Makers that
support it (atomate2's static job gives GPTFF + D3's energy), refused by the others."""

import warnings
from dataclasses import dataclass

import numpy as np
import pytest
from ase.build import bulk

pytest.importorskip("torch_dftd")
pytest.importorskip("jobflow")

from jobflow import JobStore, run_locally
from maggma.stores import MemoryStore
from pymatgen.io.ase import AseAtomsAdaptor

from gptff_core import GPTFFCalculator, GPTFFInputError
from gptff_flows.jobs import GPTFFStaticMaker
from gptff_flows.options import GPTFFOptions


@dataclass(kw_only=True)
class WithoutD3(GPTFFOptions):
    """A Maker's options that do not pass ``dispersion`` on (the default)."""


@dataclass(kw_only=True)
class WithD3(GPTFFOptions):
    supports_dispersion = True


def test_a_maker_that_ignores_dispersion_refuses_it():
    WithoutD3().check_options()
    with pytest.raises(GPTFFInputError, match="dispersion=True is not supported by WithoutD3"):
        WithoutD3(dispersion=True).check_options()
    with pytest.raises(GPTFFInputError, match="dispersion must be True or False"):
        WithD3(dispersion="yes").check_options()
    with pytest.raises(GPTFFInputError, match="calculator_kwargs sets dispersion"):
        WithD3(calculator_kwargs={"dispersion": True}).check_calculator_kwargs()


def test_make_calculator_passes_dispersion_on():
    WithD3(dispersion=True).check_options()
    assert WithD3(dispersion=True).make_calculator().parameters["dispersion"] is True
    assert WithD3().make_calculator().parameters["dispersion"] is False


def test_static_maker_with_dispersion_gives_gptff_plus_d3():
    atoms = bulk("NaCl", "rocksalt", a=5.64)
    atoms.rattle(0.05, seed=5)
    maker = GPTFFStaticMaker(dtype="float64", dispersion=True)
    assert maker.calculator_kwargs["dispersion"] is True
    job = maker.make(AseAtomsAdaptor.get_structure(atoms))
    store = JobStore(MemoryStore(), additional_stores={"data": MemoryStore()})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        responses = run_locally(job, store=store, ensure_success=True)
    document = responses[job.uuid][1].output
    atoms.calc = GPTFFCalculator(dtype="float64", dispersion=True)
    plain = GPTFFCalculator(dtype="float64").get_potential_energy(atoms)
    assert abs(document.output.energy - atoms.get_potential_energy()) < 1e-8
    assert abs(document.output.energy - plain) > 0.05  # D3 is in it
    np.testing.assert_allclose(document.output.forces, atoms.get_forces(), rtol=0, atol=1e-8)
