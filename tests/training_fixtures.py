"""Helpers (no tests here) for the training tests: writers of small labelled files, i.e. VASP
OUTCAR and vasprun.xml snippets (hand-written, only the parts ASE reads) and the published
trainer's CSV, and EMT-labelled structures. Values are in the files' own units (VASP: eV, Å,
eV/Å, kBar pressure-positive)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT

from gptff_core.model import GPTFFConfig

TINY = GPTFFConfig(
    atom_feature_len=8,
    bond_feature_len=8,
    n_layers=1,
    conv_hidden_len=8,
    readout_hidden_len=8,
    transformer=True,
    n_heads=2,
    transformer_ff_len=8,
)
"""A small network with every kind of layer (transformer and its dropout included)."""


def outcar_text(species: list[tuple[str, int]], steps: list[dict]) -> str:
    """An OUTCAR with one ionic step per dict: ``cell`` (Å), ``positions`` (Å, Cartesian),
    ``forces`` (eV/Å), ``stress_kb`` (xx yy zz xy yz zx, kBar, pressure positive), ``free``
    (TOTEN, eV) and ``zero`` (energy(sigma->0), eV)."""
    lines = [f"   POTCAR:    PAW_PBE {symbol} 08Apr2002\n" for symbol, _ in species] * 2
    lines.append("   ions per type =  " + "  ".join(str(n) for _, n in species) + "\n")
    for k, step in enumerate(steps):
        lines.append(f"{'-' * 39} Iteration {k + 1}(   1)  {'-' * 39}\n")
        lines.append("  in kB  " + " ".join(f"{v:11.5f}" for v in step["stress_kb"]) + "\n")
        lines.append("      direct lattice vectors                 reciprocal lattice vectors\n")
        lines += ["  " + " ".join(f"{v:12.9f}" for v in row) + "  0 0 0\n" for row in step["cell"]]
        lines.append(" POSITION                                       TOTAL-FORCE (eV/Angst)\n")
        lines.append(" " + "-" * 83 + "\n")
        for p, f in zip(step["positions"], step["forces"], strict=True):
            lines.append(
                "  "
                + " ".join(f"{v:12.5f}" for v in p)
                + " "
                + " ".join(f"{v:13.6f}" for v in f)
                + "\n"
            )
        lines.append(" " + "-" * 83 + "\n")
        lines.append("  FREE ENERGIE OF THE ION-ELECTRON SYSTEM (eV)\n")
        lines.append("  " + "-" * 51 + "\n")
        lines.append(f"  free  energy   TOTEN  =       {step['free']:.8f} eV\n\n")
        lines.append(
            f"  energy  without entropy=      {step['zero']:.8f}  "
            f"energy(sigma->0) =      {step['zero']:.8f}\n"
        )
    return "".join(lines)


def vasprun_text(symbols: list[str], steps: list[dict]) -> str:
    """A vasprun.xml with one ``<calculation>`` per dict: ``cell`` (Å), ``fractional``
    positions, ``forces`` (eV/Å), ``stress_kb`` (3×3, kBar, pressure positive), ``free``
    (e_fr_energy, eV) and ``zero`` (e_0_energy, eV)."""

    def rows(name: str, values) -> str:
        body = "".join(f"<v>{' '.join(f'{x:.10f}' for x in row)}</v>" for row in values)
        return f'<varray name="{name}">{body}</varray>'

    def structure(step: dict, name: str = "") -> str:
        label = f' name="{name}"' if name else ""
        return (
            f"<structure{label}><crystal>{rows('basis', step['cell'])}</crystal>"
            f"{rows('positions', step['fractional'])}</structure>"
        )

    atoms = "".join(f"<rc><c>{s}</c><c>1</c></rc>" for s in symbols)
    parts = [
        '<?xml version="1.0" encoding="ISO-8859-1"?>\n<modeling>',
        '<kpoints><varray name="kpointlist"><v>0 0 0</v></varray>'
        '<varray name="weights"><v>1.0</v></varray></kpoints>',
        '<parameters><separator name="ionic"><i name="PSTRESS">0.0</i></separator></parameters>',
        f'<atominfo><array name="atoms"><set>{atoms}</set></array></atominfo>',
        structure(steps[0], "initialpos"),
    ]
    for step in steps:
        energies = (
            f'<i name="e_fr_energy">{step["free"]:.8f}</i>'
            f'<i name="e_0_energy">{step["zero"]:.8f}</i>'
        )
        parts.append(
            f"<calculation><scstep><energy>{energies}</energy></scstep>{structure(step)}"
            f"{rows('forces', step['forces'])}{rows('stress', step['stress_kb'])}"
            f"<energy>{energies}</energy></calculation>"
        )
    parts.append("</modeling>\n")
    return "\n".join(parts)


def write_published_csv(path: Path, rows: list[dict]) -> None:
    """The published trainer's CSV: ``structure`` a pymatgen Structure (written as its dict),
    ``energy`` eV, ``forces`` eV/Å, ``stress`` kBar (VASP sign); JSON in the cells."""
    columns = ["struct_id", "energy", "forces", "stress", "structure", "fold", "ref_energy"]
    with Path(path).open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            cells = {k: v for k, v in row.items() if k in columns}
            for key in ("forces", "stress"):
                if cells.get(key) is not None:
                    cells[key] = json.dumps(np.asarray(cells[key]).tolist())
            cells["structure"] = json.dumps(row["structure"].as_dict())
            writer.writerow(cells)


def emt_configurations(
    count: int, seed: int, gold_fraction: float = 0.3, rattle: float = 0.12, strain: float = 0.04
) -> list[Atoms]:
    """Rattled (Å, normal σ) and strained (uniform ±``strain``, symmetric) fcc Cu–Au cells of 4
    or 8 atoms labelled with ASE's EMT (energy eV, forces eV/Å, stress eV/Å³)."""
    rng = np.random.default_rng(seed)
    configurations = []
    for k in range(count):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
        if k % 3 == 0:
            atoms = atoms.repeat((2, 1, 1))
        symbols = ["Au" if rng.random() < gold_fraction else "Cu" for _ in atoms]
        atoms.set_chemical_symbols(symbols)
        deformation = np.eye(3) + rng.uniform(-strain, strain, (3, 3))
        swelling = 1.0 + 0.03 * symbols.count("Au") / len(symbols)  # Au is larger
        atoms.set_cell(
            atoms.cell.array @ ((deformation + deformation.T) / 2) * swelling, scale_atoms=True
        )
        atoms.positions += rng.normal(0.0, rattle, atoms.positions.shape)
        atoms.calc = EMT()
        atoms.get_potential_energy()
        atoms.get_stress()
        configurations.append(atoms)
    return configurations


def fit_tiny(out, frames, recipe, **kwargs):
    """A tiny network from scratch (seed 1) trained on ``frames`` = (train, valid) into ``out``;
    returns (trainer, result)."""
    from gptff_core.training import Trainer, new_network

    trainer = Trainer(new_network(TINY, seed=1), recipe, progress=False)
    return trainer, trainer.fit(*frames, out, **kwargs)
