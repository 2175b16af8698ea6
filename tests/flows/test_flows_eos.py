"""gptff_flows.flows.eos: from an unrelaxed start (+5 % volume) the EOS flow finds the V0 and B0
of a direct energy–volume fit made here with the calculator (float64, published network); every
document carries its verdict; `gptff eos` refuses non-bulk input before any work and exits 3 on a
flagged fit. The verdict logic itself is tested on synthetic points in test_eos_verdict.py."""

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("atomate2")

import ase.io
from ase import units
from ase.build import bulk, fcc111, molecule
from jobflow import run_locally
from pymatgen.io.ase import AseAtomsAdaptor

from gptff_core import GPTFFCalculator
from gptff_core.cli import main
from gptff_core.errors import ExitCode
from gptff_flows.analysis.eos_fit import EosRefused, fit_eos
from gptff_flows.analysis.plotting import plot_eos
from gptff_flows.flows.eos import GPTFFEosMaker
from gptff_flows.jobs.eos import summarize_eos
from gptff_flows.run import run_flow
from gptff_flows.stores import local_job_store

LINEAR_STRAIN = 0.02  # ±2 % linear: about ±6 % in volume
CRYSTALS = {
    "Cu": lambda: bulk("Cu", "fcc", a=3.61),
    "NaCl": lambda: bulk("NaCl", "rocksalt", a=5.64),
    "Si": lambda: bulk("Si", "diamond", a=5.43),
}


def direct_fit(atoms, calculator) -> tuple[float, float]:
    """V0 (Å³/atom) and B0 (GPa) of a 3rd-order Birch–Murnaghan fit, independent of the flow.

    Isotropic scans (these cubic crystals have no free internal coordinates): a coarse scan
    finds the minimum, a fine scan of ±6 % in volume around it is fitted as
    E = a + b x + c x² + d x³ with x = V^(-2/3) (the Birch–Murnaghan form), and
    B0 = V0 E''(V0).
    """
    n = len(atoms)

    def energy_per_atom(volume_per_atom: float) -> float:
        scaled = atoms.copy()
        factor = (volume_per_atom * n / atoms.get_volume()) ** (1 / 3)
        scaled.set_cell(atoms.cell * factor, scale_atoms=True)
        scaled.calc = calculator
        return scaled.get_potential_energy() / n

    start = atoms.get_volume() / n
    coarse = start * np.linspace(0.8, 1.25, 19)
    centre = coarse[np.argmin([energy_per_atom(v) for v in coarse])]
    volumes = centre * np.linspace(0.94, 1.06, 13)
    energies = [energy_per_atom(v) for v in volumes]
    coefficients = np.polyfit(volumes ** (-2 / 3), energies, 3)
    slope = np.polyder(coefficients)
    roots = np.roots(slope)
    x_range = (volumes.max() ** (-2 / 3), volumes.min() ** (-2 / 3))
    roots = [r.real for r in roots if abs(r.imag) < 1e-12 and x_range[0] <= r.real <= x_range[1]]
    x0 = min(roots, key=lambda r: np.polyval(coefficients, r))
    v0 = x0 ** (-3 / 2)
    # d²E/dV² = d²E/dx² (dx/dV)² at the minimum, where dE/dx = 0
    curvature = np.polyval(np.polyder(coefficients, 2), x0) * (2 / 3 * v0 ** (-5 / 3)) ** 2
    return v0, v0 * curvature / units.GPa


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return local_job_store(tmp_path_factory.mktemp("eos_store"))


@pytest.fixture(scope="module")
def calculator():
    return GPTFFCalculator(model="gptff-v2", dtype="float64", smooth=False)


