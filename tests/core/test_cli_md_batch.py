"""``gptff md FILE FILE ...``: batched TorchSim MD (:mod:`gptff_core.cli.md_batch`,
:mod:`gptff_core.md_batch`), and ``--d3`` on both paths."""

import json
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase.build import bulk

from gptff_core import GPTFFCalculator
from gptff_core.cli import main
from gptff_core.md import STEP_KEY, temperature_tolerance

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "NaCl_rattled.cif"


def run_md(capsys, *argv):
    """(exit code, parsed --json summary or None, stderr) of ``gptff md ... --json``."""
    code = main(["md", *argv, "--json"])
    captured = capsys.readouterr()
    return code, (json.loads(captured.out) if captured.out.strip() else None), captured.err


def two_cells(directory: Path) -> list[str]:
    """Two 8-atom 3D periodic cells written to ``directory``: rattled NaCl and rattled Si."""
    silicon = bulk("Si", "diamond", a=5.43, cubic=True)
    silicon.rattle(0.05, seed=2)
    names = [str(directory / "NaCl.cif"), str(directory / "Si.cif")]
    ase.io.read(EXAMPLE).write(names[0])
    silicon.write(names[1])
    return names


def wrapped_difference(a, b, cell) -> float:
    """Largest |a − b| (Å) over atoms, each difference taken to its nearest periodic image."""
    fractional = np.linalg.solve(np.asarray(cell).T, (a - b).T).T
    fractional -= np.round(fractional)
    return float(np.abs(fractional @ np.asarray(cell)).max())


def test_batched_nve_equals_single_ase_velocity_verlet_runs(capsys, tmp_path):
    """The batch gives FILE i the seed --seed + i; single ASE runs with those seeds must follow
    the same trajectories (float64, smooth cutoffs)."""
    names = two_cells(tmp_path)
    common = ["--ensemble", "nve", "--temperature", "600", "--steps", "10", "--interval", "5"]
    common += ["--dtype", "float64", "--smooth"]
    batch_dir = tmp_path / "batch"
    code, summary, err = run_md(
        capsys, *names, *common, "--seed", "11", "--trajectory-dir", str(batch_dir)
    )
    assert code == 0, err
    assert summary["n_structures"] == 2 and [s["seed"] for s in summary["structures"]] == [11, 12]
    for index, name in enumerate(names):
        single = tmp_path / f"single{index}.traj"
        argv = [name, *common, "--seed", str(11 + index), "--trajectory", str(single)]
        assert run_md(capsys, *argv)[0] == 0
        batched = ase.io.read(batch_dir / f"{Path(name).stem}_md.traj", ":")
        reference = ase.io.read(single, ":")
        assert [f.info[STEP_KEY] for f in batched] == [0, 5, 10]
        assert [f.info[STEP_KEY] for f in reference] == [0, 5, 10]
        for mine, theirs in zip(batched, reference, strict=True):
            assert wrapped_difference(mine.positions, theirs.positions, theirs.cell) < 1e-8
            np.testing.assert_allclose(mine.get_momenta(), theirs.get_momenta(), atol=1e-8)
            assert mine.get_potential_energy() == pytest.approx(
                theirs.get_potential_energy(), abs=1e-8
            )
        assert np.ptp([f.positions for f in reference], axis=0).max() > 1e-3  # atoms moved
        one = summary["structures"][index]
        assert one["file"] == name and one["frames_written"] == 3 and one["flags"] == []
        assert abs(one["conserved_drift_meV_per_atom_ps"]) < 5.0


