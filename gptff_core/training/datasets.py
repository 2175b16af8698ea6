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

import ast
import csv
import hashlib
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.stress import voigt_6_to_full_3x3_stress

from gptff_core.errors import GPTFFInputError
from gptff_core.validation import as_atoms, check_structure

logger = logging.getLogger(__name__)

KBAR = 0.1 * units.GPa
"""eV/Å³ per kBar (1 kBar = 0.1 GPa)."""

GROUP_KEYS = ("group", "trajectory", "traj_id")
"""``atoms.info`` keys that name a frame's trajectory (first one present wins)."""

VASP_VOIGT_ORDER = (0, 1, 2, 4, 5, 3)
"""VASP writes 6-component stresses as xx yy zz xy yz zx; ``[VASP_VOIGT_ORDER]`` gives ASE's
Voigt order xx yy zz yz xz xy."""


@dataclass
class Frame:
    """One labelled structure.

    Attributes:
        atoms: the structure (positions and cell in Å), without a calculator.
        energy: total energy, eV, or None.
        forces: (n_atoms, 3) eV/Å, or None.
        stress: (3, 3) eV/Å³, ASE sign (positive = tensile), or None.
        source: the file it came from (or a description such as ``"<python list>"``).
        index: its frame number in the source.
        group: the trajectory it belongs to; frames of one group stay on one side of a split.
    """

    atoms: Atoms
    energy: float | None
    forces: np.ndarray | None
    stress: np.ndarray | None
    source: str
    index: int
    group: str

    @property
    def label(self) -> str:
        """``"<source> frame <index>"``, the name used in error messages."""
        return f"{self.source} frame {self.index}"

    @property
    def n_atoms(self) -> int:
        return len(self.atoms)


def make_frame(
    structure: object,
    energy: float | None,
    forces: object | None,
    stress: object | None,
    *,
    source: str,
    index: int,
    group: str | None = None,
) -> Frame:
    """A checked :class:`Frame` from a structure and labels in the toolkit's units.

    Args:
        structure: ASE Atoms or pymatgen Structure (Å).
        energy: total energy, eV (None: unlabelled).
        forces: (n_atoms, 3), eV/Å (None: unlabelled).
        stress: (3, 3) or Voigt (6,) in ASE order xx yy zz yz xz xy, eV/Å³, positive = tensile.
        source, index: where the frame came from (named in errors).
        group: trajectory name (default: ``source``).

    Raises:
        GPTFFInputError: a structure GPTFF cannot evaluate (unknown element, overlapping atoms,
            NaN positions), or labels with the wrong shape or NaN/inf values; the message names
            the source and frame.
    """
    label = f"{source} frame {index}"
    atoms = as_atoms(structure).copy()
    atoms.calc = None
    check_structure(atoms, label=label)
    n = len(atoms)
    if energy is not None:
        energy = float(energy)
        if not math.isfinite(energy):
            raise GPTFFInputError(f"{label}: energy is {energy}; remove the frame or fix it")
    if forces is not None:
        forces = np.array(forces, dtype=np.float64)
        if forces.shape != (n, 3):
            raise GPTFFInputError(
                f"{label}: forces have shape {forces.shape} but the structure has {n} atoms "
                f"(expected ({n}, 3))"
            )
        if not np.isfinite(forces).all():
            raise GPTFFInputError(f"{label}: forces contain NaN or inf values")
    if stress is not None:
        stress = np.array(stress, dtype=np.float64)
        if stress.shape == (6,):
            stress = voigt_6_to_full_3x3_stress(stress)
        if stress.shape != (3, 3):
            raise GPTFFInputError(
                f"{label}: stress has shape {stress.shape}; expected (3, 3) or Voigt (6,)"
            )
        if not np.isfinite(stress).all():
            raise GPTFFInputError(f"{label}: stress contains NaN or inf values")
        if abs(atoms.cell.volume) < 1e-8:
            raise GPTFFInputError(f"{label}: a stress label needs a cell with a volume")
    return Frame(atoms, energy, forces, stress, source, index, group or source)


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


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise GPTFFInputError(f"{path}: {'is a directory' if path.is_dir() else 'no such file'}")
    if path.stat().st_size == 0:
        raise GPTFFInputError(f"{path}: the file is empty")


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
    _check_file(path)
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


