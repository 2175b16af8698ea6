"""Which volume pre-scaling lets substituted candidates relax in the fewest steps.

Candidates come from substitutions into rocksalt NaCl, perovskite SrTiO₃ and fluorite CaF₂
(``gptff_flows.analysis.substitution.generate``); each is relaxed (positions and cell, batched FIRE,
fmax 0.05 eV/Å, at most 500 steps) from the prototype's lattice (``none``), from pymatgen's
ionic-radii scaling and from its data-mined bond-length prediction. Step counts do not depend
on the machine's load.

    python benchmarks/volume_scaling.py [--model gptff-v2]
"""

from __future__ import annotations

import argparse
import statistics
import warnings

import torch
from ase.build import bulk
from pymatgen.core import Lattice, Structure
from pymatgen.io.ase import AseAtomsAdaptor

from gptff_core.torchsim import GPTFFTorchSimModel, relax_batch
from gptff_flows.analysis.substitution import VOLUME_SCALINGS, generate

PROTOTYPES = {
    "rocksalt NaCl": AseAtomsAdaptor.get_structure(bulk("NaCl", "rocksalt", a=5.64, cubic=True)),
    "perovskite SrTiO3": Structure(
        Lattice.cubic(3.905), ["Sr", "Ti", "O", "O", "O"],
        [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]],
    ),
    "fluorite CaF2": AseAtomsAdaptor.get_structure(bulk("CaF2", "fluorite", a=5.46)),
}  # fmt: skip
SUBSTITUTIONS = {
    "Na": ["Li", "K", "Rb"], "Cl": ["F", "Br", "I"],
    "Sr": ["Ca", "Ba"], "Ti": ["Zr", "Hf", "Sn"],
    "Ca": ["Sr", "Ba", "Cd"], "F": ["Cl"],
}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gptff-v2")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(2)
    model = GPTFFTorchSimModel(args.model)
    print(f"{args.model}, float32; steps of batched FIRE with the cell, fmax 0.05 eV/Å\n")
    print("| volume scaling | candidates | median steps | mean steps | not converged in 500 |")
    print("|---|---|---|---|---|")
    for scaling in VOLUME_SCALINGS:
        candidates = generate(PROTOTYPES, SUBSTITUTIONS, volume_scaling=scaling).candidates
        results = relax_batch([c.structure for c in candidates], model, fmax=0.05, steps=500)
        steps = [r.n_steps for r in results]
        failed = sum(not r.converged for r in results)
        print(f"| {scaling} | {len(steps)} | {statistics.median(steps):.0f} | "
              f"{statistics.mean(steps):.1f} | {failed} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
