"""gptff_flows.jobs.labels: EMT and GPAW labels equal direct calculator calls (stress through
frames_from_documents back to ASE's eV/Å³), a failed calculation is recorded and not raised, the
VASP label is atomate2's static job plus a job that reads its task document (fed by a
vasprun.xml/OUTCAR/CONTCAR written here from EMT values, VASP itself replaced), and frame keys.

GPAW tests skip where GPAW is not installed (`make gpaw`)."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from jobflow import Flow, JobStore, OnMissing, run_locally
from maggma.stores import MemoryStore
from pymatgen.io.ase import AseAtomsAdaptor

from gptff_core.errors import GPTFFInputError
from gptff_core.training.datasets import KBAR
from gptff_flows.jobs.labels import (
    GPAW_DEFAULTS,
    check_labeller,
    frame_key,
    label_structure,
    make_label,
)
from gptff_flows.jobs.training_data import frames_from_documents

SI_SETTINGS = {
    "mode": {"name": "pw", "ecut": 300},
    "kpts": {"size": [3, 3, 3]},
    "xc": "PBE",
    "occupations": {"name": "fermi-dirac", "width": 0.05},
    "convergence": {"forces": 0.01},
    "maxiter": 150,
}
"""Every GPAW_DEFAULTS key spelled out, so the direct call below does not depend on defaults."""


@pytest.fixture(autouse=True)
def one_blas_thread():
    """GPAW's BLAS (OpenBLAS) on one thread: two threads on a busy 2-core machine made the Si
    test 5× slower (3.6 s against 19.6 s, measured)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def cu_au(seed: int = 0, strain: float = 0.98):
    """A rattled, compressed 4-atom fcc Cu₃Au cell (Å)."""
    atoms = bulk("Cu", "fcc", a=3.7, cubic=True)
    atoms.symbols[0] = "Au"
    atoms.set_cell(atoms.cell * strain, scale_atoms=True)
    atoms.rattle(0.05, seed=seed)
    return atoms


def rattled_si():
    atoms = bulk("Si", "diamond", a=5.43)
    atoms.rattle(0.05, seed=1)
    return atoms


def vasprun_xml(atoms, energy, forces, stress_kb, electronic_steps: int, nelm: int) -> str:
    """A vasprun.xml of one static calculation: the parts pymatgen's Vasprun and emmet's
    TaskDoc read (generator, INCAR, k-points, parameters with NELM, atom types with POTCAR
    titles, structures, SCF steps, forces eV/Å, stress kbar, energies eV). SCF not converged
    when ``electronic_steps`` reaches ``nelm``."""

    def rows(name, values):
        body = "".join(f"<v>{' '.join(f'{x:.10f}' for x in row)}</v>" for row in values)
        return f'<varray name="{name}">{body}</varray>'

    def structure(name=""):
        label = f' name="{name}"' if name else ""
        return (f"<structure{label}><crystal>{rows('basis', atoms.cell.array)}</crystal>"
                f"{rows('positions', atoms.get_scaled_positions())}</structure>")  # fmt: skip

    def energies(value):
        names = ("e_fr_energy", "e_wo_entrp", "e_0_energy")
        return "<energy>" + "".join(f'<i name="{n}">{value:.8f}</i>' for n in names) + "</energy>"

    symbols = atoms.get_chemical_symbols()
    kinds = list(dict.fromkeys(symbols))
    sites = "".join(f"<rc><c>{s}</c><c>{kinds.index(s) + 1}</c></rc>" for s in symbols)
    types = "".join(f"<rc><c>{symbols.count(s)}</c><c>{s}</c><c>1.0</c><c>11.0</c>"
                    f"<c>  PAW_PBE {s} 06Sep2000</c></rc>" for s in kinds)  # fmt: skip
    values = [energy + 0.1 / (k + 1) for k in range(electronic_steps - 1)] + [energy]
    scf = "".join(f"<scstep>{energies(value)}</scstep>" for value in values)
    return "\n".join([
        '<?xml version="1.0" encoding="ISO-8859-1"?>', "<modeling>",
        '<generator><i name="program" type="string">vasp </i>'
        '<i name="version" type="string">6.4.2  </i></generator>',
        '<incar><i type="int" name="ISMEAR">0</i><i name="SIGMA">0.05</i>'
        '<i type="int" name="NSW">0</i><i type="int" name="IBRION">-1</i></incar>',
        '<kpoints><generation param="Gamma"><v type="int" name="divisions">1 1 1</v>'
        '</generation><varray name="kpointlist"><v>0 0 0</v></varray>'
        '<varray name="weights"><v>1.0</v></varray></kpoints>',
        f'<parameters><separator name="electronic"><i type="int" name="NELM">{nelm}</i>'
        '</separator><separator name="ionic"><i type="int" name="NSW">0</i>'
        '<i type="int" name="IBRION">-1</i><i type="int" name="ISIF">2</i></separator>'
        "</parameters>",
        f"<atominfo><atoms>{len(symbols)}</atoms><types>{len(kinds)}</types>"
        f'<array name="atoms"><set>{sites}</set></array>'
        f'<array name="atomtypes"><set>{types}</set></array></atominfo>',
        structure("initialpos"),
        f"<calculation>{scf}{structure()}{rows('forces', forces)}{rows('stress', stress_kb)}"
        f"{energies(energy)}</calculation>",
        structure("finalpos"), "</modeling>", "",
    ])  # fmt: skip