@pytest.mark.parametrize("name", list(CRYSTALS))
def test_eos_from_unrelaxed_start_matches_direct_fit(name, store, calculator, tmp_path):
    ideal = CRYSTALS[name]()
    strained = ideal.copy()
    strained.set_cell(ideal.cell * 1.05 ** (1 / 3), scale_atoms=True)  # +5 % volume
    maker = GPTFFEosMaker(
        dtype="float64",
        smooth=False,
        linear_strain=(-LINEAR_STRAIN, LINEAR_STRAIN),
        number_of_frames=6,
        relax_fmax=0.01,
        plot_dir=str(tmp_path),
    )
    flow = maker.make(AseAtomsAdaptor.get_structure(strained))
    responses = run_locally(flow, store=store, ensure_success=True, log=False, root_dir=tmp_path)
    doc = responses[flow.output.uuid][1].output

    v0, b0 = direct_fit(ideal, calculator)
    assert doc.fit.eos == "birch_murnaghan"
    assert doc.verdict == "ok" and doc.flags == [], doc.flag_reasons  # a good fit is trusted
    assert doc.fit.rms_residual_meV_per_atom < 0.1 and doc.fit.r_squared > 0.9999
    assert doc.fit.v0_per_atom == pytest.approx(v0, rel=3e-3)
    assert doc.fit.b0 == pytest.approx(b0, rel=2e-2)
    assert doc.formula_pretty == name and doc.nsites == len(ideal)
    assert len(doc.volumes_per_atom) == 7  # the relaxed cell and 6 strained ones
    assert doc.gptff.job_type == "eos" and doc.gptff.dtype == "float64"
    assert doc.plot_path is not None and doc.plot_path.endswith(".png")
    assert open(doc.plot_path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"

    stored = store.query_one({"uuid": flow.output.uuid}, load=False)
    assert stored["output"]["fit"]["v0_per_atom"] == pytest.approx(doc.fit.v0_per_atom)
    assert stored["metadata"]["gptff_role"] == "eos_fit"


def test_fit_recovers_a_known_curve():
    """Birch–Murnaghan energies made from chosen parameters are fitted back to them."""
    v0, e0, b0_gpa, b1 = 20.0, -5.0, 100.0, 4.5
    b0 = b0_gpa * units.GPa
    volumes = v0 * np.linspace(0.9, 1.1, 9)
    eta = (v0 / volumes) ** (2 / 3)
    energies = e0 + 9 * v0 * b0 / 16 * ((eta - 1) ** 3 * b1 + (eta - 1) ** 2 * (6 - 4 * eta))
    fit = fit_eos(volumes.tolist(), energies.tolist(), "birch_murnaghan")
    assert fit.v0_per_atom == pytest.approx(v0, rel=1e-6)
    assert fit.b0 == pytest.approx(b0_gpa, rel=1e-4)
    assert fit.b1 == pytest.approx(b1, rel=1e-3)
    assert fit.e0_per_atom == pytest.approx(e0, abs=1e-9)


def test_points_without_a_minimum_are_refused():
    """Issue 13: newer pymatgen returns V0 = 2.3e14 Å³/atom here instead of raising."""
    volumes = np.linspace(10, 12, 6)
    with pytest.raises(ValueError, match=r"do not bracket a minimum"):
        fit_eos(volumes.tolist(), (-0.1 * volumes).tolist(), "birch_murnaghan")


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="eos"):
        GPTFFEosMaker(eos="quadratic")
    with pytest.raises(ValueError, match="relax_fmax"):
        GPTFFEosMaker(relax_fmax=0)
    with pytest.raises(ValueError, match="socket"):
        GPTFFEosMaker(socket=True)


def test_plot_from_a_stored_document(tmp_path, store):
    store.connect()
    stored = store.query_one({"output.@class": "GPTFFEosDocument"}, load=True)
    if stored is None:
        pytest.skip("needs an EOS result from the tests above")
    path = plot_eos(stored["output"], tmp_path / "again.png")
    assert path.read_bytes()[:4] == b"\x89PNG"


def _eos_output(cells, energies_per_atom) -> dict:
    """atomate2's EOS flow output (``relax`` block) for ``cells`` and energies (eV/atom)."""
    structures = [AseAtomsAdaptor.get_structure(c) for c in cells]
    n = len(cells[0])
    return {"relax": {"structure": structures, "volume": [s.volume for s in structures],
                      "energy": [e * n for e in energies_per_atom]}}  # fmt: skip


def _provenance() -> dict:
    return dict(job_type="relax", model="gptff-v2", model_name="gptff-v2", checkpoint_path="x",
                checkpoint_sha256="0" * 64, checkpoint_format="published", dtype="float32",
                smooth=False, bond_window=0.5, three_body_window=0.5, device="cpu",
                gptff_version="test")  # fmt: skip


def _al_cells(factors):
    al = bulk("Al", "fcc", a=4.05)
    cells = []
    for f in factors:
        cell = al.copy()
        cell.set_cell(al.cell * f, scale_atoms=True)
        cells.append(cell)
    return cells