def test_batched_langevin_writes_a_trajectory_per_structure_and_its_verdict(capsys, tmp_path):
    names = two_cells(tmp_path)
    argv = [*names, "--temperature", "300", "--steps", "6", "--interval", "1", "--seed", "5"]
    code, summary, err = run_md(capsys, *argv, "--trajectory-dir", str(tmp_path / "out"))
    assert code in (0, 3), err
    calc = GPTFFCalculator()
    for name, one in zip(names, summary["structures"], strict=True):
        frames = ase.io.read(tmp_path / "out" / f"{Path(name).stem}_md.traj", ":")
        assert [f.info[STEP_KEY] for f in frames] == list(range(7))
        assert one["thermostat"] == "langevin" and one["frames_written"] == 7
        copy = frames[-1].copy()
        copy.calc = calc  # the stored energy is the calculator's at the stored positions
        assert frames[-1].get_potential_energy() == pytest.approx(
            copy.get_potential_energy(), abs=1e-4
        )
        # the verdict, recomputed from the frames: mean T of steps 4..6 against the target
        mean = np.mean([f.get_temperature() for f in frames[4:]])
        assert one["mean_temperature_K"] == pytest.approx(mean, rel=1e-5)
        tolerance = temperature_tolerance(300.0, len(frames[0]), 3 * 1.0, 1 / 0.01)[2]
        assert one["temperature_tolerance_K"] == pytest.approx(tolerance)
        assert ("temperature_not_reached" in one["flags"]) == (abs(mean - 300) > tolerance)
    assert code == (3 if any(s["flags"] for s in summary["structures"]) else 0)


def test_a_batch_far_from_its_target_is_flagged_with_exit_3(capsys, tmp_path):
    """Perfect crystals started at 300 K share their kinetic energy with the potential within a
    quarter phonon period; with almost no friction the mean T of the second half stays near
    150 K, far outside the tolerance of a 64-atom cell."""
    names = []
    for a, name in ((5.64, "NaCl_a"), (5.70, "NaCl_b")):
        names.append(str(tmp_path / f"{name}.cif"))
        bulk("NaCl", "rocksalt", a=a, cubic=True).repeat(2).write(names[-1])
    argv = [*names, "--temperature", "300", "--steps", "24", "--timestep", "5"]
    argv += ["--friction", "1e-9", "--interval", "12", "--trajectory-dir", str(tmp_path)]
    code, summary, err = run_md(capsys, *argv)
    assert code == 3, err
    for one in summary["structures"]:
        assert one["flags"] == ["temperature_not_reached"]
        assert abs(one["mean_temperature_K"] - 300) > one["temperature_tolerance_K"]
    assert err.count("temperature not reached") == 2


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if a model is loaded: bad input must be refused before any work."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("gptff_core.torchsim.GPTFFTorchSimModel", refuse)
    monkeypatch.setattr("gptff_core.calculator.GPTFFCalculator", refuse)


def bad_batches(directory: Path) -> dict:
    """Batches that must be refused: {id: argv}."""
    names = two_cells(directory)
    molecule = str(directory / "dimer.xyz")
    ase.io.write(molecule, ase.Atoms("NaCl", positions=[[0, 0, 0], [0, 0, 2.4]]))
    slab = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    slab.pbc = [True, True, False]
    slab.write(str(directory / "slab.traj"))
    (directory / "twin").mkdir()
    ase.io.read(EXAMPLE).write(str(directory / "twin" / "NaCl.cif"))
    nvt = ["--temperature", "300", "--steps", "3"]
    return {
        "mixed pbc": [names[0], molecule, *nvt],
        "partly periodic": [names[0], str(directory / "slab.traj"), *nvt],
        "nose-hoover": [*names, *nvt, "--thermostat", "nose-hoover"],
        "npt": [*names, *nvt, "--ensemble", "npt", "--pressure", "0"],
        "resume": [*names, *nvt, "--resume"],
        "one --trajectory": [*names, *nvt, "--trajectory", "x.traj"],
        "same stem": [names[0], str(directory / "twin" / "NaCl.cif"), *nvt],
        "negative steps": [*names, "--temperature", "300", "--steps", "-1"],
    }


BAD_IDS = [
    "mixed pbc",
    "partly periodic",
    "nose-hoover",
    "npt",
    "resume",
    "one --trajectory",
    "same stem",
    "negative steps",
]


@pytest.mark.parametrize("case", BAD_IDS)
def test_bad_batches_are_one_line_and_exit_1_before_any_work(
    case, capsys, tmp_path, monkeypatch, no_model
):
    argv = bad_batches(tmp_path)[case]
    monkeypatch.chdir(tmp_path)
    code = main(["md", *argv])
    err = capsys.readouterr().err
    assert code == 1, err
    assert err.startswith("gptff: error: ") and err.count("\n") == 1, err
    assert not list(tmp_path.rglob("*_md.traj"))
    if case == "mixed pbc":
        assert "same pbc" in err


