"""The published trainer's CSV and VASP's stress convention, read into :class:`Frame` objects.

VASP writes stresses in kBar with pressure positive (6 components in the order xx yy zz xy yz zx);
they are converted here to 3×3 tensors in eV/Å³ with ASE's sign (positive = tensile).
"""

from __future__ import annotations

import ast
import csv
import json
from pathlib import Path

import numpy as np
from ase import units
from ase.stress import voigt_6_to_full_3x3_stress

from gptff_core.errors import GPTFFInputError
from gptff_core.training.frames import Frame, check_input_file, make_frame
from gptff_core.validation import as_atoms

KBAR = 0.1 * units.GPa
"""eV/Å³ per kBar (1 kBar = 0.1 GPa)."""

VASP_VOIGT_ORDER = (0, 1, 2, 4, 5, 3)
"""VASP writes 6-component stresses as xx yy zz xy yz zx; ``[VASP_VOIGT_ORDER]`` gives ASE's
Voigt order xx yy zz yz xz xy."""


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


def read_published_csv(path: str | Path) -> list[Frame]:
    """Frames of the published trainer's CSV.

    Columns: ``struct_id``; ``energy`` (eV per structure); ``forces`` ((n, 3) eV/Å, JSON or a
    Python literal); ``stress`` (kBar with VASP's sign, pressure positive: 3×3, or 6 values in
    VASP's order xx yy zz xy yz zx); ``structure`` (a pymatgen ``Structure.as_dict()``); optional
    ``fold`` and ``ref_energy``, kept in ``atoms.info``. An empty cell is a missing label.
    Frames sharing a ``struct_id`` form one trajectory.
    """
    path = Path(path)
    check_input_file(path)
    csv.field_size_limit(1 << 30)
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise GPTFFInputError(
                f"{path}: not a published-trainer CSV: missing columns {missing} "
                f"(found {reader.fieldnames})"
            )
        frames = [_row_frame(row, path, index) for index, row in enumerate(reader)]
    if not frames:
        raise GPTFFInputError(f"{path}: the CSV has a header but no rows")
    return frames


def _row_frame(row: dict, path: Path, index: int) -> Frame:
    """The checked frame of CSV row ``index`` (columns and units: :func:`read_published_csv`)."""
    from pymatgen.core import Structure

    label = f"{path} frame {index}"

    def value(column: str) -> object:
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
    return make_frame(
        atoms,
        energy,
        value("forces"),
        None if stress is None else _checked_vasp_stress(stress, label),
        source=str(path),
        index=index,
        group=f"{path}:{row['struct_id']}",
    )


def _checked_vasp_stress(stress: object, label: str) -> np.ndarray:
    """A VASP stress cell (kBar, 3×3 or 6 values) of frame ``label`` as ASE's 3×3, eV/Å³."""
    values = np.array(stress, dtype=np.float64)
    if values.shape not in ((3, 3), (6,)):
        raise GPTFFInputError(
            f"{label}: stress has shape {values.shape}; expected 3×3 or 6 values (kBar)"
        )
    return vasp_stress_to_ase(values)
