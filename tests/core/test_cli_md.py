"""``gptff md`` (:mod:`gptff_core.cli.md`) and its verdict (:mod:`gptff_core.md`)."""

import json
from pathlib import Path
from types import SimpleNamespace

import ase.io
import numpy as np
import pytest
from ase.build import bulk
from ase.io import Trajectory

from gptff_core import GPTFFCalculator
from gptff_core.cli import main
from gptff_core.md import (
    JUMP_MEV_PER_ATOM,
    MAX_DRIFT_MEV_PER_ATOM_PS,
    STEP_KEY,
    MDSettings,
    conserved_energy_checks,
    md_verdict,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "NaCl_rattled.cif"


def run_md(capsys, *argv):
    """(exit code, parsed --json summary or None, stderr) of ``gptff md ... --json``."""
    code = main(["md", *argv, "--json"])
    captured = capsys.readouterr()
    return code, (json.loads(captured.out) if captured.out.strip() else None), captured.err


def frames_steps(path):
    frames = ase.io.read(path, ":")
    return frames, [frame.info[STEP_KEY] for frame in frames]


def test_nvt_writes_every_interval_and_the_last_step_then_resumes(capsys, tmp_path):
    traj = tmp_path / "nvt.traj"
    common = ["--temperature", "300", "--interval", "3", "--trajectory", str(traj), "--seed", "3"]
    code, summary, err = run_md(capsys, str(EXAMPLE), "--steps", "7", *common)
    assert code == 0, err
    frames, steps = frames_steps(traj)
    assert steps == [0, 3, 6, 7] and summary["frames_written"] == 4
    assert summary["flags"] == [] and summary["last_step"] == 7
    # the energies in the file are the calculator's for the positions in the file
    calc = GPTFFCalculator()
    for frame in (frames[0], frames[-1]):
        copy = frame.copy()
        copy.calc = calc
        assert frame.get_potential_energy() == pytest.approx(copy.get_potential_energy(), abs=1e-4)
    # step 0 starts exactly at the target temperature (momenta stored in the file)
    assert frames[0].get_temperature() == pytest.approx(300.0, rel=1e-9)

    code, summary, err = run_md(capsys, str(EXAMPLE), "--steps", "10", "--resume", *common)
    assert code == 0, err
    resumed, steps = frames_steps(traj)
    assert steps == [0, 3, 6, 7, 9, 10] and summary["first_step"] == 7
    np.testing.assert_allclose(resumed[3].positions, frames[3].positions)


SEED = "3"  # any seed passes (checked 1, 2, 3, 5, 7); fixed so the run is repeatable


def test_nve_float64_conserves_the_calculators_energy(capsys, tmp_path):
    traj = tmp_path / "nve.traj"
    argv = [str(EXAMPLE), "--ensemble", "nve", "--temperature", "300", "--steps", "20"]
    argv += ["--interval", "4", "--trajectory", str(traj), "--dtype", "float64", "--smooth"]
    code, summary, err = run_md(capsys, *argv, "--seed", SEED, "--timestep", "0.5")
    assert code == 0, err
    frames, steps = frames_steps(traj)
    assert steps == [0, 4, 8, 12, 16, 20]
    calc = GPTFFCalculator(dtype="float64", smooth=True)
    potential, total = [], []
    for frame in frames:
        copy = frame.copy()
        copy.calc = calc
        potential.append(copy.get_potential_energy())  # independent of what the run stored
        assert frame.get_potential_energy() == pytest.approx(potential[-1], abs=1e-9)
        total.append(potential[-1] + frame.get_kinetic_energy())
    n = len(frames[0])
    assert np.ptp(potential) / n > 1e-4  # the atoms moved: 100× the conservation tolerance
    assert np.ptp(total) / n < 1e-6  # eV/atom
    assert abs(summary["conserved_drift_meV_per_atom_ps"]) < MAX_DRIFT_MEV_PER_ATOM_PS
    assert summary["energy_jumps"] == 0 and summary["flags"] == []


def test_an_unreachable_temperature_is_flagged(capsys, tmp_path):
    """A perfect crystal at rest feels no force; a Nosé–Hoover thermostat of 1 ns cannot heat
    it, so T stays 0 K against a 300 K target: exit code 3 and the flag."""
    crystal = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    start, traj = tmp_path / "NaCl.cif", tmp_path / "cold.traj"
    crystal.write(start)
    crystal.info[STEP_KEY] = 0
    with Trajectory(traj, "w") as writer:  # a run stopped at step 0, at rest
        writer.write(crystal)
    argv = [str(start), "--temperature", "300", "--steps", "6", "--interval", "3"]
    argv += ["--tdamp", "1e6", "--trajectory", str(traj), "--resume"]
    code, summary, err = run_md(capsys, *argv)
    assert code == 3
    assert summary["flags"] == ["temperature_not_reached"]
    assert summary["mean_temperature_K"] == pytest.approx(0.0, abs=1e-6)
    assert "temperature not reached" in err and "Traceback" not in err


def recorder(conserved_eV, steps=None):
    steps = list(range(len(conserved_eV))) if steps is None else steps
    return SimpleNamespace(
        steps=steps, conserved=list(conserved_eV), temperatures=[300.0] * len(steps)
    )


def test_a_step_in_the_conserved_energy_is_a_jump_and_noise_is_not():
    n_atoms, settings = 8, MDSettings("nve", "velocity-verlet", 300.0)
    rng = np.random.default_rng(0)
    noise = 1e-8 * n_atoms * rng.standard_normal(200)  # 10⁻⁵ meV/atom
    flags: dict = {}
    found = conserved_energy_checks(settings, recorder(noise), n_atoms, flags)
    assert flags == {} and found["energy_jumps"] == 0
    jumped = noise.copy()
    jumped[120:] += 2 * JUMP_MEV_PER_ATOM * 1e-3 * n_atoms  # one step of 2 × the threshold
    found = conserved_energy_checks(settings, recorder(jumped), n_atoms, flags)
    assert found["energy_jumps"] == 1 and "energy_jump" in flags
    assert found["largest_conserved_step_meV_per_atom"] == pytest.approx(
        2 * JUMP_MEV_PER_ATOM, rel=1e-3
    )


def test_drift_is_the_slope_in_mev_per_atom_per_ps():
    n_atoms, settings = 4, MDSettings("nve", "velocity-verlet", 300.0, timestep_fs=2.0)
    steps = list(range(100))
    slope = 2 * MAX_DRIFT_MEV_PER_ATOM_PS  # meV/atom/ps
    conserved = [slope * 1e-3 * n_atoms * step * 2.0 / 1000 for step in steps]  # eV
    flags: dict = {}
    found = conserved_energy_checks(settings, recorder(conserved, steps), n_atoms, flags)
    assert found["conserved_drift_meV_per_atom_ps"] == pytest.approx(slope)
    assert "energy_drift" in flags and "energy_jump" not in flags


def test_thermostatted_runs_note_energy_jumps_without_flagging():
    settings = MDSettings("nvt", "nose-hoover", 300.0)
    conserved = [0.0] * 50 + [0.1] * 50
    verdict = md_verdict(settings, recorder(conserved), 8)
    assert verdict["flags"] == {} and "energy_jump" in verdict["notes"]


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if the model is loaded: bad input must be refused before any work."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("gptff_core.calculator.GPTFFCalculator", refuse)


BAD = {
    "missing file": ["missing.cif", "--temperature", "300", "--steps", "5"],
    "negative steps": [str(EXAMPLE), "--temperature", "300", "--steps", "-5"],
    "zero timestep": [str(EXAMPLE), "--temperature", "300", "--steps", "5", "--timestep", "0"],
    "nan timestep": [str(EXAMPLE), "--temperature", "300", "--steps", "5", "--timestep", "nan"],
    "nvt without T": [str(EXAMPLE), "--steps", "5"],
    "negative T": [str(EXAMPLE), "--temperature", "-1", "--steps", "5"],
    "npt without P": [str(EXAMPLE), "--ensemble", "npt", "--temperature", "300", "--steps", "5"],
    "P with nvt": [str(EXAMPLE), "--temperature", "300", "--steps", "5", "--pressure", "1"],
    "thermostat of another ensemble": [
        *[str(EXAMPLE), "--temperature", "300", "--steps", "5", "--thermostat", "berendsen"]
    ],
    "zero interval": [str(EXAMPLE), "--temperature", "300", "--steps", "5", "--interval", "0"],
    "not a .traj": [str(EXAMPLE), "--temperature", "300", "--steps", "5", "--trajectory", "a.xyz"],
    "no such directory": [
        *[str(EXAMPLE), "--temperature", "300", "--steps", "5", "--trajectory", "no/a.traj"]
    ],
    "resume without a file": [str(EXAMPLE), "--temperature", "300", "--steps", "5", "--resume"],
    "overwrite and resume": [
        *[str(EXAMPLE), "--temperature", "300", "--steps", "5", "--overwrite", "--resume"]
    ],
}


@pytest.mark.parametrize("argv", BAD.values(), ids=BAD.keys())
def test_bad_input_is_one_line_and_exit_1_before_any_work(
    argv, capsys, tmp_path, monkeypatch, no_model
):
    monkeypatch.chdir(tmp_path)
    code = main(["md", *argv])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("gptff: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert not list(tmp_path.glob("*.traj"))


def test_npt_needs_a_periodic_cell(capsys, tmp_path, monkeypatch, no_model):
    monkeypatch.chdir(tmp_path)
    ase.io.write("dimer.xyz", ase.Atoms("NaCl", positions=[[0, 0, 0], [0, 0, 2.4]]))
    argv = ["dimer.xyz", "--ensemble", "npt", "--temperature", "300", "--pressure", "0"]
    code = main(["md", *argv, "--steps", "5"])
    err = capsys.readouterr().err
    assert code == 1 and "3D periodic cell" in err and err.count("\n") == 1


def test_an_existing_trajectory_is_refused(capsys, tmp_path, no_model):
    traj = tmp_path / "old.traj"
    traj.write_bytes(b"frames of an earlier run")
    argv = ["md", str(EXAMPLE), "--temperature", "300", "--steps", "5", "--trajectory", str(traj)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "exists" in err and "--overwrite" in err and err.count("\n") == 1
    assert traj.read_bytes() == b"frames of an earlier run"


INTEGRATORS = [
    ("nvt", "nose-hoover"),
    ("nvt", "langevin"),
    ("npt", "isotropic-mtk"),
    ("npt", "mtk"),
    ("npt", "berendsen"),
]


@pytest.mark.parametrize(("ensemble", "thermostat"), INTEGRATORS)
def test_every_integrator_runs_and_only_npt_moves_the_cell(ensemble, thermostat, capsys, tmp_path):
    traj = tmp_path / "run.traj"
    argv = [str(EXAMPLE), "--ensemble", ensemble, "--thermostat", thermostat, "--steps", "4"]
    argv += ["--temperature", "300", "--interval", "2", "--trajectory", str(traj)]
    argv += ["--pressure", "1"] if ensemble == "npt" else []
    code, summary, err = run_md(capsys, *argv)
    assert code in (0, 3), err  # a 4-step run may be flagged, never fail
    frames, steps = frames_steps(traj)
    assert steps == [0, 2, 4] and summary["thermostat"] == thermostat
    moved = abs(frames[-1].get_volume() - frames[0].get_volume()) > 1e-9
    assert moved == (ensemble == "npt")


def test_a_non_finite_energy_stops_the_run_and_keeps_the_frames(capsys, tmp_path, monkeypatch):
    """From the 6th evaluation on the energy is NaN: exit 4, one line, frames 0 and 2 kept."""

    class Breaking(GPTFFCalculator):
        calls = 0

        def calculate(self, *args, **kwargs):
            super().calculate(*args, **kwargs)
            Breaking.calls += 1
            if Breaking.calls > 5:
                self.results["energy"] = float("nan")

    monkeypatch.setattr("gptff_core.calculator.GPTFFCalculator", Breaking)
    traj = tmp_path / "broken.traj"
    argv = ["md", str(EXAMPLE), "--temperature", "300", "--steps", "8", "--interval", "2"]
    assert main([*argv, "--trajectory", str(traj)]) == 4
    err = capsys.readouterr().err
    assert "step 5: the energy is not finite" in err.splitlines()[-1]
    assert "Traceback" not in err
    assert frames_steps(traj)[1] == [0, 2, 4]
