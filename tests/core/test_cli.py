"""The ``gptff`` command line (predict, relax, models) and the :func:`relax` library function."""

import json
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase import Atoms, units
from ase.build import bulk, molecule
from ase.optimize import FIRE

from gptff_core import GPTFFCalculator
from gptff_core import relax as relax_module
from gptff_core.cli import main
from gptff_core.errors import GPTFFInputError
from gptff_core.relax import RelaxInterrupted, relax

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "NaCl_rattled.cif"


@pytest.fixture(scope="module")
def calc64():
    return GPTFFCalculator(dtype="float64")


def run_json(capsys, *argv):
    code = main([*argv, "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def test_example_is_the_documented_structure():
    atoms = ase.io.read(EXAMPLE)
    assert atoms.get_chemical_formula() == "Cl4Na4"
    assert np.allclose(atoms.cell.lengths(), 5.80)
    assert np.allclose(atoms.cell.angles(), 90.0)


def test_predict_human_output(capsys):
    assert main(["predict", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert ase.io.read(EXAMPLE).get_chemical_formula() in out
    assert "eV" in out and "GPa" in out


def test_predict_json_matches_calculator(capsys, calc64):
    (row,) = run_json(capsys, "predict", str(EXAMPLE), "--dtype", "float64")
    atoms = ase.io.read(EXAMPLE)
    atoms.calc = calc64
    energy = atoms.get_potential_energy()
    assert row["file"] == str(EXAMPLE) and row["frame"] == 0 and row["n_atoms"] == 8
    assert row["energy_eV"] == pytest.approx(energy, abs=1e-6)
    assert row["energy_per_atom_eV"] == pytest.approx(energy / 8, abs=1e-6)
    forces = atoms.get_forces()
    np.testing.assert_allclose(row["forces_eV_per_A"], forces, atol=1e-6)
    assert row["max_force_eV_per_A"] == pytest.approx(np.linalg.norm(forces, axis=1).max())
    stress_gpa = atoms.get_stress(voigt=False) / units.GPa
    np.testing.assert_allclose(row["stress_GPa"], stress_gpa, atol=1e-6)
    assert np.trace(stress_gpa) > 0  # expanded cell: tensile, ASE sign


def test_predict_all_frames_of_extxyz(tmp_path, capsys):
    frames = [bulk("NaCl", "rocksalt", a=5.7, cubic=True) for _ in range(2)]
    frames[1].rattle(0.05, seed=1)
    path = tmp_path / "two.extxyz"
    ase.io.write(path, frames)
    rows = run_json(capsys, "predict", str(path), "--index", ":")
    assert [r["frame"] for r in rows] == [0, 1]
    assert rows[0]["energy_eV"] != rows[1]["energy_eV"]
    (last,) = run_json(capsys, "predict", str(path))  # default: last frame
    assert last["frame"] == 1


def test_predict_molecule_has_no_stress(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ase.io.write("h2o.xyz", molecule("H2O"))
    (row,) = run_json(capsys, "predict", "h2o.xyz")
    assert row["stress_GPa"] is None and row["formula"] == "H2O"
    assert main(["predict", "h2o.xyz"]) == 0
    assert "n/a" in capsys.readouterr().out


def test_relax_example(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    report = run_json(capsys, "relax", str(EXAMPLE), "--dtype", "float64")
    assert report["converged"] and report["n_steps"] > 0 and report["cell_relaxed"]
    assert report["final_energy_eV"] < report["initial_energy_eV"]
    assert report["final_max_force_eV_per_A"] < 0.05
    assert report["output"] == "NaCl_rattled_relaxed.cif"
    relaxed = ase.io.read(tmp_path / "NaCl_rattled_relaxed.cif")
    assert relaxed.cell.volume < 5.80**3
    relaxed.calc = GPTFFCalculator(dtype="float64")
    assert relaxed.get_potential_energy() == pytest.approx(report["final_energy_eV"], abs=1e-4)


def test_relax_human_output_and_trajectory(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["relax", str(EXAMPLE), "--optimizer", "BFGS", "--output", "out.extxyz"]
    assert main([*argv, "--trajectory", "run.traj", "--fix-cell"]) == 0
    out = capsys.readouterr().out
    assert "converged: yes" in out and "out.extxyz" in out and "eV/atom" in out
    steps = ase.io.read("run.traj", ":")
    assert len(steps) >= 2
    assert np.allclose(steps[-1].cell.array, ase.io.read(EXAMPLE).cell.array)  # --fix-cell
    final = ase.io.read("out.extxyz")
    assert final.get_potential_energy() == pytest.approx(steps[-1].get_potential_energy())


def test_relax_not_converged_exits_3_and_writes(tmp_path, capsys, monkeypatch):
    """Not converged has its own code (3, flagged), distinct from a usage error (2)."""
    monkeypatch.chdir(tmp_path)
    assert main(["relax", str(EXAMPLE), "--steps", "1", "--output", "one.vasp"]) == 3
    captured = capsys.readouterr()
    assert "converged: no" in captured.out and "not converged" in captured.err
    assert len(ase.io.read(tmp_path / "one.vasp")) == 8


def test_relax_interrupted_writes_current_structure(tmp_path, capsys, monkeypatch):
    class Interrupted(FIRE):
        def step(self, *args, **kwargs):
            if self.nsteps == 2:
                raise KeyboardInterrupt
            super().step(*args, **kwargs)

    monkeypatch.setitem(relax_module.OPTIMIZERS, "FIRE", Interrupted)
    monkeypatch.chdir(tmp_path)
    assert main(["relax", str(EXAMPLE), "--json"]) == 130
    assert "interrupted after 2 steps" in capsys.readouterr().err
    written = ase.io.read(tmp_path / "NaCl_rattled_relaxed.cif")
    assert not np.allclose(written.cell.lengths(), 5.80)  # the cell had moved


def test_missing_file(tmp_path, capsys):
    assert main(["predict", str(tmp_path / "nope.cif")]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("gptff: error:") and "nope.cif" in captured.err
    assert "Traceback" not in captured.err and captured.err.count("\n") == 1


@pytest.mark.parametrize("how", ["symbol", "number"])
def test_unknown_element(tmp_path, capsys, how):
    path = tmp_path / "bad.xyz"
    if how == "symbol":
        path.write_text("2\n\nX 0 0 0\nH 0 0 1.0\n")
    else:
        ase.io.write(path, Atoms(numbers=[0, 1], positions=[[0, 0, 0], [0, 0, 1.0]]))
    assert main(["relax" if how == "number" else "predict", str(path)]) == 1
    err = capsys.readouterr().err
    assert "gptff: error:" in err and "bad.xyz" in err and "atomic number" in err


def test_unreadable_file(tmp_path, capsys):
    path = tmp_path / "junk.cif"
    path.write_text("not a structure\n")
    assert main(["predict", str(path)]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_missing_checkpoint(capsys):
    assert main(["predict", str(EXAMPLE), "--model", "/nonexistent.pth"]) == 1
    err = capsys.readouterr().err
    assert "gptff: error:" in err and "/nonexistent.pth" in err


def test_models_json(capsys):
    rows = {row["name"]: row for row in run_json(capsys, "models")}
    assert {"gptff-v1", "gptff-v2"} <= set(rows)
    assert all(rows[name]["status"] == "ok" for name in ("gptff-v1", "gptff-v2"))
    assert main(["models", "--verify"]) == 0
    assert "gptff_v2.pth" in capsys.readouterr().out


def test_relax_library_moves_cell_toward_equilibrium(calc64):
    strained = bulk("NaCl", "rocksalt", a=5.95, cubic=True)
    strained.rattle(0.03, seed=3)
    result = relax(strained, calc64, fmax=0.02, steps=200)
    assert result.converged and result.cell_relaxed
    assert result.energy < result.initial_energy
    a = np.cbrt(result.atoms.cell.volume)
    assert 5.6 < a < 5.8  # started at 5.95 Å; GPTFF's rocksalt NaCl is about 5.71 Å
    assert np.allclose(strained.cell.lengths(), 5.95)  # the input is not modified
    assert result.atoms.get_potential_energy() == pytest.approx(result.energy)
    assert result.stress.shape == (3, 3) and result.max_force < 0.02


def test_relax_library_molecule_positions_only(calc64):
    result = relax(molecule("H2O"), calc64, optimizer="bfgs", progress=lambda *a: None)
    assert result.converged and not result.cell_relaxed and result.stress is None


def test_relax_library_interrupt_carries_atoms(calc64, monkeypatch):
    def stop(step, energy, force):
        if step == 1:
            raise KeyboardInterrupt

    with pytest.raises(RelaxInterrupted) as info:
        relax(bulk("NaCl", "rocksalt", a=5.9, cubic=True), calc64, progress=stop)
    assert info.value.n_steps == 1 and len(info.value.atoms) == 8


@pytest.mark.parametrize(
    "options",
    [{"fmax": 0}, {"fmax": float("nan")}, {"steps": -1}, {"steps": 2.5}, {"optimizer": "LBFGSX"}],
)
def test_relax_library_bad_options(options):
    with pytest.raises(GPTFFInputError):
        relax(molecule("H2O"), None, **options)


# ------------------------------------------------------------ exit codes and one-line errors
def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("gptff: error:") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


def test_usage_error_is_2_bad_input_is_1(tmp_path, capsys):
    assert main(["relax", str(EXAMPLE), "--no-such-option"]) == 2
    capsys.readouterr()
    assert main(["relax", str(tmp_path / "missing.cif")]) == 1
    one_line_error(capsys)


@pytest.fixture
def relax_must_not_run(monkeypatch):
    """Fail the test if a relaxation starts: the checks must come before the work."""

    def refuse(*args, **kwargs):
        raise AssertionError("the relaxation ran before the output was checked")

    monkeypatch.setattr(relax_module, "relax", refuse)


@pytest.mark.parametrize(
    "output, message",
    [("a_directory", "is a directory"), ("/proc/NaCl.cif", "cannot write in /proc")],
    ids=["existing-directory", "unwritable"],
)
def test_relax_output_is_checked_before_the_work(
    tmp_path, capsys, monkeypatch, relax_must_not_run, output, message
):
    """An unwritable --output (or an existing directory) used to fail after the whole
    relaxation, losing it."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_directory").mkdir()
    assert main(["relax", str(EXAMPLE), "--output", output]) == 1
    assert message in one_line_error(capsys)


def test_relax_store_is_checked_before_the_work(tmp_path, capsys, monkeypatch, relax_must_not_run):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "not_a_store").write_text("a file\n")
    assert main(["relax", str(EXAMPLE), "--store", "not_a_store"]) == 1
    assert "not_a_store" in one_line_error(capsys)


def test_relax_output_is_replaced_in_one_step(tmp_path, capsys, monkeypatch):
    """The structure is written next to its destination and moved onto it: no temporary file is
    left behind and the destination holds the complete relaxed structure."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out.cif").write_text("old\n")
    assert main(["relax", str(EXAMPLE), "--steps", "2", "--output", "out.cif"]) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.cif"]
    assert len(ase.io.read(tmp_path / "out.cif")) == 8


def test_dump_json_refuses_nan_and_names_where():
    from gptff_core.cli import dump_json
    from gptff_core.errors import ComputationError

    with pytest.raises(ComputationError, match=r"result\[1\]\.energy_eV is not finite"):
        dump_json([{"energy_eV": 1.0}, {"energy_eV": float("nan")}])


@pytest.mark.parametrize(
    "raised, code, message",
    [
        (MemoryError(), 5, "out of memory"),
        (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried 9 GB"), 5,
         "out of memory"),
        (OSError(28, "No space left on device"), 5, "out of disk space"),
        (KeyError("oops"), 4, "internal error"),
    ],
    ids=["MemoryError", "torch-cpu-oom", "disk-full", "bug"],
)  # fmt: skip
def test_failures_become_one_line_and_a_distinct_code(capsys, monkeypatch, raised, code, message):
    import importlib

    def fail(*args, **kwargs):
        raise raised

    monkeypatch.setattr(importlib.import_module("gptff_core.predict"), "predict", fail)
    assert main(["predict", str(EXAMPLE)]) == code
    assert message in one_line_error(capsys)
    assert main(["predict", str(EXAMPLE), "--debug"]) == code
    assert "Traceback" in capsys.readouterr().err