def test_an_existing_batch_trajectory_is_refused_unless_overwrite(capsys, tmp_path, no_model):
    names = two_cells(tmp_path)
    old = tmp_path / "Si_md.traj"
    old.write_bytes(b"an earlier run")
    argv = ["md", *names, "--temperature", "300", "--steps", "2", "--trajectory-dir", str(tmp_path)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "exists" in err and "--overwrite" in err and old.read_bytes() == b"an earlier run"


def d3_reference(frame, **kwargs) -> float:
    """GPTFF + D3 energy (eV) of ``frame``, computed directly: GPTFF alone plus torch-dftd's D3
    calculator with the PBE BJ parameters."""
    from gptff_core.dispersion import D3Calculator

    gptff, d3 = frame.copy(), frame.copy()
    gptff.calc = GPTFFCalculator(**kwargs)
    d3.calc = D3Calculator("pbe")
    return gptff.get_potential_energy() + d3.get_potential_energy()


@pytest.mark.parametrize("batched", [False, True], ids=["ase", "torchsim"])
def test_d3_adds_the_dispersion_energy(batched, capsys, tmp_path):
    pytest.importorskip("torch_dftd")
    names = two_cells(tmp_path)[: 2 if batched else 1]
    argv = [*names, "--temperature", "300", "--steps", "2", "--interval", "2", "--d3"]
    argv += ["--dtype", "float64", "--trajectory-dir", str(tmp_path), "--seed", "1"]
    argv += ["--batch"] if batched else []
    code, summary, err = run_md(capsys, *argv)
    assert code in (0, 3), err
    assert all(s["d3"] for s in summary["structures"]) if batched else summary["d3"]
    for name in names:
        frames = ase.io.read(tmp_path / f"{Path(name).stem}_md.traj", ":")
        assert [f.info[STEP_KEY] for f in frames] == [0, 2]
        for frame in frames:
            reference = d3_reference(frame, dtype="float64")
            assert frame.get_potential_energy() == pytest.approx(reference, abs=1e-7)
            alone = frame.copy()
            alone.calc = GPTFFCalculator(dtype="float64")
            assert abs(frame.get_potential_energy() - alone.get_potential_energy()) > 1e-3


def test_progress_lines_give_the_mean_temperature_of_the_systems(capsys, tmp_path):
    """Without --json: one progress line per frame on stderr; at step 0 every system is at
    exactly --temperature, so mean, min and max read 600 K; one report per structure."""
    names = two_cells(tmp_path)
    argv = ["md", *names, "--ensemble", "nve", "--temperature", "600", "--steps", "2"]
    argv += ["--dtype", "float64", "--smooth", "--seed", "3", "--interval", "1"]
    assert main([*argv, "--trajectory-dir", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.startswith("step")]
    assert len(lines) == 3 and all("2 systems" in line for line in lines)
    assert "T mean    600.0 K (min 600.0, max 600.0)" in lines[0]
    assert all(f"{name}:" in captured.out for name in names)


def test_the_seed_fixes_the_langevin_noise_of_a_batch(capsys, tmp_path):
    """TorchSim 0.3 draws Langevin noise from torch's global generator: the same --seed must
    give the same run, another seed another run (the initial momenta are set by the seed too,
    so both runs start alike only with the same seed: compare the momenta gained after step 0)."""
    names = two_cells(tmp_path)
    finals = []
    for seed, out in ((4, "a"), (4, "b"), (9, "c")):
        argv = [*names, "--temperature", "300", "--steps", "3", "--seed", str(seed)]
        code, _, err = run_md(capsys, *argv, "--trajectory-dir", str(tmp_path / out))
        assert code in (0, 3), err
        finals.append(ase.io.read(tmp_path / out / "Si_md.traj", -1).get_momenta())
    np.testing.assert_array_equal(finals[0], finals[1])
    assert np.abs(finals[0] - finals[2]).max() > 1e-3
