"""How much the cell chosen for the same crystal moves GPTFF formation energies.

GPTFF's energy per atom depends on the cell (its readout acts on the sum of atom features). For
a few binary compounds and their elements, each structure is relaxed in its primitive cell
(FIRE with the cell, fmax 0.02 eV/Å), then its energy is taken (a) in that cell and (b) as a
supercell of at least 64 atoms; the formation energies (eV/atom) from (a) and (b) are compared.
The screening flow's default cell policy (``min_atoms=64``) comes from these numbers.

    python benchmarks/cell_policy.py [--model gptff-v2] [--min-atoms 64]
"""

from __future__ import annotations

import argparse

import torch
from ase.build import bulk
from pymatgen.core import Composition

from gptff_core import GPTFFCalculator
from gptff_core.relax import relax
from gptff_flows.analysis.energetics import (
    elemental_reference,
    formation_energy_per_atom,
    supercell,
)

COMPOUNDS = {
    "NaCl": bulk("NaCl", "rocksalt", a=5.64),
    "LiCl": bulk("LiCl", "rocksalt", a=5.13),
    "MgO": bulk("MgO", "rocksalt", a=4.21),
    "CuAu (B2)": bulk("CuAu", "cesiumchloride", a=3.2),
    "GaAs": bulk("GaAs", "zincblende", a=5.65),
}


def energy(calculator, atoms) -> float:
    atoms = atoms.copy()
    atoms.calc = calculator
    return atoms.get_potential_energy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gptff-v2")
    parser.add_argument("--min-atoms", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(2)
    calculator = GPTFFCalculator(args.model)
    relaxed = {}

    def relaxed_structure(name, atoms):
        if name not in relaxed:
            relaxed[name] = relax(atoms, calculator, fmax=0.02, steps=300, relax_cell=True).atoms
        return relaxed[name]

    print(f"{args.model}; formation energies in eV/atom; supercells of ≥ {args.min_atoms} atoms\n")
    print("| compound | primitive cells | supercells | change (meV/atom) |")
    print("|---|---|---|---|")
    for name, atoms in COMPOUNDS.items():
        composition = Composition(atoms.get_chemical_formula())
        potentials = {"primitive": {}, "supercell": {}}
        for element in composition.elements:
            reference, _ = elemental_reference(element.symbol)
            ref = relaxed_structure(element.symbol, reference)
            potentials["primitive"][element.symbol] = energy(calculator, ref) / len(ref)
            big = supercell(ref, args.min_atoms)
            potentials["supercell"][element.symbol] = energy(calculator, big) / len(big)
        compound = relaxed_structure(name, atoms)
        big = supercell(compound, args.min_atoms)
        primitive = formation_energy_per_atom(
            composition,
            energy(calculator, compound) / len(compound) * composition.num_atoms,
            potentials["primitive"],
        )
        large = formation_energy_per_atom(
            composition,
            energy(calculator, big) / len(big) * composition.num_atoms,
            potentials["supercell"],
        )
        print(
            f"| {name} | {primitive:.4f} | {large:.4f} | {1000 * (large - primitive):+.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
