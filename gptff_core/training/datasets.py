"""Labelled structures for training: readers, checks and a train/validation split.

Every reader returns :class:`Frame` objects in the toolkit's units and signs, converted here at
the edge: energies in eV (per structure), forces in eV/Å, stress in eV/Å³ as a 3×3 tensor with
ASE's sign (positive = tensile). A missing label is ``None`` and is masked out of its loss term.

Formats:

* anything ``ase.io`` reads with energies/forces/stress: extxyz (``energy``/``forces``/``stress``
  or ``virial``), ASE trajectories and databases, VASP ``OUTCAR`` (every ionic step) and
  ``vasprun.xml`` (every ionic step). ASE converts VASP's stress (kBar, pressure positive) to
  eV/Å³ with ASE's sign; for VASP the free energy (``TOTEN``, ``e_fr_energy``), of which the forces
  are the derivative, is the energy label;
* the published trainer's CSV (:func:`read_published_csv`);
* Python lists of ASE Atoms or pymatgen Structures (:func:`frames_from_structures`).

Frames carry a *group*: frames of one trajectory share it and stay on one side of the split.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from ase import Atoms

from gptff_core.errors import GPTFFInputError
from gptff_core.training.frames import Frame, check_input_file, make_frame
from gptff_core.training.published_csv import (
    CSV_COLUMNS,
    KBAR,
    VASP_VOIGT_ORDER,
    read_published_csv,
    vasp_stress_to_ase,
)

__all__ = [
    "CSV_COLUMNS",
    "GROUP_KEYS",
    "KBAR",
    "VASP_VOIGT_ORDER",
    "Frame",
    "fingerprint",
    "frames_from_structures",
    "make_frame",
    "read_datasets",
    "read_frames",
    "read_published_csv",
    "split_frames",
    "vasp_stress_to_ase",
]

logger = logging.getLogger(__name__)

GROUP_KEYS = ("group", "trajectory", "traj_id")
"""``atoms.info`` keys that name a frame's trajectory (first one present wins)."""


def _labels_from_atoms(atoms: Atoms) -> tuple[float | None, object, object]:
    """(energy eV, forces eV/Å, stress eV/Å³ ASE sign) from a calculator's results or from
    ``info``/``arrays``; the free energy is preferred (forces are its derivative)."""
    results = dict(atoms.calc.results) if atoms.calc is not None else {}
    info, arrays = atoms.info, atoms.arrays
    energy = results.get("free_energy", results.get("energy"))
    if energy is None:
        energy = info.get("free_energy", info.get("energy"))
    forces = results.get("forces", arrays.get("forces"))
    stress = results.get("stress", info.get("stress"))
    if stress is None and info.get("virial") is not None and atoms.cell.volume > 0:
        stress = -np.reshape(info["virial"], (3, 3)) / atoms.cell.volume
    return energy, forces, stress


def _group_of(atoms: Atoms, source: str, default: str) -> str:
    """``source:<info group>`` when ``atoms.info`` names a trajectory, else ``default``."""
    for key in GROUP_KEYS:
        if key in atoms.info:
            return f"{source}:{atoms.info[key]}"
    return default


def frames_from_structures(
    structures: Sequence[object],
    energies: Sequence[float | None] | None = None,
    forces: Sequence[object | None] | None = None,
    stresses: Sequence[object | None] | None = None,
    *,
    groups: Sequence[str] | None = None,
    source: str = "<python list>",
) -> list[Frame]:
    """Frames from Python objects.

    Labels come from the explicit sequences when given (energies eV, forces eV/Å, stresses eV/Å³
    with ASE's sign), else from each ASE Atoms' calculator results or ``info``/``arrays``. Each
    structure is its own trajectory unless ``groups`` (or an ``info["group"]``) says otherwise.
    """
    if len(structures) == 0:
        raise GPTFFInputError(f"{source}: no structures given")
    for name, values in (("energies", energies), ("forces", forces), ("stresses", stresses)):
        if values is not None and len(values) != len(structures):
            raise GPTFFInputError(
                f"{source}: {len(values)} {name} for {len(structures)} structures"
            )
    frames = []
    for index, structure in enumerate(structures):
        found = (None, None, None)
        if isinstance(structure, Atoms):
            found = _labels_from_atoms(structure)
        energy = found[0] if energies is None else energies[index]
        force = found[1] if forces is None else forces[index]
        stress = found[2] if stresses is None else stresses[index]
        group = groups[index] if groups is not None else f"{source}:{index}"
        if groups is None and isinstance(structure, Atoms):
            group = _group_of(structure, source, group)
        frames.append(
            make_frame(structure, energy, force, stress, source=source, index=index, group=group)
        )
    return frames


