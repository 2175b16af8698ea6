"""gptff_flows.flows.eos: from an unrelaxed start (+5 % volume) the EOS flow finds the V0 and B0
of a direct energy–volume fit made here with the calculator (float64, published network)."""

import numpy as np
import pytest

pytest.importorskip("atomate2")

from ase import units
from ase.build import bulk
from jobflow import run_locally
from pymatgen.io.ase import AseAtomsAdaptor

from gptff_core import GPTFFCalculator
from gptff_flows.flows.eos import GPTFFEosMaker, fit_eos, plot_eos
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
    volumes = np.linspace(10, 12, 6)
    with pytest.raises(ValueError, match=r"minimum|fit"):
        fit_eos(volumes.tolist(), (-0.1 * volumes).tolist(), "birch_murnaghan")


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="eos"):
        GPTFFEosMaker(eos="quadratic")
    with pytest.raises(ValueError, match="relax_fmax"):
        GPTFFEosMaker(relax_fmax=0)
    with pytest.raises(ValueError, match="socket"):
        GPTFFEosMaker(socket=True)


def test_plot_from_a_stored_document(tmp_path, store):
    stored = store.query_one({"output.@class": "GPTFFEosDocument"}, load=True)
    if stored is None:
        pytest.skip("needs an EOS result from the tests above")
    path = plot_eos(stored["output"], tmp_path / "again.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
