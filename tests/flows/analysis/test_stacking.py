"""a-CNA classification (gptff_flows.analysis.stacking) and powder XRD
(gptff_flows.analysis.xrd) on crystals whose
answers are known by construction: perfect fcc/hcp/bcc, rattled and strained hcp, an fcc crystal
with one intrinsic stacking fault built layer by layer, and the (111) Bragg angle of fcc Ti."""

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from gptff_core.errors import GPTFFInputError
from gptff_flows.analysis.stacking import classify, fractions
from gptff_flows.analysis.xrd import WAVELENGTH, broadened_average, pattern, strongest_peak

TI_A, TI_C = 2.951, 4.686


def hcp_ti(repeat=(3, 2, 2)) -> Atoms:
    return bulk("Ti", "hcp", a=TI_A, c=TI_C, orthorhombic=True) * repeat


@pytest.mark.parametrize(
    ("atoms", "expected"),
    [
        (bulk("Cu", "fcc", a=3.615, cubic=True) * (3, 3, 3), "fcc"),
        (hcp_ti(), "hcp"),
        (bulk("Fe", "bcc", a=2.866, cubic=True) * (3, 3, 3), "bcc"),
        (bulk("Cu", "fcc", a=3.615), "fcc"),  # one-atom cell: every neighbour is an image
    ],
)
def test_perfect_crystals(atoms, expected):
    labels = classify(atoms)
    assert len(labels) == len(atoms)
    assert fractions(labels)[expected] == 1.0


@pytest.mark.parametrize("lattice", ["fcc", "hcp", "bcc"])
def test_rattled_crystals_are_still_classified(lattice):
    atoms = {
        "fcc": bulk("Cu", "fcc", a=3.615, cubic=True) * (3, 3, 3),
        "hcp": hcp_ti((4, 2, 3)),
        "bcc": bulk("Fe", "bcc", a=2.866, cubic=True) * (3, 3, 3),
    }[lattice]
    atoms.rattle(0.05, seed=3)
    assert fractions(classify(atoms))[lattice] == 1.0


def test_strained_hcp_is_hcp_thanks_to_the_adaptive_cutoff():
    atoms = hcp_ti()
    cell = atoms.cell.array.copy()
    cell[1] *= 1.06
    atoms.set_cell(cell, scale_atoms=True)
    assert fractions(classify(atoms))["hcp"] == 1.0


def fcc_111_stack(sequence: str, a: float = 3.615, n: int = 3) -> Atoms:
    """Close-packed layers in the order of ``sequence`` (letters A, B, C), n×n atoms each, layer
    spacing a/√3; periodic along the stacking direction (len(sequence) layers)."""
    d = a / np.sqrt(2)  # nearest-neighbour distance
    a1, a2 = np.array([d, 0, 0]), np.array([d / 2, d * np.sqrt(3) / 2, 0])
    shift = {"A": 0, "B": 1, "C": 2}
    spacing = a / np.sqrt(3)
    positions = [
        i * a1 + j * a2 + shift[s] * (a1 + a2) / 3 + [0, 0, k * spacing]
        for k, s in enumerate(sequence)
        for i in range(n)
        for j in range(n)
    ]
    cell = [n * a1, n * a2, [0, 0, len(sequence) * spacing]]
    return Atoms("Cu" * len(positions), positions=positions, cell=cell, pbc=True)


def test_fcc_stack_without_fault_is_fcc():
    assert fractions(classify(fcc_111_stack("ABC" * 4)))["fcc"] == 1.0


def test_intrinsic_stacking_fault_makes_exactly_two_hcp_layers():
    # ABCABCABCABC with layer 5 (C) removed: ABCAB|ABCABC, 11 layers, periodic (the last C is
    # followed by the first A, as in fcc). Layers 4 (B between A and A) and 5 (A between B and
    # B) have like layers on both sides → hcp; every other layer sits between two different
    # letters → fcc.
    sequence = "ABCAB" + "ABCABC"
    n = 3
    labels = classify(fcc_111_stack(sequence, n=n)).reshape(len(sequence), n * n)
    for k in range(len(sequence)):
        below, above = sequence[k - 1], sequence[(k + 1) % len(sequence)]
        expected = "hcp" if below == above else "fcc"
        assert set(labels[k]) == {expected}, (k, sequence)
    assert (labels == "hcp").all(axis=1).nonzero()[0].tolist() == [4, 5]


def test_fractions_have_all_keys_and_sum_to_one():
    result = fractions(np.array(["fcc", "hcp", "hcp", "other"]))
    assert result == {"fcc": 0.25, "hcp": 0.5, "bcc": 0.0, "other": 0.25}
    with pytest.raises(GPTFFInputError):
        fractions(np.array([]))


def test_non_periodic_input_is_refused():
    atoms = bulk("Cu", "fcc", a=3.615, cubic=True)
    atoms.pbc = False
    with pytest.raises(GPTFFInputError, match="periodic"):
        classify(atoms)


def test_xrd_fcc_ti_111_peak_at_the_bragg_angle():
    a = 4.1
    bragg = np.degrees(2 * np.arcsin(WAVELENGTH / (2 * a / np.sqrt(3))))  # d(111) = a/√3
    atoms = bulk("Ti", "fcc", a=a, cubic=True) * (2, 2, 2)
    two_theta, intensity = pattern(atoms, (30, 50))
    assert two_theta[np.argmax(intensity)] == pytest.approx(bragg, abs=0.01)
    grid, curve = broadened_average([atoms, atoms], (30, 50))
    assert curve.max() == pytest.approx(100)
    assert strongest_peak(grid, curve) == pytest.approx(bragg, abs=0.02)
    # (200) at 2·asin(λ/a) lies inside the range too, weaker
    assert two_theta.min() == pytest.approx(bragg, abs=0.01)
    assert np.degrees(2 * np.arcsin(WAVELENGTH / a)) == pytest.approx(two_theta.max(), abs=0.01)


def test_strongest_peak_none_without_a_maximum_in_the_window():
    grid = np.linspace(30, 50, 101)
    assert strongest_peak(grid, grid - 30) is None  # monotonic: no local maximum
    ripple = 100 * np.exp(-0.5 * ((grid - 45) / 0.2) ** 2) + 2 * np.exp(-0.5 * (grid - 38) ** 2)
    assert strongest_peak(grid, ripple) is None  # 2 % of the maximum: below min_height
    assert strongest_peak(grid, ripple, min_height=0.01) == pytest.approx(38.0)
