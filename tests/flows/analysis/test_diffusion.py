"""gptff_flows.analysis.diffusion on synthetic data: a Gaussian random walk of known D is
recovered within the reported error, a non-moving species is flagged, and a synthetic Arrhenius
series gives back its activation energy and σ(300 K). No network, a few seconds."""

import math

import numpy as np
import pytest

pytest.importorskip("pymatgen.analysis.diffusion")

from ase import units
from pymatgen.analysis.diffusion.analyzer import get_conversion_factor
from pymatgen.core import Lattice, Structure

from gptff_core.errors import GPTFFInputError
from gptff_flows.analysis.arrhenius import fit_arrhenius_temperatures
from gptff_flows.analysis.diffusion import (
    DiffusionResult,
    analyze_diffusion,
    unwrapped_displacements,
)
from gptff_flows.analysis.md_verdict import check_temperature
from gptff_flows.analysis.plotting import plot_arrhenius, plot_msd

A2_PER_FS_IN_CM2_PER_S = 10.0  # Å²/fs per cm²/s: 1 cm²/s = 1e16 Å² / 1e15 fs


def random_walk_cell(n_li=32, n_frame=32, box=10.0, seed=0):
    rng = np.random.default_rng(seed)
    frac = rng.random((n_li + n_frame, 3))
    species = ["Li"] * n_li + ["Cl"] * n_frame
    return Structure(Lattice.cubic(box), species, frac)


def random_walk(structure, diffusivity_cm2_s, interval_fs, n_frames, seed):
    """Wrapped fractional coordinates of a Gaussian walk of the Li atoms (framework fixed)."""
    rng = np.random.default_rng(seed)
    d = diffusivity_cm2_s * A2_PER_FS_IN_CM2_PER_S  # Å²/fs
    box = structure.lattice.a
    mobile = np.array([s.specie.symbol == "Li" for s in structure])
    steps = rng.normal(0.0, math.sqrt(2 * d * interval_fs), (n_frames - 1, len(structure), 3))
    steps[:, ~mobile] = 0.0
    cart = structure.cart_coords + np.concatenate([np.zeros((1, len(structure), 3)), steps]).cumsum(
        0
    )
    return (cart / box) % 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_walk_diffusivity_within_reported_error(seed):
    structure = random_walk_cell(seed=seed)
    true_d = 1e-5  # cm²/s
    interval = 20.0  # fs between frames
    frac = random_walk(structure, true_d, interval, n_frames=1001, seed=seed)  # 20 ps
    result = analyze_diffusion(structure, frac, "Li", 800.0, interval)
    assert result.smoothing == "max" and result.flags == []
    assert abs(result.diffusivity - true_d) <= 2 * result.diffusivity_error
    assert result.diffusivity_error < 0.25 * true_d  # informative, not a blanket error
    assert result.diffusivity_block_error is not None and len(result.block_diffusivities) == 5
    # Nernst–Einstein with pymatgen's factor (Li⁺: z = 1), mS/cm
    factor = get_conversion_factor(structure, "Li", 800.0)
    assert result.conductivity == pytest.approx(result.diffusivity * factor)
    assert result.charge == 1.0
    # MSD ≈ 6 D t
    slope = np.polyfit(result.msd_time_fs, result.msd, 1)[0] / 6 / A2_PER_FS_IN_CM2_PER_S
    assert slope == pytest.approx(true_d, rel=0.25)


def test_unwrapping_follows_atoms_across_the_boundary():
    lattice = np.diag([5.0, 5.0, 5.0])
    frac = np.array([[[0.95, 0.5, 0.5]], [[0.05, 0.5, 0.5]], [[0.15, 0.5, 0.5]]])
    disp = unwrapped_displacements(frac, lattice)
    assert disp[0, :, 0] == pytest.approx([0.0, 0.5, 1.0])


def test_vibrating_atoms_are_not_diffusive_and_short_runs_flagged():
    structure = random_walk_cell(seed=3)
    rng = np.random.default_rng(3)
    frames = 200
    frac = structure.frac_coords[None] + rng.normal(0, 0.01, (frames, len(structure), 3))
    result = analyze_diffusion(structure, frac % 1.0, "Li", 300.0, 2.0)  # 0.4 ps
    assert "not_diffusive" in result.flags
    assert "too_short" in result.flags and result.smoothing == "none"
    assert not result.diffusive


def test_bad_input_is_rejected():
    structure = random_walk_cell()
    frac = np.repeat(structure.frac_coords[None], 5, axis=0)
    with pytest.raises(GPTFFInputError, match="Na"):
        analyze_diffusion(structure, frac, "Na", 300.0, 2.0)
    with pytest.raises(GPTFFInputError, match="shape"):
        analyze_diffusion(structure, frac[:, :3], "Li", 300.0, 2.0)


def _synthetic(temperature, diffusivity, flags=()):
    return DiffusionResult(
        species="Li",
        charge=1.0,
        temperature=temperature,
        n_mobile=32,
        n_frames=100,
        frame_interval_fs=20.0,
        production_fs=2000.0,
        smoothing="max",
        diffusivity=diffusivity,
        diffusivity_error=0.05 * diffusivity,
        diffusivity_regression_error=0.05 * diffusivity,
        conductivity=0.0,
        conductivity_error=0.0,
        final_msd=20.0,
        max_framework_displacement=0.3,
        msd=[0.0, 20.0],
        msd_time_fs=[0.0, 2000.0],
        flags=list(flags),
    )


