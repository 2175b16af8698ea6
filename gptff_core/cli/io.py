"""Reading structures and writing results for the ``gptff`` subcommands.

Units: forces eV/Å; stresses eV/Å³ inside, GPa when printed (ASE sign, positive = tensile).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from ase import units

from gptff_core.errors import ComputationError, GPTFFInputError


def _parse_index(spec: str) -> int | slice:
    """``"-1"``, ``"3"``, ``":"``, ``"2:"``, ``"::2"`` → int or slice (frame numbers)."""
    try:
        if ":" not in spec:
            return int(spec)
        parts = spec.split(":")
        if len(parts) > 3:
            raise ValueError(spec)
        return slice(*(int(p) if p.strip() else None for p in parts))
    except ValueError:
        raise GPTFFInputError(
            f"--index {spec!r} is not a frame number or a slice such as ':' or '0:10:2'"
        ) from None


def read_structures(path: str, index: str = "-1", fmt: str | None = None) -> list:
    """Checked ``(frame, atoms)`` pairs that ``index`` selects in ``path`` (ASE, else pymatgen).

    Raises GPTFFInputError when the file is missing or unreadable, has no such frame, or holds a
    structure GPTFF cannot evaluate (named by file and frame).
    """
    import ase.io

    from gptff_core.validation import as_atoms, check_structure

    if not Path(path).is_file():
        raise GPTFFInputError(
            f"{path}: {'is a directory' if Path(path).is_dir() else 'no such file'}"
        )
    selector = _parse_index(index)
    try:
        frames = ase.io.read(path, index=":", format=fmt)
    except Exception as ase_error:  # ASE raises many types for unreadable files
        if fmt is not None:
            raise GPTFFInputError(f"cannot read {path} as {fmt!r}: {ase_error}") from ase_error
        try:
            from pymatgen.core import Structure

            frames = [Structure.from_file(path)]
        except Exception as pmg_error:
            raise GPTFFInputError(
                f"cannot read {path}: ASE: {str(ase_error) or type(ase_error).__name__}; "
                f"pymatgen: {str(pmg_error) or type(pmg_error).__name__}"
            ) from pmg_error
    numbers = range(len(frames))
    try:
        chosen = list(numbers[selector]) if isinstance(selector, slice) else [numbers[selector]]
    except (IndexError, ValueError):  # out of range, or a zero step
        chosen = []
    if not chosen:
        raise GPTFFInputError(f"{path}: --index {index} selects no frame ({len(frames)} frames)")
    selected = [(i, as_atoms(frames[i])) for i in chosen]
    for i, atoms in selected:
        check_structure(atoms, label=path if len(frames) == 1 else f"{path} frame {i}")
    return selected


def max_force(forces: np.ndarray) -> float:
    """eV/Å, the largest force on any atom (0 for no atoms)."""
    return float(np.linalg.norm(forces, axis=1).max()) if len(forces) else 0.0


def to_gpa(stress: np.ndarray | None) -> np.ndarray | None:
    """(3, 3) eV/Å³ → GPa (ASE sign, positive = tensile)."""
    return None if stress is None else np.asarray(stress) / units.GPa


def voigt_text(stress_gpa: np.ndarray | None) -> str:
    """A (3, 3) stress in GPa as Voigt text ``xx yy zz yz xz xy``; ``n/a`` for None."""
    if stress_gpa is None:
        return "n/a"
    s = stress_gpa
    voigt = (s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1])
    return " ".join(f"{round(v, 3) + 0.0:8.3f}" for v in voigt)  # + 0.0: no "-0.000"


def dump_json(payload: object) -> None:
    """Print ``payload`` as strict JSON; a NaN or infinity anywhere is refused (bare ``NaN`` is
    not JSON), naming where it is."""
    try:
        text = json.dumps(payload, indent=2, allow_nan=False)
    except ValueError:
        where = _first_non_finite(payload, "result") or "a result"
        raise ComputationError(
            f"{where} is not finite (NaN or infinity); nothing was printed. The checkpoint or "
            "the structure is probably damaged"
        ) from None
    print(text)


def _first_non_finite(value: object, path: str) -> str | None:
    """The path (``result[0].energy_eV``) of the first NaN or infinity in ``value``."""
    if isinstance(value, float):
        return None if np.isfinite(value) else path
    if isinstance(value, dict):
        items = ((f"{path}.{k}", v) for k, v in value.items())
    elif isinstance(value, list | tuple):
        items = ((f"{path}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for where, item in items:
        if (found := _first_non_finite(item, where)) is not None:
            return found
    return None
