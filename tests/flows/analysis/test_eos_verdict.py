"""gptff_flows.analysis.eos_fit and eos_geometry: EOS fits carry their verdict, points without
a minimum are refused whatever pymatgen returns, cutoff crossings are found, non-bulk structures
refused.

Pure functions: synthetic E(V) points from a chosen Birch–Murnaghan curve (with a jump, noise or
odd parameters added) and small ASE cells; no network."""

import numpy as np
import pytest

pytest.importorskip("pymatgen")

from ase import Atoms, units
from ase.build import bulk, fcc111, molecule

from gptff_flows.analysis import eos_fit as eos_verdict
from gptff_flows.analysis.eos_fit import EosRefused, fit_eos
from gptff_flows.analysis.eos_geometry import MAX_VACUUM_GAP, check_bulk, cutoff_crossings
from gptff_flows.schemas import CutoffCrossing

MEV = 1e-3  # eV
V0, E0, B0_GPA, B1 = 16.5, -4.0, 80.0, 4.5


def birch_murnaghan(volumes, v0=V0, e0=E0, b0_gpa=B0_GPA, b1=B1):
    """E(V) (eV/atom) of the 3rd-order Birch–Murnaghan form, V in Å³/atom."""
    b0 = b0_gpa * units.GPa
    eta = (v0 / np.asarray(volumes)) ** (2 / 3)
    return e0 + 9 * v0 * b0 / 16 * ((eta - 1) ** 3 * b1 + (eta - 1) ** 2 * (6 - 4 * eta))


VOLUMES = V0 * np.linspace(0.94, 1.06, 7)  # ±6 % in volume, V0 in the middle


def crossing_between(k: int, volumes=VOLUMES) -> CutoffCrossing:
    return CutoffCrossing(cutoff=5.0, kind="bond", volumes_per_atom=list(volumes[k : k + 2]),
                          n_pairs=12, example="Al–Al 4.990 → 5.010 Å")  # fmt: skip


def test_exact_points_give_a_trusted_fit_with_their_quality():
    fit = fit_eos(VOLUMES, birch_murnaghan(VOLUMES), "birch_murnaghan")
    assert fit.flags == [] and fit.flag_reasons == []
    assert fit.v0_per_atom == pytest.approx(V0, rel=1e-6)
    assert fit.b0 == pytest.approx(B0_GPA, rel=1e-4)
    assert fit.rms_residual_meV_per_atom < 1e-3 and fit.r_squared > 1 - 1e-9


def test_rms_and_r_squared_are_those_of_the_fitted_curve():
    """Computed here from the fitted parameters with the formula above, not pymatgen's."""
    rng = np.random.default_rng(1)
    energies = birch_murnaghan(VOLUMES) + rng.normal(0, 0.3 * MEV, VOLUMES.size)
    fit = fit_eos(VOLUMES, energies, "birch_murnaghan")
    fitted = birch_murnaghan(VOLUMES, fit.v0_per_atom, fit.e0_per_atom, fit.b0, fit.b1)
    residual = energies - fitted
    assert fit.rms_residual_meV_per_atom == pytest.approx(
        np.sqrt(np.mean(residual**2)) / MEV, rel=1e-4
    )
    total = np.sum((energies - energies.mean()) ** 2)
    assert fit.r_squared == pytest.approx(1 - np.sum(residual**2) / total, abs=1e-6)
    steps = np.abs(np.diff(residual)) / MEV
    assert fit.step_misfit_meV_per_atom == pytest.approx(steps.max(), rel=1e-4)
    k = int(np.argmax(steps))
    assert fit.step_volumes_per_atom == pytest.approx(VOLUMES[k : k + 2])


def test_points_without_a_minimum_are_refused_whatever_pymatgen_returns(monkeypatch):
    """A pymatgen that returns a far-away minimum (V0 = 2.3e14 Å³/atom, B0 > 0, as newer
    versions do) or raises an unexpected exception type still gives a refusal with the reason."""
    volumes = np.linspace(10, 12, 6)
    energies = -0.1 * volumes

    class FarAway:
        v0, e0, b0, b1 = 2.3e14, -1.4e13, 0.5, 4.0

        def func(self, v):
            return np.zeros_like(v)

    monkeypatch.setattr("pymatgen.analysis.eos.EOS.fit", lambda self, v, e: FarAway())
    with pytest.raises(EosRefused, match="outside the sampled volumes") as refused:
        fit_eos(volumes, energies, "birch_murnaghan")
    assert refused.value.flag == "no_minimum" and "largest volume" in str(refused.value)

    def fails(self, v, e):
        raise RuntimeError("Optimal parameters not found")

    monkeypatch.setattr("pymatgen.analysis.eos.EOS.fit", fails)
    with pytest.raises(EosRefused, match="Optimal parameters") as refused:
        fit_eos(volumes, energies, "birch_murnaghan")
    assert refused.value.flag == "no_minimum"