def test_a_jump_where_a_shell_crosses_the_cutoff_is_in_the_document(tmp_path):
    """fcc Al cells across its third shell's 5 Å crossing (+0.8 % linear), energies from a smooth
    curve plus +150 meV/atom beyond it (the published network's step there): the document names
    the crossing and the flag, and the plot's title says FLAGGED."""
    factors = np.linspace(0.985, 1.015, 7)
    cells = _al_cells(factors)
    volumes = np.array([c.get_volume() for c in cells])
    eta = (16.6 / volumes) ** (2 / 3)  # Birch–Murnaghan: V0 16.6 Å³, B0 0.5 eV/Å³, B′ 4.5
    smooth = -4.0 + 9 * 16.6 * 0.5 / 16 * ((eta - 1) ** 3 * 4.5 + (eta - 1) ** 2 * (6 - 4 * eta))
    jumped = smooth + np.where(factors > 1.008, 0.150, 0.0)
    doc = summarize_eos.original(_eos_output(cells, jumped), _provenance(), plot_dir=str(tmp_path))
    assert doc.verdict == "flagged" and "jump_at_cutoff" in doc.flags
    (crossing,) = doc.cutoff_crossings
    assert crossing.cutoff == 5.0 and crossing.n_pairs == 12
    k = int(np.searchsorted(factors, 1.008))
    assert crossing.volumes_per_atom == pytest.approx(volumes[k - 1 : k + 1])
    assert doc.fit.flags == doc.flags and Path(doc.plot_path).read_bytes()[:4] == b"\x89PNG"

    clean = summarize_eos.original(_eos_output(cells, smooth), _provenance())
    assert clean.verdict == "ok" and clean.cutoff_crossings == doc.cutoff_crossings


def test_with_smooth_envelopes_a_crossing_is_not_called_a_jump():
    """Smooth mode makes the energy continuous at the cutoffs: the same points (a 2 meV/atom
    misfit where Al's third shell crosses 5 Å) are flagged ``jump_at_cutoff`` for the published
    network, whose energy does jump there, but not for a smooth one, whose documents would
    otherwise blame a jump that cannot exist; the crossing is still recorded."""
    factors = np.linspace(0.985, 1.015, 7)
    cells = _al_cells(factors)
    volumes = np.array([c.get_volume() for c in cells])
    eta = (16.6 / volumes) ** (2 / 3)
    energies = -4.0 + 9 * 16.6 * 0.5 / 16 * ((eta - 1) ** 3 * 4.5 + (eta - 1) ** 2 * (6 - 4 * eta))
    energies = energies + np.where(factors > 1.008, 0.002, 0.0)
    published = summarize_eos.original(_eos_output(cells, energies), _provenance())
    assert "jump_at_cutoff" in published.flags
    smooth = summarize_eos.original(_eos_output(cells, energies), _provenance() | {"smooth": True})
    assert "jump_at_cutoff" not in smooth.flags
    assert smooth.cutoff_crossings == published.cutoff_crossings != []


def test_a_refused_fit_keeps_the_points_and_the_reason(tmp_path):
    """Energies falling all the way (no minimum): no fit, verdict refused, the points kept."""
    cells = _al_cells(np.linspace(0.98, 1.0, 6))
    volumes = np.array([c.get_volume() for c in cells])
    doc = summarize_eos.original(
        _eos_output(cells, (-0.1 * volumes).tolist()), _provenance(), plot_dir=str(tmp_path)
    )
    assert doc.verdict == "refused" and doc.fit is None and doc.flags == ["no_minimum"]
    assert "do not bracket a minimum" in doc.flag_reasons[0]
    assert doc.volumes_per_atom == pytest.approx(sorted(volumes))
    assert Path(doc.plot_path).read_bytes()[:4] == b"\x89PNG"


def test_the_maker_refuses_a_slab_before_making_any_job():
    slab = fcc111("Al", (1, 1, 4), vacuum=20.0)
    slab.pbc = True
    with pytest.raises(ValueError, match=r"empty gap 40\.0 Å"):
        GPTFFEosMaker().make(AseAtomsAdaptor.get_structure(slab))


