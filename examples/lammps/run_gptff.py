"""Run a LAMMPS input with GPTFF as the force field (``fix external``; see docs/lammps.md).

    python run_gptff.py in.gptff --elements Si --steps 100 [--model gptff-v2] [--smooth]

The input sets the system up (units metal, box, atoms, masses, fixes, thermo) without a pair style
and without ``run``; this script attaches GPTFF, then runs ``--steps`` steps (or ``minimize`` with
``--minimize``) and prints the GPTFF energy of the last step.
"""

import argparse

from gptff_core.lammps import GPTFFLammps, import_lammps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", help="LAMMPS input that sets the system up")
    parser.add_argument("--elements", nargs="+", required=True, help="symbol of type 1, 2, ...")
    parser.add_argument("--steps", type=int, default=100, help="MD steps (timestep: the input's)")
    parser.add_argument("--minimize", action="store_true", help="minimise instead of MD")
    parser.add_argument("--model", default="gptff-v2", help="registry name or checkpoint path")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--smooth", action="store_true", help="C² envelopes at the cutoffs")
    parser.add_argument("--skin", type=float, default=1.0, help="Å, neighbour-list reuse skin")
    args = parser.parse_args()
    lmp = import_lammps().lammps(cmdargs=["-log", "log.gptff", "-nocite"])
    lmp.file(args.input)
    gptff = GPTFFLammps(
        lmp,
        args.elements,
        model=args.model,
        dtype=args.dtype,
        smooth=args.smooth or None,  # None: the checkpoint's own setting
        skin=args.skin,
    )
    if args.minimize:
        gptff.run("minimize 0.0 1.0e-3 200 1000")
    else:
        gptff.run(f"run {args.steps}")
    print(f"GPTFF energy of the last step: {gptff.energy:.6f} eV ({gptff.n_calls} force calls)")
    lmp.close()


if __name__ == "__main__":
    main()