def _cell_value(text: str, column: str, label: str) -> object:
    """A CSV cell holding JSON or a Python literal (lists, dicts)."""
    try:
        return json.loads(text)
    except (json.JSONDecodeError, TypeError):
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError) as error:
        raise GPTFFInputError(f"{label}: column {column!r} is not JSON or a Python literal") from (
            error
        )


def vasp_stress_to_ase(stress_kbar: object) -> np.ndarray:
    """VASP stress (kBar, pressure positive; 3×3 or 6 values xx yy zz xy yz zx) as a 3×3 tensor
    in eV/Å³ with ASE's sign (positive = tensile)."""
    values = np.array(stress_kbar, dtype=np.float64)
    if values.shape == (6,):
        values = voigt_6_to_full_3x3_stress(values[list(VASP_VOIGT_ORDER)])
    return -values * KBAR


CSV_COLUMNS = ("struct_id", "energy", "forces", "stress", "structure")
"""Required columns of the published trainer's CSV; ``fold`` and ``ref_energy`` are kept in
``atoms.info`` when present."""


def read_published_csv(path: str | Path) -> list[Frame]:
    """Frames of the published trainer's CSV.

    Columns: ``struct_id``; ``energy`` (eV per structure); ``forces`` ((n, 3) eV/Å, JSON or a
    Python literal); ``stress`` (kBar with VASP's sign, pressure positive: 3×3, or 6 values in
    VASP's order xx yy zz xy yz zx); ``structure`` (a pymatgen ``Structure.as_dict()``); optional
    ``fold`` and ``ref_energy``, kept in ``atoms.info``. An empty cell is a missing label.
    Frames sharing a ``struct_id`` form one trajectory.
    """
    from pymatgen.core import Structure

    path = Path(path)
    _check_file(path)
    csv.field_size_limit(1 << 30)
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise GPTFFInputError(
                f"{path}: not a published-trainer CSV: missing columns {missing} "
                f"(found {reader.fieldnames})"
            )
        frames = []
        for index, row in enumerate(reader):
            label = f"{path} frame {index}"

            def value(column: str, row=row, label=label) -> object:
                text = (row.get(column) or "").strip()
                return _cell_value(text, column, label) if text else None

            try:
                structure = Structure.from_dict(value("structure"))
            except Exception as error:
                raise GPTFFInputError(
                    f"{label}: column 'structure' is not a pymatgen Structure dict ({error})"
                ) from error
            energy_text = (row.get("energy") or "").strip()
            try:
                energy = float(energy_text) if energy_text else None
            except ValueError:
                raise GPTFFInputError(f"{label}: energy {energy_text!r} is not a number") from None
            stress = value("stress")
            atoms = as_atoms(structure)
            for key in ("fold", "ref_energy"):
                if row.get(key):
                    atoms.info[key] = value(key)
            frame = make_frame(
                atoms,
                energy,
                value("forces"),
                None if stress is None else _checked_vasp_stress(stress, label),
                source=str(path),
                index=index,
                group=f"{path}:{row['struct_id']}",
            )
            frames.append(frame)
    if not frames:
        raise GPTFFInputError(f"{path}: the CSV has a header but no rows")
    return frames


def _checked_vasp_stress(stress: object, label: str) -> np.ndarray:
    values = np.array(stress, dtype=np.float64)
    if values.shape not in ((3, 3), (6,)):
        raise GPTFFInputError(
            f"{label}: stress has shape {values.shape}; expected 3×3 or 6 values (kBar)"
        )
    return vasp_stress_to_ase(values)


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