def test_synthetic_arrhenius_gives_back_the_activation_energy(tmp_path):
    true_ea, d0 = 0.35, 2e-3  # eV, cm²/s
    temps = np.array([500.0, 600.0, 700.0, 800.0, 900.0, 1000.0])
    rng = np.random.default_rng(0)
    values = d0 * np.exp(-true_ea / (units.kB * temps)) * np.exp(rng.normal(0, 0.05, temps.size))
    results = [_synthetic(t, d) for t, d in zip(temps, values, strict=True)]
    results.append(_synthetic(400.0, 1e-9, flags=["not_diffusive"]))
    results.append(_synthetic(1100.0, 1e-3, flags=["framework_mobile"]))  # melted
    structure = random_walk_cell()
    fit = fit_arrhenius_temperatures(results, structure)
    assert fit.excluded_temperatures == [400.0, 1100.0]
    assert abs(fit.activation_energy - true_ea) <= 2 * fit.activation_energy_error
    assert fit.activation_energy == pytest.approx(true_ea, abs=0.02)
    expected_d300 = d0 * math.exp(-true_ea / (units.kB * 300.0))
    expected_sigma = expected_d300 * get_conversion_factor(structure, "Li", 300.0)
    assert fit.conductivity_300K == pytest.approx(expected_sigma, rel=0.3)
    low, high = fit.conductivity_300K_range
    assert low < fit.conductivity_300K < high
    # exact data: exact Ea
    exact = [_synthetic(t, d0 * math.exp(-true_ea / (units.kB * t))) for t in temps]
    assert fit_arrhenius_temperatures(exact, structure).activation_energy == pytest.approx(true_ea)
    # plots
    assert plot_arrhenius(fit, results, tmp_path / "arrhenius.png").stat().st_size > 1000
    assert plot_msd(results, tmp_path / "msd.png").stat().st_size > 1000


def test_arrhenius_needs_two_diffusive_temperatures():
    fit = fit_arrhenius_temperatures([_synthetic(600.0, 1e-6)], random_walk_cell())
    assert fit.activation_energy is None
    assert fit.flags == ["fewer_than_two_usable_temperatures"]
    assert "1 usable temperature(s), 2 needed" in fit.reason


def canonical_temperatures(target, n_atoms, n_frames, seed, offset=0.0):
    """Kinetic temperatures (K) of independent canonical frames: 2K/(g kB) with K ~ Gamma(g/2),
    g = 3N − 3 degrees of freedom, shifted by ``offset`` K."""
    dof = 3 * n_atoms - 3
    rng = np.random.default_rng(seed)
    return target * rng.gamma(dof / 2, 2.0 / dof, n_frames) + offset


def test_temperature_check_tolerance_is_relative_plus_canonical_fluctuation():
    # 60 atoms, 12 ps, correlation 200 fs: n_eff = 30 independent samples
    check = check_temperature(600.0, [600.0], 60, 12_000.0, 200.0)
    sigma_mean = 600.0 * math.sqrt(2 / 177) / math.sqrt(30)
    assert check.n_effective == pytest.approx(30.0)
    assert check.expected_std_of_mean == pytest.approx(sigma_mean)
    assert check.tolerance == pytest.approx(0.05 * 600 + 3 * sigma_mean)
    # a run shorter than the correlation time counts as one sample
    assert check_temperature(600.0, [600.0], 60, 100.0, 200.0).n_effective == 1.0
    # one atom: at least one degree of freedom, no division by zero
    assert check_temperature(600.0, [600.0], 1, 100.0, 200.0).tolerance > 0


@pytest.mark.parametrize("seed", range(5))
def test_a_thermostatted_run_reaches_its_temperature(seed):
    """Canonical frames around the target are never flagged (3σ + 5 %)."""
    temps = canonical_temperatures(800.0, 60, 30, seed)  # 30 independent frames
    check = check_temperature(800.0, temps, 60, 12_000.0, 200.0)
    assert check.reached and check.reason is None
    assert check.mean == pytest.approx(temps.mean())


def test_the_issue_temperatures_are_flagged_and_left_out_of_the_fit():
    """Issue 13: Ea = 0.219 eV was reported from two temperatures whose mean T was 351 and
    472 K against targets of 600 and 800 K. Both are flagged, no Ea, and the reason says why."""
    for target, reached in ((600.0, 351.0), (800.0, 472.0)):
        temps = canonical_temperatures(reached, 60, 30, seed=1)
        check = check_temperature(target, temps, 60, 12_000.0, 200.0)
        assert not check.reached
        assert f"{target:g} K target" in check.reason
        assert abs(check.mean - target) > check.tolerance
    true_ea, d0 = 0.3, 1e-3
    results = [
        _synthetic(t, d0 * math.exp(-true_ea / (units.kB * t)), ["temperature_not_reached"])
        for t in (600.0, 800.0)
    ]
    fit = fit_arrhenius_temperatures(results, random_walk_cell())
    assert fit.activation_energy is None and fit.conductivity_300K is None
    assert fit.excluded_temperatures == [600.0, 800.0]
    assert fit.flags == ["fewer_than_two_usable_temperatures"]
    assert "600 K (temperature_not_reached)" in fit.reason
    # a third, reached temperature is not enough either; two reached ones give Ea exactly
    reached = [_synthetic(t, d0 * math.exp(-true_ea / (units.kB * t))) for t in (700.0, 900.0)]
    fit = fit_arrhenius_temperatures(results + reached, random_walk_cell())
    assert fit.temperatures == [700.0, 900.0]
    assert fit.activation_energy == pytest.approx(true_ea)
    assert "left out of the fit: 600 K (temperature_not_reached)" in fit.reason
