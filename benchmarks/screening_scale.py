"""Scale of a substitution screening campaign: ~1,000 candidates of 10–40 atoms.

Runs :class:`~gptff_flows.flows.screening.SubstitutionScreeningMaker` end to end (generation,
batched relaxations in chunks, final energies on ≥ 64-atom supercells, analysis, all stored in a
temporary embedded store) and reports the wall time and candidates per second. Then relaxes the
same initial candidates (or a random subset, ``--compare``) twice more, outside jobflow: batched
(:func:`gptff_core.torchsim.relax_batch`, chunks of ``--chunk-size``) and one at a time with ASE
(:func:`gptff_core.relax.relax`, FIRE + FrechetCellFilter, :class:`~gptff_core.GPTFFCalculator`),
same fmax and steps, and prints the speed-up of the batched relaxation. Prints markdown tables.

Prototypes (cells 10–32 atoms): perovskite SrTiO3 2×1×1 (10), fluorite CaF2 conventional (12),
spinel MgAl2O4 primitive (14), wurtzite ZnO 2×2×1 (16), zincblende ZnS 2×1×1 (16), rocksalt
NaCl 2×2×1 conventional (32).

    python benchmarks/screening_scale.py                      # ~1,000 candidates
    python benchmarks/screening_scale.py --n 200 --compare 100
"""

from __future__ import annotations

import argparse
import logging
import random
import statistics
import tempfile
import time
import warnings

import torch
from ase import Atoms
from ase.build import bulk
from ase.spacegroup import crystal
from pymatgen.io.ase import AseAtomsAdaptor

from gptff_flows.flows.screening import SubstitutionScreeningMaker
from gptff_flows.run import run_flow
from gptff_flows.stores import local_job_store

A2P = AseAtomsAdaptor.get_structure

SUBSTITUTIONS = {
    "Sr": ["Ca", "Ba", "Pb", "Cd", "Eu", "Yb", "Sn", "Mn"],  # perovskite A site
    "Ti": ["Zr", "Hf", "Sn", "Ge", "Mn", "V", "Mo", "Nb", "Ru"],  # perovskite B site
    "O": ["S", "Se", "Te"],  # perovskite, spinel, wurtzite anion
    "Mg": ["Zn", "Co", "Ni", "Fe", "Mn", "Cd", "Cu", "Be", "Ca", "Hg"],  # spinel tetrahedral
    "Al": ["Ga", "Cr", "Fe", "V", "Co", "Rh", "In", "Mn", "Ti", "Sc"],  # spinel octahedral
    "Zn": ["Cd", "Be", "Mg", "Mn", "Hg", "Co", "Fe", "Ni", "Cu", "Ca", "Sr", "Ba"],
    "S": ["Se", "Te", "O"],  # zincblende anion
    "Ca": ["Sr", "Ba", "Cd", "Pb", "Eu", "Yb", "Hg", "Sn", "Mn", "Mg", "Zn", "Co"],
    "F": ["Cl", "H", "Br"],  # fluorite anion
    "Na": ["Li", "K", "Rb", "Ag", "Cs", "Cu", "Tl", "In", "Au"],
    "Cl": ["Br", "I", "F", "H"],  # rocksalt anion
}
"""1,044 combinations over the six prototypes (with keep_original); 1,000 are sampled."""


def prototypes() -> dict:
    spinel = crystal(
        ["Mg", "Al", "O"],
        basis=[(0.125, 0.125, 0.125), (0.5, 0.5, 0.5), (0.2624, 0.2624, 0.2624)],
        spacegroup=227,
        cellpar=[8.08, 8.08, 8.08, 90, 90, 90],
        setting=2,  # origin choice 2: the (1/8, 1/8, 1/8) Mg site
        primitive_cell=True,
    )
    a = 3.905
    perovskite = Atoms(
        "SrTiO3",
        scaled_positions=[(0, 0, 0), (0.5, 0.5, 0.5), (0.5, 0.5, 0), (0.5, 0, 0.5), (0, 0.5, 0.5)],
        cell=[a, a, a],
        pbc=True,
    )
    return {
        "perovskite": A2P(perovskite.repeat((2, 1, 1))),
        "fluorite": A2P(bulk("CaF2", "fluorite", a=5.46, cubic=True)),
        "spinel": A2P(spinel),
        "wurtzite": A2P(bulk("ZnO", "wurtzite", a=3.25, c=5.21).repeat((2, 2, 1))),
        "zincblende": A2P(bulk("ZnS", "zincblende", a=5.41, cubic=True).repeat((2, 1, 1))),
        "rocksalt": A2P(bulk("NaCl", "rocksalt", a=5.64, cubic=True).repeat((2, 2, 1))),
    }


