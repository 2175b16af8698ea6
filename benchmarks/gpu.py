"""GPTFF MD and batched throughput on a GPU (or the CPU), one JSON line per case.

Cases (rocksalt NaCl supercells, 8 atoms per conventional cell, 300 K; ``--cases`` picks some):

* ``md_nvt_nose_hoover``: Matbench Discovery's MD protocol shape: ASE NVT Nosé–Hoover chain
  (``ase.md.nose_hoover_chain.NoseHooverChainNVT``, 0.25 fs, tdamp 100 steps), 64–512 atoms, one
  ``GPTFFCalculator``; ``steps_per_s``.
* ``paper_3000_atoms``: the paper's 3,000 atoms × 1,000 steps (500 s on an A100), same
  integrator; ``seconds`` for all steps.
* ``torchsim_batched_nvt``: TorchSim NVT Langevin (0.25 fs) of 1–256 systems of 64 atoms in one
  batch through ``gptff_core.torchsim.GPTFFTorchSimModel``; ``atom_steps_per_s``.
* ``largest_cell``: supercells doubled until one energy + forces + stress evaluation runs out of
  memory (caught), exceeds ``--max-seconds`` or ``--max-atoms``; the largest that ran.

Every line has ``peak_memory_MiB``: ``torch.cuda.max_memory_allocated`` during the case on CUDA,
the process's maximum resident set size so far (``resource.getrusage``) on the CPU. Where CHGNet
is importable (``pip install -e ".[bench]"``), the ASE cases also run CHGNet with the same
protocol in this process (``--chgnet-steps`` timed steps) and report ``ratio_vs_chgnet`` =
GPTFF steps/s ÷ CHGNet steps/s (> 1: GPTFF faster); otherwise it is null. Timed steps follow
untimed warm-up steps; CUDA is synchronised before every clock reading.

    python benchmarks/gpu.py --device auto                 # full sizes (CUDA when available)
    python benchmarks/gpu.py --device cpu --quick          # tiny sizes, seconds (CI)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import resource
import sys
import time
import warnings

import numpy as np
import torch
from ase import Atoms, units
from ase.build import bulk
from ase.md.nose_hoover_chain import NoseHooverChainNVT
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
from speed import time_one  # benchmarks/ is on sys.path when a script here runs

from gptff_core import GPTFFCalculator, load_model
from gptff_core.devices import resolve_device

ATOMS_PER_CELL = 8  # rocksalt NaCl conventional cell
TEMPERATURE = 300.0  # K
TIMESTEP = 0.25  # fs
TDAMP_STEPS = 100  # Nosé–Hoover damping time in timesteps
CASES = ("md_nvt_nose_hoover", "paper_3000_atoms", "torchsim_batched_nvt", "largest_cell")
# (full, --quick): supercells of the 8-atom NaCl cell, steps, warm-up steps, systems per batch
MD_REPEATS = ([(2, 2, 2), (2, 2, 4), (2, 4, 4), (4, 4, 4)], [(1, 1, 1), (1, 1, 2)])
MD_STEPS, WARM_UP = (200, 2), (5, 1)
PAPER = ((5, 5, 15), (1, 1, 2))  # 3,000 atoms
BATCH_SYSTEMS, BATCH_REPEAT = ([1, 4, 16, 64, 256], [1, 2]), ((2, 2, 2), (1, 1, 1))
BATCH_STEPS = (50, 2)
LARGEST_START = ((4, 4, 4), (1, 1, 1))


def salt(repeat: tuple[int, int, int], seed: int = 0) -> Atoms:
    """Rocksalt NaCl (a = 5.64 Å) repeated, rattled by 0.05 Å, velocities at 300 K (seeded)."""
    atoms = bulk("NaCl", "rocksalt", a=5.64, cubic=True).repeat(repeat)
    atoms.rattle(0.05, seed=seed)
    MaxwellBoltzmannDistribution(atoms, temperature_K=TEMPERATURE, rng=np.random.default_rng(seed))
    Stationary(atoms)
    return atoms


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mib(device: torch.device) -> float:
    """MiB: CUDA peak allocated since reset_peak, or the process's max RSS on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (2**20 if sys.platform == "darwin" else 2**10)


