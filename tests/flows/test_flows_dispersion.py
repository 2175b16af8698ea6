"""``dispersion=True`` through the workflow Makers: the EOS flow and the screening relaxations
give GPTFF + D3 computed here directly (a plain float64 GPTFFCalculator plus
gptff_core.dispersion.D3Dispersion on the same structure); the tensile and fine-tune-MD Makers
build calculators with D3; the active-learning Maker refuses it; the CLIs take ``--d3``; the
documents record it (provenance), and documents stored before these fields decode."""

import warnings

import numpy as np
import pytest

pytest.importorskip("torch_dftd")
pytest.importorskip("atomate2")
pytest.importorskip("torch_sim")

from ase.build import bulk
from jobflow import JobStore, run_locally
from maggma.stores import MemoryStore
from pymatgen.io.ase import AseAtomsAdaptor

from gptff_core import GPTFFCalculator, GPTFFInputError
from gptff_core.cli import build_parser
from gptff_core.dispersion import D3Dispersion
from gptff_flows.schemas.base import GPTFFProvenance, GPTFFTaskDocument


@pytest.fixture(scope="module")
def gptff():
    return GPTFFCalculator(dtype="float64")


@pytest.fixture(scope="module")
def d3():
    return D3Dispersion()


def direct(atoms, gptff, d3) -> tuple[float, float]:
    """(GPTFF energy, D3 energy) of ``atoms`` in eV, computed independently of the flows."""
    atoms = atoms.copy()
    atoms.calc = gptff
    return atoms.get_potential_energy(), float(d3([atoms]).energy[0])


def run(flow):
    store = JobStore(MemoryStore(), additional_stores={"data": MemoryStore()})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return run_locally(flow, store=store, ensure_success=True, log=False)


def test_eos_flow_with_dispersion_fits_gptff_plus_d3(gptff, d3, tmp_path):
    from gptff_flows.flows.eos import GPTFFEosMaker

    start = AseAtomsAdaptor.get_structure(bulk("NaCl", "rocksalt", a=5.64))
    maker = GPTFFEosMaker(dtype="float64", dispersion=True, number_of_frames=3, relax_fmax=0.05)
    assert maker.initial_relax_maker.dispersion and maker.eos_relax_maker.dispersion
    responses = run(maker.make(start))
    outputs = [r[1].output for r in responses.values()]
    points = [o for o in outputs if isinstance(o, GPTFFTaskDocument)]
    document = next(o for o in outputs if hasattr(o, "energies_per_atom"))
    assert len(points) == 4 and len(document.energies_per_atom) == 4
    expected, without = [], []
    for point in points:
        atoms = AseAtomsAdaptor.get_atoms(point.output.structure)
        plain, dispersion = direct(atoms, gptff, d3)
        assert point.output.energy == pytest.approx(plain + dispersion, abs=1e-7)
        assert point.gptff.dispersion and point.gptff.dispersion_settings == d3.settings()
        expected.append((plain + dispersion) / len(atoms))
        without.append(plain / len(atoms))
    np.testing.assert_allclose(sorted(document.energies_per_atom), sorted(expected), atol=1e-8)
    assert min(abs(a - b) for a, b in zip(expected, without, strict=True)) > 0.01  # D3 is in
    assert document.gptff.dispersion and document.gptff.dispersion_settings == d3.settings()
    assert document.gptff.job_type == "eos" and document.gptff.model_version == "v2"


def test_eos_maker_refuses_relax_makers_that_disagree_on_dispersion():
    from gptff_flows.flows.eos import GPTFFEosMaker
    from gptff_flows.jobs.force_field import GPTFFRelaxMaker

    with pytest.raises(GPTFFInputError, match=r"eos_relax_maker\.dispersion must equal"):
        GPTFFEosMaker(dispersion=True, eos_relax_maker=GPTFFRelaxMaker(relax_cell=False))


def _screening_settings(dispersion: bool):
    from gptff_flows.jobs.screening import checkpoint_sha256
    from gptff_flows.schemas.screening import ScreeningSettings

    return ScreeningSettings(
        model="gptff-v2", checkpoint_sha256=checkpoint_sha256("gptff-v2"), dtype="float64",
        smooth=None, fmax=0.1, steps=30, min_atoms=16, dispersion=dispersion,
    )  # fmt: skip