def test_a_minimum_outside_the_points_is_refused():
    """Points all on the compressed side of the minimum: V0 would be an extrapolation."""
    volumes = V0 * np.linspace(0.80, 0.92, 6)
    with pytest.raises(EosRefused) as refused:
        fit_eos(volumes, birch_murnaghan(volumes), "birch_murnaghan")
    assert refused.value.flag == "no_minimum"


def test_a_jump_at_a_cutoff_crossing_is_flagged():
    """+20 meV/atom on the points beyond a crossing: flagged jump_at_cutoff where the crossing
    is known, energy_jump where it is not; the crossing alone flags nothing."""
    k = 4
    energies = birch_murnaghan(VOLUMES)
    jumped = energies + np.where(np.arange(VOLUMES.size) > k, 20 * MEV, 0.0)
    fit = fit_eos(VOLUMES, jumped, "birch_murnaghan", [crossing_between(k)])
    assert "jump_at_cutoff" in fit.flags and "energy_jump" not in fit.flags
    reason = fit.flag_reasons[fit.flags.index("jump_at_cutoff")]
    assert "5 Å bond cutoff" in reason and f"{VOLUMES[k]:.3f}" in reason
    assert "poor_fit" in fit.flags  # 20 meV/atom cannot be fitted smoothly

    unexplained = fit_eos(VOLUMES, jumped, "birch_murnaghan")
    assert "energy_jump" in unexplained.flags and "jump_at_cutoff" not in unexplained.flags

    smooth = fit_eos(VOLUMES, energies, "birch_murnaghan", [crossing_between(k)])
    assert smooth.flags == []


def test_noise_beyond_the_limits_is_a_poor_fit():
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 1, VOLUMES.size)
    noisy = fit_eos(VOLUMES, birch_murnaghan(VOLUMES) + 5 * MEV * noise, "birch_murnaghan")
    assert "poor_fit" in noisy.flags
    assert noisy.rms_residual_meV_per_atom > eos_verdict.MAX_RMS_RESIDUAL_MEV
    assert noisy.r_squared < eos_verdict.MIN_R_SQUARED
    quiet = fit_eos(VOLUMES, birch_murnaghan(VOLUMES) + 0.01 * MEV * noise, "birch_murnaghan")
    assert quiet.flags == []


@pytest.mark.parametrize(
    ("parameters", "flag"),
    [
        (dict(b0_gpa=2 * eos_verdict.B0_RANGE_GPA[1]), "b0_implausible"),
        (dict(b0_gpa=0.5 * eos_verdict.B0_RANGE_GPA[0], v0=40.0), "b0_implausible"),
        (dict(b1=1.5 * eos_verdict.B1_RANGE[1]), "b1_implausible"),
        (dict(b1=0.5 * eos_verdict.B1_RANGE[0]), "b1_implausible"),
    ],
)
def test_implausible_moduli_are_flagged(parameters, flag):
    volumes = parameters.get("v0", V0) * np.linspace(0.94, 1.06, 7)
    fit = fit_eos(volumes, birch_murnaghan(volumes, **parameters), "birch_murnaghan")
    assert flag in fit.flags
    assert [f for f in fit.flags if f != flag] == []  # the points themselves are fine


def test_e0_below_the_lowest_point_is_flagged():
    """The point at V0 raised by 0.6 meV/atom: the curve passes below it, further than its
    descent to V0 and the fit noise allow."""
    volumes = V0 * np.linspace(0.94, 1.06, 9)
    energies = birch_murnaghan(volumes)
    energies[4] += 0.6 * MEV
    fit = fit_eos(volumes, energies, "birch_murnaghan")
    assert fit.e0_per_atom < energies.min()
    assert "e0_below_points" in fit.flags
    assert "poor_fit" not in fit.flags and "energy_jump" not in fit.flags


def test_bad_points_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="at least 4"):
        fit_eos([10, 11, 12], [1, 0, 1], "birch_murnaghan")
    with pytest.raises(ValueError, match="finite"):
        fit_eos([10, 11, 12, 13], [1, 0, float("nan"), 1], "birch_murnaghan")
    with pytest.raises(ValueError, match="repeat"):
        fit_eos([10, 11, 11, 13], [1, 0, 0, 1], "birch_murnaghan")