def nose_hoover_seconds(calculator, atoms: Atoms, steps: int, warm_up: int, device) -> float:
    """Seconds for ``steps`` NVT Nosé–Hoover steps of a copy of ``atoms`` after ``warm_up``."""
    work = atoms.copy()
    work.calc = calculator
    dynamics = NoseHooverChainNVT(work, timestep=TIMESTEP * units.fs, temperature_K=TEMPERATURE,
                                  tdamp=TDAMP_STEPS * TIMESTEP * units.fs)  # fmt: skip
    dynamics.run(warm_up)
    synchronize(device)
    start = time.perf_counter()
    dynamics.run(steps)
    synchronize(device)
    return time.perf_counter() - start


def chgnet_calculator(device: torch.device):
    """CHGNet's ASE calculator on ``device``, or None where CHGNet is not installed. What CHGNet
    prints while loading goes to stderr: stdout carries only the JSON lines."""
    try:
        from chgnet.model import CHGNet, CHGNetCalculator
    except ImportError:
        return None
    with contextlib.redirect_stdout(sys.stderr):
        return CHGNetCalculator(CHGNet.load(verbose=False), use_device=device.type)


def ase_md_record(case, args, atoms, steps, warm_up) -> dict:
    """One ASE Nosé–Hoover run of GPTFF (and CHGNet where installed) on ``atoms``."""
    reset_peak(args.device)
    seconds = nose_hoover_seconds(args.calculator, atoms, steps, warm_up, args.device)
    record = base_record(case, args, len(atoms), 1, steps, seconds)
    if args.chgnet is not None:
        chgnet_steps = min(steps, args.chgnet_steps)
        theirs = nose_hoover_seconds(args.chgnet, atoms, chgnet_steps, warm_up, args.device)
        record["ratio_vs_chgnet"] = record["steps_per_s"] / (chgnet_steps / theirs)
    return record


def base_record(case, args, n_atoms, n_systems, steps, seconds) -> dict:
    return {
        "case": case,
        "device": str(args.device),
        "dtype": args.dtype,
        "model": args.model,
        "n_atoms": n_atoms,
        "n_systems": n_systems,
        "steps": steps,
        "timestep_fs": TIMESTEP,
        "seconds": seconds,
        "steps_per_s": steps / seconds,
        "atom_steps_per_s": n_atoms * steps / seconds,
        "peak_memory_MiB": peak_memory_mib(args.device),
        "ratio_vs_chgnet": None,
    }


def md_cases(args):
    for repeat in MD_REPEATS[args.quick]:
        yield ase_md_record("md_nvt_nose_hoover", args, salt(repeat), MD_STEPS[args.quick],
                            WARM_UP[args.quick])  # fmt: skip


def paper_case(args):
    steps = 2 if args.quick else args.paper_steps
    yield ase_md_record("paper_3000_atoms", args, salt(PAPER[args.quick]), steps,
                        WARM_UP[args.quick])  # fmt: skip


def torchsim_cases(args):
    """Batched NVT Langevin of n systems (one seed each) in one TorchSim state."""
    try:
        import torch_sim as ts

        from gptff_core.torchsim import GPTFFTorchSimModel
    except ImportError:
        yield {"case": "torchsim_batched_nvt", "skipped": "torch_sim is not installed"}
        return
    model = GPTFFTorchSimModel(args.network, device=args.device, dtype=args.dtype)
    metal = ts.units.MetalUnits
    kT = torch.tensor(TEMPERATURE * metal.temperature, device=args.device, dtype=model.dtype)
    dt = torch.tensor(TIMESTEP * 1e-3 * metal.time, device=args.device,
                      dtype=model.dtype)  # fmt: skip
    steps, warm_up = BATCH_STEPS[args.quick], WARM_UP[args.quick]
    for n_systems in BATCH_SYSTEMS[args.quick]:
        systems = [salt(BATCH_REPEAT[args.quick], seed=k) for k in range(n_systems)]
        reset_peak(args.device)
        init, update = ts.nvt_langevin(model=model, dt=dt, kT=kT, seed=0)
        state = init(ts.initialize_state(systems, args.device, model.dtype))
        for _ in range(warm_up):
            state = update(state)
        synchronize(args.device)
        start = time.perf_counter()
        for _ in range(steps):
            state = update(state)
        synchronize(args.device)
        seconds = time.perf_counter() - start
        n_atoms = sum(len(s) for s in systems)
        yield base_record("torchsim_batched_nvt", args, n_atoms, n_systems, steps, seconds)