@pytest.mark.parametrize("batched", [True, False], ids=["torchsim_batch", "one_by_one"])
def test_screening_relaxations_with_dispersion_give_gptff_plus_d3(batched, gptff, d3, monkeypatch):
    import gptff_core.torchsim
    from gptff_flows.analysis.energetics import supercell
    from gptff_flows.jobs.batch_relax import relax_items

    if not batched:  # the chunk's fallback: ASE FIRE with a GPTFFCalculator, one by one

        def broken_batch(*args, **kwargs):
            raise GPTFFInputError("system 1: atoms closer than 0.5 Å")

        monkeypatch.setattr(gptff_core.torchsim, "relax_batch", broken_batch)
    items = []
    for i, (formula, a) in enumerate([("NaCl", 5.5), ("KCl", 6.4)]):
        atoms = bulk(formula, "rocksalt", a=a)
        atoms.rattle(0.02, seed=i)
        items.append(dict(key=f"k{i}", label=formula, structure=atoms))
    items = [i | {"structure": AseAtomsAdaptor.get_structure(i["structure"])} for i in items]
    documents = relax_items(items, _screening_settings(True), "test")
    assert [d.relaxed_one_by_one for d in documents] == [not batched] * 2
    for document in documents:
        assert document.status != "failed", document.error
        relaxed = AseAtomsAdaptor.get_atoms(document.relaxed_structure)
        plain, dispersion = direct(relaxed, gptff, d3)
        n = len(relaxed)
        assert document.energy_per_atom_relaxed_cell == pytest.approx(
            (plain + dispersion) / n, abs=1e-6
        )
        big = supercell(relaxed, 16)
        plain, dispersion = direct(big, gptff, d3)
        assert document.energy_per_atom == pytest.approx((plain + dispersion) / len(big), abs=1e-7)
        assert abs(dispersion / len(big)) > 0.01
        assert document.settings.dispersion and document.gptff.dispersion
        assert document.gptff.dispersion_settings == d3.settings()


def test_screening_keys_without_dispersion_are_those_stored_before_it():
    from gptff_flows.analysis.campaign import _keyed

    off, on = _screening_settings(False), _screening_settings(True)
    structure = AseAtomsAdaptor.get_structure(bulk("NaCl", "rocksalt", a=5.64))

    def key(settings_dump):
        return _keyed([dict(structure=structure, relax_cell=True)], settings_dump)[0]["key"]

    old = off.model_dump(exclude={"model", "dispersion"})  # the dump before the field existed
    from gptff_flows.analysis.campaign import campaign_items

    class Generation:
        candidates = ()

    def items(settings):
        return {i["label"]: i["key"] for i in campaign_items(Generation, [
            dict(name="NaCl", structure=structure)], settings)}  # fmt: skip

    assert items(off)["NaCl"] == key(old)
    assert items(on)["NaCl"] != key(old)


def test_screening_maker_passes_dispersion_to_its_jobs():
    from gptff_flows.flows.screening import SubstitutionScreeningMaker
    from gptff_flows.jobs.screening import _settings

    maker = SubstitutionScreeningMaker(dispersion=True)
    maker.validate()
    assert _settings(maker._options()).dispersion is True
    assert "dispersion" not in SubstitutionScreeningMaker()._options()  # older inputs unchanged


def test_tensile_calculators_have_dispersion():
    from gptff_flows.flows.tensile import TensileMDMaker, oriented_hcp_cell
    from gptff_flows.jobs.tensile import _calculator

    structure = oriented_hcp_cell(repeat=(1, 1, 1))
    maker = TensileMDMaker(dispersion=True)
    maker._validate(structure)
    calculator = _calculator(maker.settings(structure))
    assert calculator.parameters["dispersion"] is True and calculator.d3 is not None
    assert "dispersion" not in TensileMDMaker().settings(structure)
    assert _calculator(TensileMDMaker().settings(structure)).d3 is None


def test_finetune_md_runs_its_md_with_dispersion():
    from gptff_flows.flows.finetune_md import FineTuneMDMaker
    from gptff_flows.jobs.finetune_md import _md_maker

    maker = FineTuneMDMaker(dispersion=True, finetune=False)
    maker.check_options()
    md = _md_maker("gptff-v2", 600.0, maker.settings())
    assert md.dispersion and md.calculator_kwargs["dispersion"] is True
    plain = FineTuneMDMaker(finetune=False).settings()
    assert "dispersion" not in plain and not _md_maker("gptff-v2", 600.0, plain).dispersion


def test_active_learning_refuses_dispersion_saying_why():
    from gptff_flows.flows.learn import ActiveLearningMaker

    ActiveLearningMaker().check_options()
    with pytest.raises(GPTFFInputError, match=r"refused by ActiveLearningMaker.*first-principles"):
        ActiveLearningMaker(dispersion=True).check_options()


def test_workflow_commands_take_d3(tmp_path):
    from gptff_flows.cli.eos import _eos_maker
    from gptff_flows.cli.finetune_md import _maker

    parser = build_parser()
    args = parser.parse_args(["eos", "x.cif", "--d3"])
    assert _eos_maker(args, None).dispersion is True
    assert _eos_maker(parser.parse_args(["eos", "x.cif"]), None).dispersion is False
    assert parser.parse_args(["screen", "p.cif", "--substitute", "Y=Sc", "--d3"]).d3 is True
    argv = ["finetune-md", "--structure", "s.cif", "--species", "Li", "--temperatures", "600"]
    args = parser.parse_args([*argv, "--no-finetune", "--d3"])
    assert _maker(args, [600.0], [1, 1, 1]).dispersion is True


def test_provenance_records_skin_model_version_and_old_documents_decode():
    provenance = GPTFFProvenance.from_calculator(GPTFFCalculator(skin=1.0), "static", "gptff-v2")
    assert provenance.skin == 1.0 and provenance.model_version == "v2"
    assert provenance.dispersion is False and provenance.dispersion_settings is None
    old = provenance.model_dump(exclude={"skin", "model_version", "dispersion",
                                         "dispersion_settings"})  # fmt: skip
    decoded = GPTFFProvenance.model_validate(old)
    assert decoded.dispersion is False and decoded.skin is None and decoded.model_version is None