def test_a_relative_plot_dir_is_where_the_caller_was(tmp_path, monkeypatch):
    """run_flow runs the jobs in a temporary directory: the plot must not land (and vanish)
    there but in ``plots`` below the directory the Maker was built in."""
    monkeypatch.chdir(tmp_path)
    maker = GPTFFEosMaker(linear_strain=(-0.01, 0.01), number_of_frames=3, plot_dir="plots")
    monkeypatch.chdir(Path(tmp_path).anchor)  # the caller moves on; the Maker already resolved
    flow = maker.make(AseAtomsAdaptor.get_structure(bulk("Cu", "fcc", a=3.61)))
    doc = run_flow(flow, local_job_store(tmp_path / "store"))[flow.output.uuid][1].output
    assert Path(doc.plot_path).parent == tmp_path / "plots"
    assert Path(doc.plot_path).read_bytes()[:4] == b"\x89PNG"


def _gptff(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    ("name", "make", "message"),
    [
        ("h2o.xyz", lambda: molecule("H2O"), "periodic in all three directions"),
        ("slab.cif", lambda: fcc111("Al", (1, 1, 4), vacuum=50.0), "empty gap 100.0 Å"),
    ],
    ids=["molecule", "slab"],
)
def test_gptff_eos_refuses_a_non_bulk_in_one_line_before_any_work(
    capsys, tmp_path, name, make, message
):
    """Issue 13: a molecule gave a LinAlgError traceback, a 100 Å vacuum slab V0 = 182 Å³/atom."""
    path = tmp_path / name
    ase.io.write(path, make())
    code, _, err = _gptff(capsys, "eos", path, "--store", tmp_path / "store")
    assert code == ExitCode.BAD_INPUT
    (line,) = [line for line in err.splitlines() if line.startswith("gptff")]
    assert line.startswith(f"gptff: error: {path}: ") and message in line
    assert "Traceback" not in err and not (tmp_path / "store").exists()


def test_gptff_eos_of_al_is_flagged_with_its_reasons(capsys, tmp_path):
    """Issue 13's `gptff eos Al.cif --points 5`: the published network's energy jumps by about
    150 meV/atom where fcc Al's third shell (4.96 Å) crosses 5 Å, at +0.8 % linear strain."""
    cif = tmp_path / "Al.cif"
    ase.io.write(cif, bulk("Al"))
    store = tmp_path / "store"
    code, out, err = _gptff(capsys, "eos", cif, "--points", 5, "--store", store, "--json")
    assert code == ExitCode.FLAGGED
    (row,) = json.loads(out)
    assert row["verdict"] == "flagged" and {"poor_fit", "jump_at_cutoff"} <= set(row["flags"])
    assert len(row["flag_reasons"]) == len(row["flags"])
    assert row["rms_residual_meV_per_atom"] > 1 and row["r_squared"] < 0.999
    warning = [line for line in err.splitlines() if line.startswith("gptff: warning:")]
    assert len(warning) == 1 and "Al.cif" in warning[0] and "5 Å bond cutoff" in warning[0]

    code, out, _ = _gptff(capsys, "results", "--store", store, "--kind", "eos", "--json")
    (found,) = json.loads(out)
    assert found["verdict"] == "flagged" and found["flags"] == ",".join(row["flags"])
    assert found["rms_residual_meV_per_atom"] == pytest.approx(row["rms_residual_meV_per_atom"])
    code, out, _ = _gptff(capsys, "results", "--store", store, "--kind", "eos")
    assert "flagged" in out and "jump_at_cutoff" in out and "R²" in out


def test_gptff_eos_exits_4_when_the_fit_is_refused(capsys, tmp_path, monkeypatch):
    """A refused fit (injected: every form refused) is stored with its reason, warned about
    and gives exit code 4; the table shows no V0."""

    def refuse(volumes, energies, form, crossings=()):
        raise EosRefused("no_minimum", f"{form}: the points do not bracket a minimum (injected)")

    monkeypatch.setattr("gptff_flows.jobs.eos.fit_eos", refuse)
    cif = tmp_path / "Cu.cif"
    ase.io.write(cif, bulk("Cu", "fcc", a=3.61))
    code, out, err = _gptff(
        capsys, "eos", cif, "--points", 3, "--store", tmp_path / "s", "--no-plot"
    )
    assert code == ExitCode.FAILED
    assert "refused" in out and "no_minimum" in out
    assert "gptff: warning:" in err and "no EOS fit (no_minimum)" in err and "injected" in err