OUTCAR = (
    " vasp.6.4.2 serial\n   number of bands    NBANDS=     24\n"
    "   total plane-waves  NPLWV =  32768\n   IBRION =     -1\n\n"
    "  Elapsed time (sec):       12.345\n  Total CPU time used (sec):       12.000\n"
    "  User time (sec):       11.0\n  System time (sec):        1.0\n"
    "  Maximum memory used (kb):      100000.\n  Average memory used (kb):          N/A\n"
)
"""The OUTCAR lines pymatgen's Outcar needs, and the run statistics (elapsed 12.345 s)."""


def emt_vasp(atoms, electronic_steps=5, nelm=60):
    """A stand-in for VASP: writes vasprun.xml, OUTCAR and CONTCAR in the working directory
    with EMT's labels of ``atoms`` (eV, eV/Å, stress as kbar with VASP's sign)."""
    from pathlib import Path

    from pymatgen.io.vasp import Poscar

    atoms = atoms.copy()
    atoms.calc = EMT()
    stress_kb = -atoms.get_stress(voigt=False) / KBAR
    xml = vasprun_xml(atoms, atoms.get_potential_energy(), atoms.get_forces(), stress_kb,
                      electronic_steps, nelm)  # fmt: skip

    def run_vasp(**kwargs):
        Path("vasprun.xml").write_text(xml)
        Path("OUTCAR").write_text(OUTCAR)
        Poscar(AseAtomsAdaptor.get_structure(atoms)).write_file("CONTCAR")

    return run_vasp


def store() -> JobStore:
    job_store = JobStore(MemoryStore(), additional_stores={"data": MemoryStore()})
    job_store.connect()
    return job_store


def assert_frame_matches(document, energy, forces, ase_stress, atol_stress=1e-10):
    """The document, read back as a training frame, gives ASE's labels (eV, eV/Å, eV/Å³)."""
    (frame,) = frames_from_documents([document.model_dump()])
    assert frame.energy == pytest.approx(energy, abs=1e-8)
    np.testing.assert_allclose(frame.forces, forces, atol=1e-8)
    np.testing.assert_allclose(frame.stress, ase_stress, atol=atol_stress)


def test_emt_label_equals_a_direct_emt_call_with_stress_in_vasp_kbar():
    atoms = cu_au()
    document = label_structure(AseAtomsAdaptor.get_structure(atoms), "emt")
    atoms.calc = EMT()
    ase_stress = atoms.get_stress(voigt=False)
    assert document.converged and document.error is None
    formula = AseAtomsAdaptor.get_structure(atoms).composition.reduced_formula
    assert (document.labeller, document.nsites, document.formula_pretty) == ("emt", 4, formula)
    assert document.code_version.startswith("ase ")
    assert document.energy == pytest.approx(atoms.get_potential_energy(), abs=1e-10)
    np.testing.assert_allclose(document.forces, atoms.get_forces(), atol=1e-10)
    # kbar, VASP's sign: the compressed cell pushes outwards, a positive pressure in VASP's terms
    np.testing.assert_allclose(document.stress, -ase_stress / KBAR, atol=1e-8)
    assert np.trace(ase_stress) < 0 and np.trace(document.stress) > 0
    assert_frame_matches(document, atoms.get_potential_energy(), atoms.get_forces(), ase_stress)


def test_emt_label_job_runs_and_records_its_frame_key(tmp_path):
    atoms = cu_au(seed=2)
    made = make_label(atoms, "emt")
    assert made.metadata["frame_key"] == frame_key(atoms, "emt", None)
    responses = run_locally(made, store=store(), ensure_success=True, log=False, root_dir=tmp_path)
    document = responses[made.uuid][1].output
    atoms.calc = EMT()
    assert document.energy == pytest.approx(atoms.get_potential_energy(), abs=1e-10)
    assert document.frame_key == made.metadata["frame_key"]


