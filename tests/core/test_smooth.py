"""The smooth variant (``smooth=True``): C² envelopes at the 5 Å bond and 3.5 Å triplet cutoffs.

The published network's energy jumps by several meV/atom when a neighbour shell crosses a cutoff
(see ``shared/docs/gptff-architecture.md``); the smooth variant must remove the jump, must give
forces equal to −∂E/∂r, and must equal the published network when no bond lies in a window.
All checks run in float64; energies in eV, lengths in Å.
"""

import math

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule

from gptff_core.evaluate import evaluate
from gptff_core.graph import build_graph, find_bonds
from gptff_core.model import cutoff_envelope

VERSIONS = ["v1", "v2"]
BOND_CUTOFF, TRIPLET_CUTOFF, WINDOW = 5.0, 3.5, 0.5  # Å; WINDOW = the default of both envelopes
CROSSINGS = {  # lattice constant (Å) of conventional fcc Cu at which a shell crosses a cutoff
    "shell a crosses 3.5 Å": TRIPLET_CUTOFF,
    "shell a√2 crosses 5 Å": BOND_CUTOFF / math.sqrt(2.0),
}
SCAN_STEP = 1e-5  # Å
SCAN_POINTS_PER_SIDE = 3


def energies_per_atom(model, structures: list[Atoms]) -> np.ndarray:
    """E/atom (eV) of each structure, evaluated as one batch."""
    graph = build_graph(structures, dtype=torch.float64)
    energy = evaluate(model, graph, forces=False, stress=False).energy.numpy()
    return energy / np.array([len(atoms) for atoms in structures])


def crossing_scan(crossing: float) -> list[Atoms]:
    """Conventional fcc Cu at ``crossing + (k + ½)·SCAN_STEP``, k = −3 … 2: the crossing lies in
    the middle of the step between the third and fourth structures."""
    ks = np.arange(-SCAN_POINTS_PER_SIDE, SCAN_POINTS_PER_SIDE)
    return [bulk("Cu", "fcc", a=crossing + (k + 0.5) * SCAN_STEP, cubic=True) for k in ks]


def discontinuity(energy: np.ndarray) -> float:
    """Change of E across the middle step minus the mean of the two neighbouring steps (eV)."""
    steps = np.diff(energy)
    middle = len(steps) // 2
    return float(steps[middle] - 0.5 * (steps[middle - 1] + steps[middle + 1]))


@pytest.fixture(scope="module")
def scans() -> dict[str, list[Atoms]]:
    return {name: crossing_scan(a) for name, a in CROSSINGS.items()}


@pytest.mark.parametrize("version", VERSIONS)
def test_published_network_jumps_at_the_cutoffs(models, scans, version):
    model = models(f"gptff-{version}", "float64", smooth=False)
    for name, structures in scans.items():
        energy = energies_per_atom(model, structures)
        jump = discontinuity(energy)
        assert abs(jump) > 1e-3, f"{name}: jump {jump * 1e3:.3f} meV/atom"


@pytest.mark.parametrize("version", VERSIONS)
def test_smooth_network_is_continuous_at_the_cutoffs(models, scans, version):
    model = models(f"gptff-{version}", "float64", smooth=True)
    for name, structures in scans.items():
        jump = discontinuity(energies_per_atom(model, structures))
        assert abs(jump) < 1e-6, f"{name}: jump {jump * 1e3:.6f} meV/atom"


@pytest.mark.parametrize("window", [0.25, 0.5, 1.0])
@pytest.mark.parametrize("cutoff", [BOND_CUTOFF, TRIPLET_CUTOFF])
def test_envelope_is_c2_with_value_one_and_zero_at_the_window_ends(cutoff, window):
    inner, outer = cutoff - window, cutoff

    def f(r: float) -> float:
        return float(cutoff_envelope(torch.tensor([r], dtype=torch.float64), cutoff, window)[0])

    assert f(inner) == 1.0 and f(inner - 0.3) == 1.0
    assert f(outer) == 0.0 and f(outer + 0.3) == 0.0
    # C² at an end e with constant c outside: f(e ± δ) − c = O(δ³) on both sides (a non-zero first
    # or second derivative would give O(δ) or O(δ²)); the quintic smoothstep gives 10·(δ/w)³.
    for end, outside, into_window in [(inner, 1.0, +1.0), (outer, 0.0, -1.0)]:
        for delta in [1e-3, 1e-4]:
            assert f(end - into_window * delta) == outside
            ratio = abs(f(end + into_window * delta) - outside) / delta**3
            assert ratio == pytest.approx(10.0 / window**3, rel=1e-2)
    grid = torch.linspace(inner - 0.1, outer + 0.1, 2001, dtype=torch.float64)
    values = cutoff_envelope(grid, cutoff, window)
    assert torch.all(values[1:] <= values[:-1]) and values.min() >= 0.0 and values.max() <= 1.0