def read_frames(path: str | Path, fmt: str | None = None) -> list[Frame]:
    """Every labelled frame of one file (see the module docstring for formats and units).

    ``fmt`` is an ASE format name, or ``"gptff-csv"`` for the published trainer's CSV (the
    default for ``*.csv``). Frames of one VASP run are one trajectory; in other files, frames
    with an ``info["group"]`` (or ``trajectory``, ``traj_id``) share that group, and otherwise
    consecutive frames with the same atoms (same elements in the same order) form one trajectory.

    Raises:
        GPTFFInputError: missing, empty or unreadable file, a file without any labels, or a bad
            frame (named by file and frame number).
    """
    path = Path(path)
    check_input_file(path)
    if fmt == "gptff-csv" or (fmt is None and path.suffix.lower() == ".csv"):
        return read_published_csv(path)
    import ase.io

    try:
        images = ase.io.read(path, index=":", format=fmt)
    except Exception as error:  # ASE raises many types for unreadable files
        raise GPTFFInputError(
            f"cannot read {path}" + (f" as {fmt!r}" if fmt else "") + f": {error}"
        ) from error
    if not isinstance(images, list):
        images = [images]
    if not images:
        raise GPTFFInputError(f"{path}: no structures in the file")
    whole_file_is_one_run = _is_vasp(path, fmt)
    frames, previous, run = [], None, 0
    for index, atoms in enumerate(images):
        energy, forces, stress = _labels_from_atoms(atoms)
        if whole_file_is_one_run:
            group = str(path)
        else:
            key = tuple(atoms.numbers)
            run += previous is not None and key != previous
            previous = key
            group = _group_of(atoms, str(path), f"{path}#{run}")
        frames.append(
            make_frame(atoms, energy, forces, stress, source=str(path), index=index, group=group)
        )
    if all(f.energy is None and f.forces is None and f.stress is None for f in frames):
        raise GPTFFInputError(
            f"{path}: no energies, forces or stresses in the file; training needs labels "
            "(extxyz keys energy/forces/stress, or a VASP OUTCAR/vasprun.xml)"
        )
    return frames


def _is_vasp(path: Path, fmt: str | None) -> bool:
    if fmt is not None:
        return fmt in ("vasp-out", "vasp-xml")
    name = path.name.lower()
    return name.startswith(("outcar", "vasprun")) or name.endswith(("outcar", "vasprun.xml"))


def read_datasets(paths: Sequence[str | Path], fmt: str | None = None) -> list[Frame]:
    """The frames of several files, in order (see :func:`read_frames`)."""
    if not paths:
        raise GPTFFInputError("no training files given")
    frames = []
    for path in paths:
        frames += read_frames(path, fmt)
    return frames


def split_frames(
    frames: Sequence[Frame], valid_fraction: float, seed: int = 0
) -> tuple[list[Frame], list[Frame]]:
    """(train, valid) with whole trajectories on one side, about ``valid_fraction`` of the frames
    in validation. Groups are shuffled with ``seed`` and moved to validation until the fraction
    is reached. With a single trajectory, its last ``valid_fraction`` of frames (one contiguous
    block, the least correlated split available) is the validation set, with a warning."""
    if not 0.0 < valid_fraction < 1.0:
        raise GPTFFInputError(f"valid_fraction must be between 0 and 1, got {valid_fraction}")
    if len(frames) < 2:
        raise GPTFFInputError("at least two frames are needed to split off a validation set")
    groups: dict[str, list[int]] = {}
    for position, frame in enumerate(frames):
        groups.setdefault(frame.group, []).append(position)
    target = max(1, round(valid_fraction * len(frames)))
    if len(groups) == 1:
        logger.warning(
            "all %d frames are one trajectory: the last %d frames are the validation set "
            "(correlated with the end of the training frames; prefer --valid FILE)",
            len(frames),
            target,
        )
        return list(frames[:-target]), list(frames[-target:])
    order = np.random.default_rng(seed).permutation(len(groups))
    names = list(groups)
    valid: set[int] = set()
    for k in order:
        if len(valid) >= target:
            break
        if len(valid) + len(groups[names[k]]) >= len(frames):
            continue  # never move every frame to validation
        valid.update(groups[names[k]])
    train = [f for i, f in enumerate(frames) if i not in valid]
    return train, [f for i, f in enumerate(frames) if i in valid]


def fingerprint(frames: Sequence[Frame]) -> str:
    """sha256 of the frames' elements, positions, cells, periodicity and labels (in order)."""
    digest = hashlib.sha256()
    for frame in frames:
        atoms = frame.atoms
        digest.update(np.asarray(atoms.numbers, dtype=np.int64).tobytes())
        digest.update(np.asarray(atoms.positions, dtype=np.float64).tobytes())
        digest.update(np.asarray(atoms.cell.array, dtype=np.float64).tobytes())
        digest.update(np.asarray(atoms.pbc, dtype=np.int8).tobytes())
        for label in (frame.energy, frame.forces, frame.stress):
            digest.update(b"-" if label is None else np.asarray(label, np.float64).tobytes())
    return digest.hexdigest()