def test_a_failing_emt_calculation_is_recorded_not_raised(monkeypatch, tmp_path):
    def broken(self, *args, **kwargs):
        raise RuntimeError("EMT broke")

    monkeypatch.setattr(EMT, "calculate", broken)
    made = make_label(cu_au(), "emt")
    responses = run_locally(made, store=store(), ensure_success=True, log=False, root_dir=tmp_path)
    document = responses[made.uuid][1].output
    assert not document.converged
    assert document.error == "RuntimeError: EMT broke"
    assert document.energy is None and document.forces is None and document.stress is None


def test_gpaw_label_of_rattled_si_equals_a_direct_gpaw_call():
    pytest.importorskip("gpaw")
    from gpaw import GPAW, PW, FermiDirac

    atoms = rattled_si()
    document = label_structure(atoms, "gpaw", SI_SETTINGS)
    assert document.converged, document.error
    assert document.settings == SI_SETTINGS
    assert document.code_version.startswith("gpaw 26.7")
    atoms.calc = GPAW(mode=PW(300), kpts=(3, 3, 3), xc="PBE", occupations=FermiDirac(0.05),
                      convergence={"forces": 0.01}, maxiter=150, txt=None)  # fmt: skip
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    ase_stress = atoms.get_stress(voigt=False)
    assert document.energy == pytest.approx(energy, abs=1e-6)
    np.testing.assert_allclose(document.forces, forces, atol=1e-5)
    np.testing.assert_allclose(document.stress, -ase_stress / KBAR, atol=1e-3)  # kbar
    assert np.abs(forces).max() > 0.1  # the rattle gives forces worth comparing
    assert_frame_matches(document, energy, forces, ase_stress, atol_stress=1e-7)


def test_gpaw_lcao_label_has_no_stress():
    pytest.importorskip("gpaw")
    settings = {"mode": "lcao", "basis": "sz(dzp)", "kpts": {"size": [1, 1, 1]}, "xc": "PBE"}
    document = label_structure(rattled_si(), "gpaw", settings)
    assert document.converged, document.error
    assert document.stress is None and len(document.forces) == 2
    (frame,) = frames_from_documents([document.model_dump()])
    assert frame.stress is None and frame.energy == pytest.approx(document.energy)


def test_gpaw_scf_not_converged_is_recorded_not_raised():
    pytest.importorskip("gpaw")
    document = label_structure(rattled_si(), "gpaw", {**SI_SETTINGS, "maxiter": 1})
    assert not document.converged
    assert "ConvergenceError" in document.error and "maxiter=1" in document.error
    assert document.energy is None and document.forces is None


def test_frame_key_is_stable_under_settings_order_and_differs_between_frames():
    atoms = cu_au()
    key = frame_key(atoms, "gpaw", {"xc": "PBE", "mode": {"name": "pw", "ecut": 300}})
    same = {"mode": {"ecut": 300.0, "name": "pw"}, "xc": "PBE"}
    assert frame_key(AseAtomsAdaptor.get_structure(atoms), "gpaw", same) == key
    wrapped = atoms.copy()
    wrapped.positions[1] += wrapped.cell[0]  # the same crystal, one atom one cell further
    assert frame_key(wrapped, "gpaw", same) == key
    assert frame_key(atoms, "gpaw", None) == frame_key(atoms, "gpaw", GPAW_DEFAULTS)
    assert frame_key(cu_au(seed=1), "gpaw", same) != key
    assert frame_key(atoms, "gpaw", {**same, "xc": "PBEsol"}) != key
    assert frame_key(atoms, "emt", None) != frame_key(atoms, "gpaw", None)


@pytest.mark.parametrize(
    ("labeller", "settings", "message"),
    [
        ("dft", {}, "labeller must be one of"),
        ("emt", {"cutoff": 3.0}, "emt settings"),
        ("emt", None, r"EMT has no parameters for \['Si'\]"),
        ("emt", [], "must be a dict"),
        ("gpaw", {"txt": "-"}, "not accepted"),
        ("gpaw", {"mode": {"name": "pw", "ecut": -1}}, r"mode.ecut must be a number > 0 eV"),
        ("gpaw", {"mode": "tb"}, "mode must be one of"),
        ("gpaw", {"kpts": {"density": 0}}, "kpts.density"),
        ("gpaw", {"maxiter": 0}, "maxiter"),
        ("gpaw", {"mode": "lcao", "basis": "sz"}, r"basis set for \['Si basis sz'\]"),
        ("vasp", {"incar": {}}, "vasp settings"),
    ],
)
def test_check_labeller_refuses_bad_input_before_work(labeller, settings, message):
    if labeller == "gpaw":
        pytest.importorskip("gpaw")
    with pytest.raises(GPTFFInputError, match=message):
        check_labeller(labeller, settings, structure=rattled_si())


