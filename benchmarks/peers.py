"""GPTFF beside its peers (CHGNet, SevenNet) on ten common cubic crystals: one markdown table.

Per model (GPTFF v2 published network, v2 smooth and v1 in float64; CHGNet 0.3.0 and SevenNet-0
as their wheels ship them, float32; a fine-tuned GPTFF checkpoint with ``--checkpoint``):

* **ΔV**: relaxed volume per atom (FIRE + FrechetCellFilter from the experimental cell,
  :func:`gptff_core.relax.relax`) against the experimental lattice constants of
  ``benchmarks/peers_crystals.json`` (room temperature; sources there), % and the MAE.
* **B**: bulk modulus from a Birch–Murnaghan fit of E(V) at ±6 % in volume around the relaxed
  cell (:func:`gptff_flows.analysis.eos_fit.fit_eos`, which refuses or flags jumps), and elastic
  (C11 + 2 C12)/3 from ±0.5 % uniaxial strains of the conventional cell; C44 with relaxed ions.
* **Γ phonons** of Si and NaCl (phonopy, 0.01 Å displacements; no LO–TO splitting) from the
  2-atom primitive cell and the 8-atom conventional cell: both give the Γ dynamical matrix, so
  any difference is the model's cell dependence (the change of that matrix is reported in %).
* **Cell dependence of E/atom** at the experimental lattice: primitive vs conventional vs 2×2×2
  primitive supercell, max − min in meV/atom.
* **NVE drift** on 64-atom Si (velocity Verlet, 1 fs, Maxwell–Boltzmann 600 K start):
  E_total(end) − E_total(0), meV/atom.

    python benchmarks/peers.py                    # every available model (minutes to an hour)
    python benchmarks/peers.py --quick            # Si and NaCl, few steps (CI, ~1 min)
    python benchmarks/peers.py --checkpoint ckpt.pth --jsonl out.jsonl

stdout: the markdown tables and the weak spots; ``--jsonl``: one JSON line per measurement.
Peers are optional (``pip install -e ".[peers]"``); missing ones are skipped with a note.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from ase import Atoms, units
from ase.build import bulk
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
from ase.md.verlet import VelocityVerlet

from gptff_core import GPTFFCalculator
from gptff_core.relax import relax
from gptff_flows.analysis.eos_fit import EosRefused, fit_eos
from gptff_flows.analysis.eos_geometry import cutoff_crossings

DATA = json.loads((Path(__file__).with_name("peers_crystals.json")).read_text())
QUICK_CRYSTALS = ["Si", "NaCl"]
FMAX = 0.002  # eV/Å, on the FrechetCellFilter's generalised forces
EOS_VOLUMES = np.linspace(0.94, 1.06, 7)  # volume factors around the relaxed cell
ELASTIC_STRAIN = 0.005
PHONON_DISPLACEMENT = 0.01  # Å
NVE_TIMESTEP = 1.0  # fs
NVE_TEMPERATURE = 600.0  # K, initial Maxwell–Boltzmann (≈ 300 K after equipartition)
CONVENTIONAL = np.array([[-1, 1, 1], [1, -1, 1], [1, 1, -1]])  # fcc primitive → cube
PEERS = {"chgnet": "chgnet", "sevennet-0": "sevenn"}  # model label → import name


def crystal(name: str, a: float, cubic: bool = False) -> Atoms:
    """The crystal ``name`` of ``DATA`` with conventional lattice constant ``a`` (Å)."""
    kind = DATA["crystals"][name]["structure"]
    return bulk(name, kind, a=a, cubic=cubic)


def experimental_volume(name: str) -> float:
    """Å³/atom of the experimental cell."""
    atoms = crystal(name, DATA["crystals"][name]["a"], cubic=True)
    return atoms.get_volume() / len(atoms)


def make_models(quick: bool, checkpoint: str | None, only: list[str] | None) -> dict:
    """{label: (factory of an ASE calculator, dtype)} for the models that can run here."""
    models = {"gptff-v2": (lambda: GPTFFCalculator("gptff-v2", dtype="float64"), "float64")}
    if not quick:
        models["gptff-v2 smooth"] = (
            lambda: GPTFFCalculator("gptff-v2", dtype="float64", smooth=True),
            "float64",
        )
        models["gptff-v1"] = (lambda: GPTFFCalculator("gptff-v1", dtype="float64"), "float64")
    if importlib.util.find_spec("chgnet") is not None:
        models["chgnet"] = (_chgnet, "float32")
    if importlib.util.find_spec("sevenn") is not None:
        models["sevennet-0"] = (_sevennet, "float32")
    if checkpoint:
        models[f"fine-tuned ({Path(checkpoint).name})"] = (
            lambda: GPTFFCalculator(checkpoint, dtype="float64"),
            "float64",
        )
    missing = [label for label, module in PEERS.items() if label not in models]
    if missing:
        print(
            f"not installed, skipped: {', '.join(missing)} (pip install -e '.[peers]')",
            file=sys.stderr,
        )
    return {k: v for k, v in models.items() if not only or k in only}


def _chgnet():
    from chgnet.model import CHGNet
    from chgnet.model.dynamics import CHGNetCalculator

    return CHGNetCalculator(CHGNet.load(verbose=False), use_device="cpu")


def _sevennet():
    from sevenn.calculator import SevenNetCalculator

    return SevenNetCalculator("7net-0", device="cpu")


def energy_per_atom(atoms: Atoms, calc) -> float:
    atoms = atoms.copy()
    atoms.calc = calc
    return float(atoms.get_potential_energy()) / len(atoms)


def stress_of(atoms: Atoms, calc) -> np.ndarray:
    """Voigt stress (GPa, ASE sign: positive = tensile)."""
    atoms = atoms.copy()
    atoms.calc = calc
    return np.asarray(atoms.get_stress()) / units.GPa


def relaxed_volume(name: str, calc, steps: int, cubic: bool = False) -> dict:
    """Relax the primitive (``cubic``: conventional) cell from the experimental one: V/atom (Å³)
    and its error (%); keys of the conventional cell end in ``_conv``."""
    start = crystal(name, DATA["crystals"][name]["a"], cubic=cubic)
    result = relax(start, calc, fmax=FMAX, steps=steps)
    volume = result.atoms.get_volume() / len(start)
    v_exp = experimental_volume(name)
    out = {
        "v_per_atom": volume,
        "converged": result.converged,
        "dv_percent": 100 * (volume / v_exp - 1),
        "relax_steps": result.n_steps,
    }
    if cubic:
        return {f"{k}_conv": v for k, v in out.items()}
    return out | {"v_exp_per_atom": v_exp, "fmax": FMAX, "max_steps": steps}


def eos_bulk_modulus(name: str, a: float, calc, factors: np.ndarray) -> dict:
    """Birch–Murnaghan B0 (GPa) of the primitive cell at volume factors around ``a``."""
    cells = [crystal(name, a * f ** (1 / 3)) for f in factors]
    volumes = [c.get_volume() / len(c) for c in cells]
    energies = [energy_per_atom(c, calc) for c in cells]
    try:
        fit = fit_eos(volumes, energies, "birch_murnaghan", cutoff_crossings(cells))
    except EosRefused as exc:
        return {"b_eos_GPa": None, "eos_flags": [exc.flag]}
    return {"b_eos_GPa": fit.b0, "eos_flags": fit.flags}


def elastic_constants(name: str, a: float, calc) -> dict:
    """C11, C12, C44 (GPa) by central differences of the stress; C44 with relaxed ions."""
    cube = crystal(name, a, cubic=True)
    eps = ELASTIC_STRAIN
    sig = {}
    for sign in (1, -1):
        for label, strain in (
            ("xx", np.diag([eps, 0, 0])),
            ("yz", np.array([[0, 0, 0], [0, 0, eps], [0, eps, 0]])),
        ):
            strained = cube.copy()
            strained.set_cell(cube.cell[:] @ (np.eye(3) + sign * strain), scale_atoms=True)
            if label == "yz":  # internal relaxation (Kleinman) at fixed cell
                strained = relax(
                    strained, calc, fmax=1e-3, steps=200, optimizer="BFGS", relax_cell=False
                ).atoms
            sig[label, sign] = stress_of(strained, calc)
    c11 = (sig["xx", 1][0] - sig["xx", -1][0]) / (2 * eps)
    c12 = (sig["xx", 1][1] - sig["xx", -1][1]) / (2 * eps)
    c44 = (sig["yz", 1][3] - sig["yz", -1][3]) / (2 * 2 * eps)  # engineering shear 2ε
    return {"c11_GPa": c11, "c12_GPa": c12, "c44_GPa": c44, "b_elastic_GPa": (c11 + 2 * c12) / 3}


def cell_spread(name: str, calc) -> dict:
    """E/atom (eV) of one crystal at the experimental lattice in three cells, and the spread."""
    a = DATA["crystals"][name]["a"]
    cells = {
        "primitive": crystal(name, a),
        "conventional": crystal(name, a, cubic=True),
        "primitive_2x2x2": crystal(name, a).repeat(2),
    }
    energies = {k: energy_per_atom(c, calc) for k, c in cells.items()}
    spread = 1000 * (max(energies.values()) - min(energies.values()))
    return {"e_per_atom_eV": energies, "e_cell_spread_meV": spread}


def gamma_phonons(name: str, a: float, calc) -> dict:
    """Γ frequencies (THz) from the primitive and the conventional cell, and the relative change
    (%) of the Γ dynamical matrix between them (0 for a model without cell dependence)."""
    from phonopy import Phonopy
    from phonopy.structure.atoms import PhonopyAtoms

    prim = crystal(name, a)
    unit = PhonopyAtoms(
        symbols=prim.get_chemical_symbols(),
        cell=prim.cell[:],
        scaled_positions=prim.get_scaled_positions(),
    )
    out, dyn = {}, {}
    for label, matrix in (("2", np.eye(3, dtype=int)), ("8", CONVENTIONAL)):
        phonon = Phonopy(unit, supercell_matrix=matrix, primitive_matrix=None)
        phonon.generate_displacements(distance=PHONON_DISPLACEMENT)
        forces = []
        for cell in phonon.supercells_with_displacements:
            atoms = Atoms(
                cell.symbols, cell=cell.cell, pbc=True, scaled_positions=cell.scaled_positions
            )
            atoms.calc = calc
            forces.append(np.array(atoms.get_forces(), dtype=float))
        phonon.forces = forces
        phonon.produce_force_constants()
        phonon.run_qpoints([[0, 0, 0]], with_dynamical_matrices=True)
        out[f"gamma_THz_{label}atom"] = sorted(float(f) for f in phonon.qpoints.frequencies[0])
        dyn[label] = phonon.qpoints.dynamical_matrices[0]
    change = np.linalg.norm(dyn["8"] - dyn["2"]) / np.linalg.norm(dyn["8"])
    exp = DATA["gamma_phonons_THz"].get(name, {}).get("value")
    return {
        **out,
        "gamma_top_THz_2atom": max(out["gamma_THz_2atom"]),
        "gamma_top_THz_8atom": max(out["gamma_THz_8atom"]),
        "dynmat_change_percent": 100 * float(change),
        "gamma_exp_THz": exp,
    }


def nve_drift(a: float, calc, steps: int) -> dict:
    """Total-energy change (meV/atom) of 64-atom Si in NVE after ``steps`` steps of 1 fs."""
    atoms = crystal("Si", a, cubic=True).repeat(2)
    atoms.calc = calc
    MaxwellBoltzmannDistribution(atoms, temperature_K=NVE_TEMPERATURE, rng=np.random.default_rng(0))
    Stationary(atoms)
    energies = [atoms.get_total_energy()]
    dyn = VelocityVerlet(atoms, timestep=NVE_TIMESTEP * units.fs)
    dyn.attach(lambda: energies.append(atoms.get_total_energy()), interval=1)
    dyn.run(steps)
    e = np.array(energies[1:]) / len(atoms)
    return {
        "n_atoms": len(atoms),
        "steps": steps,
        "timestep_fs": NVE_TIMESTEP,
        "nve_drift_meV_per_atom": 1000 * float(e[-1] - e[0]),
        "nve_max_dev_meV_per_atom": 1000 * float(np.abs(e - e[0]).max()),
        "final_temperature_K": float(atoms.get_temperature()),
    }


def measure_model(label: str, calc, crystals: list[str], quick: bool, nve_steps: int):
    """Every measurement of one model; yields JSON-ready records."""
    for name in crystals:
        rec = {"model": label, "kind": "crystal", "crystal": name}
        rec |= relaxed_volume(name, calc, steps=60 if quick else 400)
        rec |= relaxed_volume(name, calc, steps=60 if quick else 400, cubic=True)
        a = DATA["crystals"][name]["a"] * (rec["v_per_atom"] / rec["v_exp_per_atom"]) ** (1 / 3)
        rec["a_relaxed_A"] = a
        factors = np.linspace(0.94, 1.06, 5) if quick else EOS_VOLUMES
        rec |= eos_bulk_modulus(name, a, calc, factors)
        rec |= elastic_constants(name, a, calc)
        rec |= cell_spread(name, calc)
        yield rec
        if name in DATA["gamma_phonons_THz"]:
            yield {"model": label, "kind": "phonon", "crystal": name} | gamma_phonons(name, a, calc)
        if name == "Si":
            yield {"model": label, "kind": "nve", "crystal": "Si"} | nve_drift(a, calc, nve_steps)


def fmt(value, digits: int = 1, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def summary_table(records: list[dict], dtypes: dict) -> list[str]:
    """One row per model: the headline numbers."""
    head = (
        "| model | dtype | ΔV MAE % prim. / conv. cell | worst ΔV % (prim.) "
        "| Si B EOS / elastic GPa | Si C44 GPa | Si Γ-opt THz 2-at / 8-at "
        "| Si Γ dyn. matrix 2→8-at % | NaCl Γ-TO THz | max E/atom cell spread meV (crystal) "
        "| LiF | NVE ΔE meV/atom |"
    )
    lines = [head, "|" + "---|" * 12]
    for model, dtype in dtypes.items():
        mine = [r for r in records if r["model"] == model]
        cry = {r["crystal"]: r for r in mine if r["kind"] == "crystal"}
        pho = {r["crystal"]: r for r in mine if r["kind"] == "phonon"}
        nve = next((r for r in mine if r["kind"] == "nve"), {})
        dv = {k: r["dv_percent"] for k, r in cry.items()}
        mae_conv = np.mean([abs(r["dv_percent_conv"]) for r in cry.values()])
        worst = max(dv, key=lambda k: abs(dv[k]))
        spread = max(cry, key=lambda k: cry[k]["e_cell_spread_meV"])
        si, nacl, lif = cry.get("Si", {}), pho.get("NaCl", {}), cry.get("LiF")
        sip = pho.get("Si", {})
        lif_text = "—" if lif is None else _lif_verdict(lif)
        lines.append(
            f"| {model} | {dtype} | {np.mean(np.abs(list(dv.values()))):.2f} / {mae_conv:.2f} "
            f"| {dv[worst]:+.1f} ({worst}) | {fmt(si.get('b_eos_GPa'), 0)} / "
            f"{fmt(si.get('b_elastic_GPa'), 0)} | {fmt(si.get('c44_GPa'))} "
            f"| {fmt(sip.get('gamma_top_THz_2atom'))} / {fmt(sip.get('gamma_top_THz_8atom'))} "
            f"| {fmt(sip.get('dynmat_change_percent'), 0)} "
            f"| {fmt(nacl.get('gamma_top_THz_8atom'))} "
            f"| {cry[spread]['e_cell_spread_meV']:.1f} ({spread}) | {lif_text} "
            f"| {fmt(nve.get('nve_drift_meV_per_atom'), 3, True)} |"
        )
    return lines


def _lif_verdict(rec: dict) -> str:
    if not rec["converged"]:
        return f"relaxation not converged; EOS {', '.join(rec['eos_flags']) or 'ok'}"
    return f"ΔV {rec['dv_percent']:+.1f} %; EOS {', '.join(rec['eos_flags']) or 'ok'}"


def crystal_table(records: list[dict], models: list[str]) -> list[str]:
    """One row per crystal: ΔV % and B (EOS / elastic) per model."""
    head = (
        "| crystal | a exp Å | "
        + " | ".join(f"{m}: ΔV % prim./conv. · B EOS/elastic GPa" for m in models)
        + " |"
    )
    lines = [head, "|---|---|" + "---|" * len(models)]
    crystals = dict.fromkeys(r["crystal"] for r in records if r["kind"] == "crystal")
    for name in crystals:
        cells = []
        for m in models:
            r = next(
                (
                    r
                    for r in records
                    if r["model"] == m and r.get("crystal") == name and r["kind"] == "crystal"
                ),
                None,
            )
            if r is None:
                cells.append("—")
                continue
            mark = "" if r["converged"] and r["converged_conv"] else " (not converged)"
            flags = f" [{', '.join(r['eos_flags'])}]" if r["eos_flags"] else ""
            cells.append(
                f"{r['dv_percent']:+.1f}/{r['dv_percent_conv']:+.1f}{mark} · "
                f"{fmt(r['b_eos_GPa'], 0)} / "
                f"{fmt(r['b_elastic_GPa'], 0)}{flags}"
            )
        lines.append(f"| {name} | {DATA['crystals'][name]['a']:.4f} | " + " | ".join(cells) + " |")
    return lines


def weak_spots(records: list[dict], model: str = "gptff-v2") -> list[str]:
    """Plain sentences on the published network's measured weak spots."""
    mine = {(r["kind"], r["crystal"]): r for r in records if r["model"] == model}
    out = []
    if (si := mine.get(("phonon", "Si"))) and (el := mine.get(("crystal", "Si"))):
        ref = DATA["si_elastic_GPa"]
        out.append(
            f"Soft Si: Γ-optical {si['gamma_top_THz_2atom']:.1f} THz (2-atom cell) vs "
            f"{si['gamma_exp_THz']} THz measured; C44 {el['c44_GPa']:.1f} GPa vs "
            f"{ref['C44']} GPa, B {fmt(el['b_elastic_GPa'], 0)} vs "
            f"{(ref['C11'] + 2 * ref['C12']) / 3:.0f} GPa."
        )
        out.append(
            f"Cell dependence: Si's Γ dynamical matrix changes by "
            f"{si['dynmat_change_percent']:.0f} % between the 2- and 8-atom cells."
        )
    spreads = {r["crystal"]: r["e_cell_spread_meV"] for k, r in mine.items() if k[0] == "crystal"}
    if spreads:
        worst = max(spreads, key=spreads.get)
        out.append(
            f"Cell dependence: E/atom of the same crystal differs by up to "
            f"{spreads[worst]:.1f} meV/atom between cells ({worst})."
        )
    if lif := mine.get(("crystal", "LiF")):
        out.append(f"LiF: {_lif_verdict(lif)}.")
    if nve := mine.get(("nve", "Si")):
        ps = nve["steps"] * nve["timestep_fs"] / 1000
        out.append(
            f"NVE drift: 64-atom Si gains {nve['nve_drift_meV_per_atom']:+.3f} meV/atom "
            f"in {ps:g} ps."
        )
    return [f"* **{model}**: {line}" for line in out]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="Si and NaCl, few steps (CI)")
    parser.add_argument("--checkpoint", help="a fine-tuned GPTFF checkpoint to add as a row")
    parser.add_argument("--models", nargs="+", help="only these model labels")
    parser.add_argument("--crystals", nargs="+", choices=list(DATA["crystals"]))
    parser.add_argument("--nve-steps", type=int, help="NVE steps of 1 fs (default 1000; quick 5)")
    parser.add_argument("--jsonl", type=Path, help="write one JSON line per measurement here")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument(
        "--render",
        type=Path,
        nargs="+",
        help="only print the tables of these --jsonl files (runs nothing)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.render:
        records = [json.loads(line) for p in args.render for line in p.read_text().splitlines()]
        print_tables(records, {r["model"]: r["dtype"] for r in records})
        return 0
    crystals = args.crystals or (QUICK_CRYSTALS if args.quick else list(DATA["crystals"]))
    nve_steps = args.nve_steps or (5 if args.quick else 1000)
    models = make_models(args.quick, args.checkpoint, args.models)
    records = []
    warnings.filterwarnings("ignore")
    sink = args.jsonl.open("w") if args.jsonl else None  # a line per measurement, as it comes
    for label, (factory, dtype) in models.items():
        start = time.perf_counter()
        calc = factory()
        for rec in measure_model(label, calc, crystals, args.quick, nve_steps):
            records.append(rec | {"dtype": dtype})
            if sink:
                sink.write(json.dumps(records[-1], default=float) + "\n")
                sink.flush()
        print(f"{label}: {time.perf_counter() - start:.0f} s", file=sys.stderr)
    if sink:
        sink.close()
    print_tables(records, {label: dtype for label, (_, dtype) in models.items()})
    return 0


def print_tables(records: list[dict], dtypes: dict) -> None:
    """The summary table, the per-crystal table and the weak spots, on stdout."""
    print("\n".join(summary_table(records, dtypes)))
    print()
    print("\n".join(crystal_table(records, list(dtypes))))
    print()
    print("\n".join(weak_spots(records)))


if __name__ == "__main__":
    sys.exit(main())