def out_of_memory(error: BaseException) -> bool:
    if isinstance(error, (MemoryError, torch.cuda.OutOfMemoryError)):
        return True
    message = str(error).lower()
    return "out of memory" in message or "can't allocate memory" in message


def largest_cell_case(args):
    """Double the supercell (x, y, z in turn) while one evaluation fits and is fast enough."""
    repeat = list(LARGEST_START[args.quick])
    max_atoms = 32 if args.quick else args.max_atoms
    best, stopped, axis = None, "max_atoms", 0
    while ATOMS_PER_CELL * math.prod(repeat) <= max_atoms:
        atoms = salt(repeat)
        reset_peak(args.device)
        try:
            seconds = time_one(args.calculator, atoms)  # energy, forces, stress
            synchronize(args.device)
        except (RuntimeError, MemoryError) as error:
            if not out_of_memory(error):
                raise
            stopped = "out_of_memory"
            break
        finally:
            args.calculator.reset()
            if args.device.type == "cuda":
                torch.cuda.empty_cache()
        best = base_record("largest_cell", args, len(atoms), 1, 1, seconds)
        best["timestep_fs"] = None  # one evaluation per size, no MD
        if seconds > args.max_seconds:
            stopped = "max_seconds"
            break
        repeat[axis] *= 2
        axis = (axis + 1) % 3
    if best is not None:
        best["stopped_by"] = stopped
        yield best


RUNNERS = dict(zip(CASES, (md_cases, paper_case, torchsim_cases, largest_cell_case), strict=True))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (%(default)s)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--model", default="gptff-v2")
    parser.add_argument("--quick", action="store_true", help="tiny cells and 2 steps (CI)")
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument(
        "--threads", type=int, help="torch CPU threads (default: torch's; 1 with --quick)"
    )
    parser.add_argument(
        "--skin",
        type=float,
        default=0.0,
        help="Verlet skin of the ASE calculator, Å (%(default)s: no reuse)",
    )
    parser.add_argument(
        "--paper-steps", type=int, default=1000, help="steps of the 3,000-atom run (%(default)s)"
    )
    parser.add_argument(
        "--chgnet-steps",
        type=int,
        default=50,
        help="timed CHGNet steps per ASE case, where installed (%(default)s)",
    )
    parser.add_argument(
        "--max-atoms",
        type=int,
        default=2**21,
        help="largest_cell: stop doubling above this many atoms (%(default)s)",
    )
    parser.add_argument("--max-seconds", type=float, default=60.0,
                        help="largest_cell: stop after an evaluation slower than this, s "
                        "(%(default)s)")  # fmt: skip
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads or args.quick:  # tiny cells: extra threads only contend (tests/conftest.py)
        torch.set_num_threads(args.threads or 1)
    warnings.filterwarnings("ignore")
    args.device = resolve_device(args.device)
    args.network = load_model(args.model, device=args.device, dtype=args.dtype)
    args.calculator = GPTFFCalculator(args.network, device=args.device, dtype=args.dtype,
                                      skin=args.skin)  # fmt: skip
    args.chgnet = chgnet_calculator(args.device)
    for case in args.cases:
        for record in RUNNERS[case](args):
            print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