def scaled(atoms, factor):
    copy = atoms.copy()
    copy.set_cell(atoms.cell * factor, scale_atoms=True)
    return copy


def test_the_third_shell_of_fcc_al_crossing_5_angstrom_is_found():
    """fcc's third shell (24 neighbours) lies at a·√(3/2): 4.960 Å at a = 4.05 Å, past 5 Å at a
    linear strain of 5/4.960 − 1 = +0.8 %; nothing crosses 3.5 Å (shells at 2.86 and 4.05 Å)."""
    al = bulk("Al", "fcc", a=4.05)
    cells = [scaled(al, f) for f in (0.99, 1.0, 1.01, 1.02)]
    (crossing,) = cutoff_crossings(cells)
    assert crossing.cutoff == 5.0 and crossing.kind == "bond"
    assert crossing.volumes_per_atom == pytest.approx(
        [cells[1].get_volume(), cells[2].get_volume()]
    )
    assert crossing.n_pairs == 12  # 24 bonds i→j of the one atom, each pair counted once
    third = 4.05 * np.sqrt(1.5)
    assert crossing.example == f"Al–Al {third:.3f} → {third * 1.01:.3f} Å"


def test_an_atom_wrapped_across_the_cell_is_no_crossing():
    """The same pairs, one atom's fractional coordinate written as 0.999 in one cell and −0.001
    (wrapped) in the next: only real distance changes count."""
    nacl = bulk("NaCl", "rocksalt", a=5.2)  # shells at 2.6, 3.68, 4.50, 5.2 Å: none near a cutoff
    nacl.positions[1] += [0.01, 0, 0]
    first, second = nacl.copy(), scaled(nacl, 1.001)
    frac = second.get_scaled_positions(wrap=False)
    frac[0] -= [1, 0, 0]
    second.set_scaled_positions(frac)
    assert cutoff_crossings([first, second]) == []


def graphite() -> Atoms:
    a, c = 2.46, 6.70
    cell = [[a, 0, 0], [-a / 2, a * np.sqrt(3) / 2, 0], [0, 0, c]]
    frac = [[0, 0, 0.25], [0, 0, 0.75], [1 / 3, 2 / 3, 0.25], [2 / 3, 1 / 3, 0.75]]
    return Atoms("C4", scaled_positions=frac, cell=cell, pbc=True)


@pytest.mark.parametrize(
    "atoms",
    [
        bulk("Al"),
        bulk("NaCl", "rocksalt", a=5.64),
        bulk("Fe", cubic=True).repeat((2, 1, 1)),
        graphite(),
        bulk("Cs", "bcc", a=5.6),
    ],
    ids=["Al", "NaCl", "Fe-2x1x1", "graphite", "Cs-compressed"],
)
def test_bulk_crystals_pass(atoms):
    check_bulk(atoms)


def test_a_slab_with_vacuum_is_refused_with_the_gap():
    vacuum = 50.0
    slab = fcc111("Al", (2, 2, 4), vacuum=vacuum)  # vacuum on both sides: a 100 Å gap
    slab.pbc = True  # as read from a CIF
    with pytest.raises(ValueError, match=rf"empty gap {2 * vacuum:.1f} Å") as refused:
        check_bulk(slab, "slab.cif")
    assert "slab.cif" in str(refused.value) and f"{MAX_VACUUM_GAP:g} Å" in str(refused.value)


def test_molecules_and_isolated_atoms_are_refused():
    with pytest.raises(ValueError, match="periodic in all three directions"):
        check_bulk(molecule("H2O"))
    with pytest.raises(ValueError, match="periodic along ab"):
        check_bulk(fcc111("Al", (2, 2, 4), vacuum=5.0))
    boxed = molecule("H2O")
    boxed.center(vacuum=4.0)
    boxed.pbc = True
    with pytest.raises(ValueError, match="empty gap"):
        check_bulk(boxed)
    with pytest.raises(ValueError, match="no neighbour within the 5 Å"):
        check_bulk(bulk("Cs", "bcc", a=6.05))  # nearest neighbours at 5.24 Å
    with pytest.raises(ValueError, match="no volume"):
        check_bulk(Atoms("Al", cell=[[3, 0, 0], [0, 3, 0], [3, 3, 0]], pbc=True))