def test_missing_paw_setups_and_vasp_in_process_are_refused_before_work(monkeypatch, tmp_path):
    gpaw = pytest.importorskip("gpaw")
    monkeypatch.setattr(gpaw, "setup_paths", [tmp_path])
    with pytest.raises(GPTFFInputError, match=r"no GPAW PAW setup .* for \['Si'\]"):
        label_structure(rattled_si(), "gpaw")
    with pytest.raises(GPTFFInputError, match="use make_label"):
        label_structure(cu_au(), "vasp")


def test_a_missing_gpaw_is_refused_before_work(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "gpaw" else real(n))
    with pytest.raises(GPTFFInputError, match="make gpaw"):
        make_label(rattled_si(), "gpaw")


def test_make_label_vasp_is_atomate2_static_job_then_the_label_job():
    from atomate2.vasp.jobs.core import StaticMaker

    atoms = cu_au()
    settings = {"user_incar_settings": {"ENCUT": 520}, "vdw": "optB88"}
    flow = make_label(atoms, "vasp", settings)
    assert isinstance(flow, Flow) and len(flow.jobs) == 2
    static, label = flow.jobs
    maker = static.function.__self__
    assert isinstance(maker, StaticMaker)
    incar = maker.input_set_generator.user_incar_settings
    assert incar["ENCUT"] == 520 and incar["ISMEAR"] == 0 and incar["ISIF"] == 2
    assert maker.input_set_generator.vdw.lower() == "optb88"
    assert label.function_args[0].uuid == static.uuid  # it reads the task document
    assert label.config.on_missing_references == OnMissing.NONE
    assert flow.output.uuid == label.uuid
    assert {j.metadata["frame_key"] for j in flow.jobs} == {frame_key(atoms, "vasp", settings)}


@pytest.mark.parametrize("converged", [True, False], ids=["scf-converged", "scf-not-converged"])
def test_vasp_label_reads_the_task_document_of_a_vasprun(monkeypatch, tmp_path, converged):
    """VASP replaced by files written from EMT values; atomate2's job parses them into its
    TaskDoc, the label job into a LabelDocument with the same energy, forces and stress."""
    import atomate2.vasp.jobs.base as vasp_jobs

    atoms = cu_au(seed=4)
    steps = 5 if converged else 8
    monkeypatch.setattr(vasp_jobs, "write_vasp_input_set", lambda *a, **k: None)
    monkeypatch.setattr(vasp_jobs, "run_vasp", emt_vasp(atoms, steps, nelm=8))
    flow = make_label(atoms, "vasp")
    responses = run_locally(flow, store=store(), ensure_success=True, log=False, root_dir=tmp_path)
    document = responses[flow.output.uuid][1].output
    assert document.labeller == "vasp" and document.code_version == "vasp 6.4.2"
    assert document.frame_key == frame_key(atoms, "vasp", None)
    if not converged:
        assert not document.converged and "failed" in document.error
        assert document.energy is None
        return
    assert document.converged and document.error is None
    assert document.wall_time_s == pytest.approx(12.345)
    atoms.calc = EMT()
    assert document.energy == pytest.approx(atoms.get_potential_energy(), abs=1e-8)
    np.testing.assert_allclose(document.forces, atoms.get_forces(), atol=1e-9)
    np.testing.assert_allclose(document.stress, -atoms.get_stress(voigt=False) / KBAR, atol=1e-7)
    assert_frame_matches(document, atoms.get_potential_energy(), atoms.get_forces(),
                         atoms.get_stress(voigt=False), atol_stress=1e-10)  # fmt: skip


def test_vasp_label_of_a_crashed_vasp_job_is_a_failed_label(monkeypatch, tmp_path):
    import atomate2.vasp.jobs.base as vasp_jobs

    def crash(**kwargs):
        raise RuntimeError("vasp_std: segmentation fault")

    monkeypatch.setattr(vasp_jobs, "write_vasp_input_set", lambda *a, **k: None)
    monkeypatch.setattr(vasp_jobs, "run_vasp", crash)
    flow = make_label(cu_au(), "vasp")
    responses = run_locally(flow, store=store(), log=False, root_dir=tmp_path)
    document = responses[flow.output.uuid][1].output
    assert not document.converged and "VASP job failed" in document.error
    assert document.nsites == 4 and document.energy is None
