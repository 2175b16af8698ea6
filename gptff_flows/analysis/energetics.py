"""Formation energies and energies above the convex hull from GPTFF energies, with pymatgen.

Energies are in eV (totals) and eV/atom (per atom). The hull is built from the elemental
references and the competing phases (never from the candidates, so candidates do not hide one
another); a candidate's energy above it may be negative, meaning it would lie below the known
hull.

**Cell policy.** The published network's energy per atom depends on the cell chosen for the same
crystal (its readout acts on the sum of atom features: fcc Cu, v1, primitive cell −4.225 eV/atom,
4×4×4 supercell −4.163). Comparing energies of different phases is only meaningful when every
cell is chosen the same way, so :func:`supercell` repeats each relaxed structure to at least
``min_atoms`` atoms before its final energy is taken; the policy is recorded in every document.
Measured with v2 (``python benchmarks/cell_policy.py``): formation energies from primitive cells
and from ≥ 64-atom supercells differ by −108 (NaCl), −185 (LiCl), −121 (MgO), −58 (B2 CuAu) and
−393 meV/atom (GaAs), while 72- and 250-atom supercells agree to 4 meV/atom (GaAs, NaCl):
hence the default of 64 atoms.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.build import bulk, molecule
from ase.data import atomic_numbers, covalent_radii, reference_states
from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
from pymatgen.core import Composition

from gptff_core.errors import GPTFFInputError

MOLECULE_BOX = 15.0
"""Å: edge of the cubic box around an elemental reference that is a molecule."""

DIATOMIC_FALLBACK = frozenset({"H", "N", "O", "F", "P", "S", "Cl", "Br", "I", "At"})
"""Elements whose reference is their diatomic molecule when ASE cannot build their crystal."""

NOBLE_GASES = frozenset({"He", "Ne", "Ar", "Kr", "Xe", "Rn"})


def elemental_reference(symbol: str) -> tuple[Atoms, str]:
    """``(structure, kind)``: the element's reference state as ASE knows it (``kind`` "crystal");
    for the molecular elements whose crystal ASE cannot build (H, N, O, F, P, S, halogens),
    their diatomic molecule in a :data:`MOLECULE_BOX` Å box (``kind`` "molecule"; Br, I and At,
    absent from ASE's molecules, as a dimer at twice the covalent radius); a noble gas as an
    atom in the box; any other element without an ASE crystal (Mn, Ga, B, Se, Te, Pu, …) as fcc
    at 2√2 covalent radii ("crystal"), whose relaxation is a local minimum, not necessarily the
    ground state: give such elements' true reference as a competing phase."""
    if symbol not in atomic_numbers:
        raise GPTFFInputError(f"{symbol!r} is not an element")
    state = reference_states[atomic_numbers[symbol]] or {}
    if state.get("symmetry") not in (None, "diatom", "atom"):
        try:
            return bulk(symbol), "crystal"
        except (ValueError, KeyError, RuntimeError, NotImplementedError):
            pass
    if symbol in DIATOMIC_FALLBACK or state.get("symmetry") == "diatom":
        try:
            atoms = molecule(f"{symbol}2")
        except KeyError:  # not in ASE's molecule set (Br, I, At): a dimer at 2 covalent radii
            bond = 2 * covalent_radii[atomic_numbers[symbol]]
            atoms = Atoms(f"{symbol}2", positions=[[0.0, 0.0, 0.0], [0.0, 0.0, bond]])
    elif state.get("symmetry") == "atom" or symbol in NOBLE_GASES:
        atoms = Atoms(symbol, positions=[[0.0, 0.0, 0.0]])
    else:  # no crystal ASE can build (Mn, Ga, B, Se, Pu, ...): fcc at 2√2 covalent radii
        lattice = 2 * math.sqrt(2) * covalent_radii[atomic_numbers[symbol]]
        return bulk(symbol, "fcc", a=lattice), "crystal"
    atoms.cell = [MOLECULE_BOX] * 3
    atoms.pbc = True
    atoms.center()
    return atoms, "molecule"


def supercell_repeats(cell: np.ndarray, n_atoms: int, min_atoms: int) -> tuple[int, int, int]:
    """Repeats of a cell (rows in Å) that reach ``min_atoms`` atoms by lengthening its shortest
    periodic direction each time, so the supercell stays as compact as possible."""
    if min_atoms <= n_atoms:
        return (1, 1, 1)
    lengths = np.linalg.norm(np.asarray(cell, dtype=float), axis=1)
    repeats = [1, 1, 1]
    while n_atoms * math.prod(repeats) < min_atoms:
        shortest = int(np.argmin([repeats[i] * lengths[i] for i in range(3)]))
        repeats[shortest] += 1
    return tuple(repeats)


def supercell(atoms: Atoms, min_atoms: int) -> Atoms:
    """``atoms`` repeated to at least ``min_atoms`` atoms (see :func:`supercell_repeats`);
    a structure that is not periodic in all three directions is returned as it is."""
    if not all(atoms.pbc):
        return atoms.copy()
    return atoms.repeat(supercell_repeats(atoms.cell.array, len(atoms), min_atoms))


@dataclass(frozen=True)
class Stability:
    """Energetics of one candidate.

    Attributes:
        formation_energy_per_atom: eV/atom against the elemental references.
        e_above_hull: eV/atom above the hull of references and competing phases (negative:
            below it).
        decomposition: reduced formula → fraction (of atoms) of the hull phases it would
            decompose into.
    """

    formation_energy_per_atom: float
    e_above_hull: float
    decomposition: dict[str, float]


def formation_energy_per_atom(
    composition: Composition, energy: float, potentials: Mapping[str, float]
) -> float:
    """``(E − Σ n_el μ_el) / N`` in eV/atom for a total energy ``energy`` (eV)."""
    missing = [e.symbol for e in composition.elements if e.symbol not in potentials]
    if missing:
        raise GPTFFInputError(
            f"{composition.reduced_formula}: no elemental reference for {missing}"
        )
    reference = sum(amount * potentials[e.symbol] for e, amount in composition.items())
    return (energy - reference) / composition.num_atoms


def stabilities(
    candidates: Sequence[tuple[Composition, float]],
    phases: Sequence[tuple[Composition, float]],
) -> list[Stability]:
    """Formation energy and energy above hull of each candidate ``(composition, total energy in
    eV)`` against ``phases``: elemental references and competing phases, as (composition,
    total energy in eV); every element of every candidate needs a reference among them."""
    entries = [PDEntry(composition, energy) for composition, energy in phases]
    elements = {e for composition, _ in candidates for e in composition.elements}
    missing = sorted(
        e.symbol for e in elements - {c.elements[0] for c, _ in phases if c.is_element}
    )
    if missing:
        raise GPTFFInputError(f"no elemental reference among the phases for {missing}")
    diagram = PhaseDiagram(entries)
    potentials = {el.symbol: entry.energy_per_atom for el, entry in diagram.el_refs.items()}
    result = []
    for composition, energy in candidates:
        entry = PDEntry(composition, energy)
        decomposition, e_hull = diagram.get_decomp_and_e_above_hull(entry, allow_negative=True)
        result.append(
            Stability(
                formation_energy_per_atom=formation_energy_per_atom(
                    composition, energy, potentials
                ),
                e_above_hull=float(e_hull),
                decomposition={
                    phase.composition.reduced_formula: float(fraction)
                    for phase, fraction in decomposition.items()
                },
            )
        )
    return result
