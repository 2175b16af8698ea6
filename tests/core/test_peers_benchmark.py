"""``benchmarks/peers.py --quick`` runs in CI with whatever peers are installed (GPTFF alone when
none): one row per installed model, numbers equal to direct calculations with the calculator,
and the elastic, phonon and cell-dependence routines checked on a model without cell dependence
(ASE's EMT)."""

import importlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.filters import FrechetCellFilter
from ase.optimize import FIRE

from gptff_core import GPTFFCalculator

pytest.importorskip("phonopy")  # the Γ phonons (the flows extra, installed by `make setup`)

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "peers.py"
PEERS = {"chgnet": "chgnet", "sevennet-0": "sevenn"}  # model label → import name
A_SI = 5.4310  # Å, the experimental lattice constant the script starts Si from (its JSON)


def run_script(tmp_path: Path, *extra: str) -> tuple[list[dict], str]:
    out = tmp_path / "peers.jsonl"
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--jsonl", str(out), *extra],
        capture_output=True, text=True, env=dict(os.environ), cwd=ROOT, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    return [json.loads(line) for line in out.read_text().splitlines()], run.stdout


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    return run_script(tmp_path_factory.mktemp("peers"))


@pytest.fixture(scope="module")
def peers():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        yield importlib.import_module("peers")
    finally:
        sys.path.remove(str(SCRIPT.parent))


def test_quick_run_has_every_installed_model_and_measurement(quick):
    records, table = quick
    installed = {label for label, module in PEERS.items() if importlib.util.find_spec(module)}
    assert {r["model"] for r in records} == {"gptff-v2"} | installed
    for model in {"gptff-v2"} | installed:
        kinds = {(r["kind"], r["crystal"]) for r in records if r["model"] == model}
        assert kinds == {("crystal", "Si"), ("crystal", "NaCl"), ("phonon", "Si"),
                         ("phonon", "NaCl"), ("nve", "Si")}  # fmt: skip
        rows = [line for line in table.splitlines() if line.startswith(f"| {model} |")]
        assert len(rows) == 1
        dv = [abs(r["dv_percent"]) for r in records if r["model"] == model and "dv_percent" in r]
        assert f"| {np.mean(dv):.2f} /" in rows[0]  # the MAE shown is the records'


def test_gptff_relaxed_volume_equals_a_direct_relaxation(quick):
    records, _ = quick
    (si,) = [r for r in records if r["model"] == "gptff-v2" and r["kind"] == "crystal"
             and r["crystal"] == "Si"]  # fmt: skip
    atoms = bulk("Si", "diamond", a=A_SI)
    atoms.calc = GPTFFCalculator("gptff-v2", dtype="float64")
    opt = FIRE(FrechetCellFilter(atoms), logfile=None)
    converged = opt.run(fmax=si["fmax"], steps=si["max_steps"])
    assert si["converged"] == converged and si["relax_steps"] == opt.nsteps
    assert si["v_per_atom"] == pytest.approx(atoms.get_volume() / 2, rel=1e-10)
    v_exp = A_SI**3 / 8
    assert si["dv_percent"] == pytest.approx(100 * (atoms.get_volume() / 2 / v_exp - 1))


def test_gptff_cell_energies_equal_direct_calls(quick):
    records, _ = quick
    (nacl,) = [r for r in records if r["model"] == "gptff-v2" and r["kind"] == "crystal"
               and r["crystal"] == "NaCl"]  # fmt: skip
    calc = GPTFFCalculator("gptff-v2", dtype="float64")
    cells = {"primitive": bulk("NaCl", "rocksalt", a=5.6402),
             "conventional": bulk("NaCl", "rocksalt", a=5.6402, cubic=True),
             "primitive_2x2x2": bulk("NaCl", "rocksalt", a=5.6402).repeat(2)}  # fmt: skip
    direct = {}
    for key, atoms in cells.items():
        atoms.calc = calc
        direct[key] = atoms.get_potential_energy() / len(atoms)
    assert nacl["e_per_atom_eV"] == pytest.approx(direct, rel=1e-12)
    spread = 1000 * (max(direct.values()) - min(direct.values()))
    assert nacl["e_cell_spread_meV"] == pytest.approx(spread, rel=1e-9, abs=1e-9)


def test_a_checkpoint_row_equals_the_network_it_holds(tmp_path):
    """``--checkpoint`` adds a row; given the published v2 file, it repeats gptff-v2's numbers."""
    path = Path(os.environ["GPTFF_MODEL_DIR"]) / "gptff_v2.pth"
    label = "fine-tuned (gptff_v2.pth)"
    records, table = run_script(tmp_path, "--checkpoint", str(path), "--crystals", "Si",
                                "--models", "gptff-v2", label, "--nve-steps", "2")  # fmt: skip
    by_model = {m: [r for r in records if r["model"] == m] for m in ("gptff-v2", label)}
    assert len(by_model[label]) == len(by_model["gptff-v2"]) == 3
    for ours, theirs in zip(by_model["gptff-v2"], by_model[label], strict=True):
        assert ours.keys() == theirs.keys()
        for key in ours.keys() - {"model"}:
            if isinstance(ours[key], str | bool | None):
                assert theirs[key] == ours[key], key
            else:
                assert theirs[key] == pytest.approx(ours[key], rel=1e-9, abs=1e-12), key
    assert f"| {label} |" in table


def test_elastic_and_eos_bulk_moduli_agree_for_a_smooth_potential(peers):
    """EMT Cu: (C11 + 2 C12)/3 from strains and B0 from the E(V) fit are two routes to the same
    number; EMT's own relaxed lattice constant is found by the script's relaxation."""
    calc = EMT()
    atoms = bulk("Cu", "fcc", a=3.615)
    atoms.calc = calc
    FIRE(FrechetCellFilter(atoms), logfile=None).run(fmax=1e-4, steps=200)
    a = (4 * atoms.get_volume()) ** (1 / 3)
    elastic = peers.elastic_constants("Cu", a, calc)
    eos = peers.eos_bulk_modulus("Cu", a, calc, np.linspace(0.97, 1.03, 7))
    assert eos["b_eos_GPa"] == pytest.approx(elastic["b_elastic_GPa"], rel=0.02)
    assert elastic["c11_GPa"] > elastic["c12_GPa"] > 0 and elastic["c44_GPa"] > 0


def test_gamma_phonons_agree_between_cells_without_cell_dependence(peers):
    """EMT diamond C: the 2- and 8-atom cells give the same Γ dynamical matrix (the script's
    folding is right), three zero acoustic modes, and no cell spread of E/atom."""
    calc = EMT()
    result = peers.gamma_phonons("C", 3.5668, calc)
    # finite differences: in the 8-atom cell a displaced atom moves without its images
    assert result["dynmat_change_percent"] < 0.01  # GPTFF v2's Si: tens of %
    eight = np.array(result["gamma_THz_8atom"])
    for frequency in result["gamma_THz_2atom"]:  # Γ of the primitive cell is Γ of the cube too
        assert np.abs(eight - frequency).min() < 1e-3
    assert np.sum(np.abs(result["gamma_THz_2atom"]) < 1e-3) == 3  # acoustic (translations)
    assert peers.cell_spread("C", calc)["e_cell_spread_meV"] < 1e-6