def bond_lengths(atoms: Atoms) -> np.ndarray:
    return find_bonds(atoms, BOND_CUTOFF)[3]


def copper_at_equilibrium() -> Atoms:
    """fcc Cu, a = 3.61 Å, conventional cell rattled by 0.01 Å: shells at 2.55, 3.61, 4.42 and
    5.10 Å, so no bond in [3.0, 3.5] nor in [4.5, 5.0]."""
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
    atoms.rattle(0.01, seed=1)
    return atoms


def methane() -> Atoms:
    """CH4 without a cell: all bonds below 2 Å."""
    return molecule("CH4")


@pytest.mark.parametrize("make", [copper_at_equilibrium, methane])
@pytest.mark.parametrize("version", VERSIONS)
def test_smooth_equals_published_when_no_bond_is_in_a_window(models, make, version):
    atoms = make()
    d = bond_lengths(atoms)
    assert not np.any((d >= TRIPLET_CUTOFF - WINDOW) & (d <= TRIPLET_CUTOFF))
    assert not np.any(d >= BOND_CUTOFF - WINDOW)
    graph = build_graph([atoms], dtype=torch.float64)
    plain = evaluate(models(f"gptff-{version}", "float64", smooth=False), graph)
    smooth = evaluate(models(f"gptff-{version}", "float64", smooth=True), graph)
    assert torch.equal(plain.energy, smooth.energy)
    assert torch.equal(plain.forces, smooth.forces)
    assert torch.equal(plain.stress, smooth.stress)


def copper_with_bonds_in_both_windows() -> Atoms:
    """fcc Cu, a = 3.4 Å, 2×1×1 conventional cells rattled by 0.05 Å: shells near 3.40 and
    4.81 Å. (In a single conventional cell every bond of these two shells joins an atom to its own
    image, so its length would not depend on the positions and the forces would not test the
    envelopes' gradients; here the envelope terms move the forces by up to ~0.015 eV/Å.)"""
    atoms = bulk("Cu", "fcc", a=3.4, cubic=True).repeat((2, 1, 1))
    atoms.rattle(0.05, seed=2)
    return atoms


FD_FORCE_COMPONENTS = [(0, 0), (0, 1), (0, 2), (5, 0), (5, 1), (5, 2)]  # (atom, axis)
FD_STRESS_COMPONENTS = [(0, 0), (1, 1), (0, 1), (1, 2)]  # (row, column) of the strain


@pytest.mark.parametrize("version", VERSIONS)
def test_smooth_forces_and_stress_match_finite_differences(models, version):
    model = models(f"gptff-{version}", "float64", smooth=True)
    atoms = copper_with_bonds_in_both_windows()
    d = bond_lengths(atoms)
    assert np.any((d > TRIPLET_CUTOFF - WINDOW) & (d < TRIPLET_CUTOFF))
    assert np.any(d > BOND_CUTOFF - WINDOW)
    result = evaluate(model, build_graph([atoms], dtype=torch.float64))

    h = 1e-4  # Å for positions, dimensionless for strain
    displaced = []
    for atom, axis in FD_FORCE_COMPONENTS:
        for sign in (1.0, -1.0):
            moved = atoms.copy()
            moved.positions[atom, axis] += sign * h
            displaced.append(moved)
    for row, col in FD_STRESS_COMPONENTS:
        for sign in (1.0, -1.0):
            deformation = np.eye(3)
            deformation[row, col] += sign * h
            moved = atoms.copy()
            moved.set_cell(atoms.cell.array @ deformation, scale_atoms=True)
            displaced.append(moved)
    energy = energies_per_atom(model, displaced) * len(atoms)
    central = (energy[0::2] - energy[1::2]) / (2 * h)
    n_forces = len(FD_FORCE_COMPONENTS)
    forces = result.forces.numpy()[tuple(np.transpose(FD_FORCE_COMPONENTS))]
    np.testing.assert_allclose(forces, -central[:n_forces], rtol=0, atol=1e-6)
    stress = result.stress[0].numpy()[tuple(np.transpose(FD_STRESS_COMPONENTS))]
    volume = atoms.get_volume()
    np.testing.assert_allclose(stress, central[n_forces:] / volume, rtol=0, atol=1e-7)