def table(rows: list[tuple], header: tuple) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="candidates (%(default)s)")
    parser.add_argument("--compare", type=int, help="candidates in the batched-vs-ASE comparison"
                        " (default: all)")  # fmt: skip
    parser.add_argument("--chunk-size", type=int, default=64)
    parser.add_argument("--fmax", type=float, default=0.05, help="eV/Å (%(default)s)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--min-atoms", type=int, default=64)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (%(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING)

    maker = SubstitutionScreeningMaker(
        name="screening benchmark",
        fmax=args.fmax,
        steps=args.steps,
        chunk_size=args.chunk_size,
        min_atoms=args.min_atoms,
        dtype=args.dtype,
        max_candidates=args.n,
        sample_seed=args.seed,
    )
    with tempfile.TemporaryDirectory(prefix="gptff-screening-bench-") as tmp:
        store = local_job_store(tmp)
        start = time.perf_counter()
        run_flow(maker.make(prototypes(), SUBSTITUTIONS), store)
        wall = time.perf_counter() - start
        store.connect()
        doc = store.query_one({"output.@class": "ScreeningCampaignDocument"}, load=True)["output"]
        docs = store.query({"output.@class": "ScreeningChunkDocument"}, properties=["output"])
        candidates = [c for d in docs for c in d["output"]["candidates"]]
    sizes = [c["nsites"] for c in candidates if c["role"] == "candidate"]
    print(f"{len(sizes)} candidates of {min(sizes)}–{max(sizes)} atoms (a sample of "
          f"{doc['generation']['n_generated']} generated from 6 prototypes)")  # fmt: skip
    counts, timing = doc["counts"], doc["timing"]
    steps = [
        c["n_steps"] for c in candidates if c["role"] == "candidate" and c["n_steps"] is not None
    ]
    print("\n## End to end (SubstitutionScreeningMaker, run_flow, embedded store)\n")
    print(table(
        [(counts["candidates"], counts["relaxed"], counts["not_converged"], counts["failed"],
          counts["references"], f"{wall:.1f}", f"{timing['generation']:.1f}",
          f"{timing['chunks']:.1f}", f"{timing['analysis']:.1f}",
          f"{counts['candidates'] / wall:.2f}", f"{statistics.median(steps):.0f}")],
        ("candidates", "relaxed", "not conv.", "failed", "references", "wall (s)",
         "generation (s)", "chunks (s)", "analysis (s)", "candidates/s", "median steps"),
    ))  # fmt: skip

    # batched vs one at a time, on the same initial structures
    from gptff_core import GPTFFCalculator
    from gptff_core.errors import GPTFFInputError
    from gptff_core.relax import RelaxResult, relax
    from gptff_core.torchsim import GPTFFTorchSimModel
    from gptff_flows.jobs.batch_relax import relax_group

    initial = [c["initial_structure"] for c in candidates if c["role"] == "candidate"
               and c["status"] != "failed"]  # fmt: skip
    from pymatgen.core import Structure

    initial = [Structure.from_dict(s) if isinstance(s, dict) else s for s in initial]
    if args.compare:
        initial = random.Random(args.seed).sample(initial, min(args.compare, len(initial)))
    model = GPTFFTorchSimModel("gptff-v2", dtype=args.dtype)
    start = time.perf_counter()
    batched = []
    for i in range(0, len(initial), args.chunk_size):  # as the campaign's chunks do it
        atoms = [AseAtomsAdaptor.get_atoms(s) for s in initial[i : i + args.chunk_size]]
        batched += relax_group(atoms, model, args.fmax, args.steps, True)[0]
    t_batched = time.perf_counter() - start
    calculator = GPTFFCalculator(model.model)
    start = time.perf_counter()
    single = []
    for structure in initial:
        try:
            single.append(relax(structure, calculator, fmax=args.fmax, steps=args.steps))
        except GPTFFInputError as error:  # a structure collapsing during its relaxation
            single.append(error)
    t_single = time.perf_counter() - start
    pairs = [(b, s) for b, s in zip(batched, single, strict=True) if isinstance(b, RelaxResult)
             and isinstance(s, RelaxResult)]  # fmt: skip
    batched = [b for b, _ in pairs]
    single = [s for _, s in pairs]
    agree = [abs(b.energy / len(b.atoms) - s.energy / len(s.atoms)) for b, s in pairs]
    print(f"\n## Relaxation only: {len(initial)} candidates ({len(pairs)} finished both ways), "
          f"fmax {args.fmax} eV/Å, {args.threads} thread(s), {args.dtype}\n")  # fmt: skip
    print(table(
        [(f"batched (TorchSim FIRE, chunks of {args.chunk_size})", f"{t_batched:.1f}",
          f"{len(initial) / t_batched:.2f}", sum(r.n_steps for r in batched),
          sum(r.converged for r in batched)),
         ("one at a time (ASE FIRE)", f"{t_single:.1f}", f"{len(initial) / t_single:.2f}",
          sum(r.n_steps for r in single), sum(r.converged for r in single))],
        ("relaxation", "time (s)", "candidates/s", "total steps", "converged"),
    ))  # fmt: skip
    print(
        f"\nspeed-up of batched over one at a time: {t_single / t_batched:.2f}×; "
        f"final energies agree to median {statistics.median(agree) * 1e3:.2f} meV/atom "
        f"(max {max(agree) * 1e3:.1f})"
    )


if __name__ == "__main__":
    main()
