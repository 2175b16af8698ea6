"""Pure helpers of the labellers (:mod:`gptff_flows.jobs.labels`): their default settings and
the checks of settings, the key that identifies a label, and the stress convention of labels.

* :data:`GPAW_DEFAULTS`, :data:`VASP_DEFAULTS` — the settings a label gets unless told otherwise
  (why: their docstrings); :func:`check_settings` — refuses settings the code would reject.

* :func:`canonical` — settings as plain JSON values with sorted keys, integral floats as ints,
  so ``{"ecut": 300}`` and ``{"ecut": 300.0}`` hash alike.
* :func:`label_hash` — sha256 over the rounded cell, wrapped fractional positions, species, pbc,
  labeller and settings: the same frame labelled the same way always gets the same key.
* :func:`task_document_label` — energy, forces, stress, failure and provenance of atomate2's
  VASP task document (a ``TaskDoc`` or its dict), units unchanged.
* :func:`ase_stress_to_vasp_kbar` — ASE's stress (eV/Å³, positive = tensile) as the 3×3 kbar
  tensor with VASP's sign (positive = compressive) that atomate2 documents store; the inverse of
  :func:`gptff_core.training.datasets.vasp_stress_to_ase`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math

import numpy as np
from ase import Atoms
from ase.stress import voigt_6_to_full_3x3_stress

from gptff_core.errors import GPTFFInputError
from gptff_core.training.datasets import KBAR
from gptff_flows.options import require_int, require_number

GPAW_DEFAULTS: dict = {
    "mode": {"name": "pw", "ecut": 400.0},
    "xc": "optB88-vdW",
    "kpts": {"density": 1.5},
    "occupations": {"name": "fermi-dirac", "width": 0.05},
    "convergence": {"forces": 0.01},
    "maxiter": 150,
}
"""GPAW settings of a label unless told otherwise, chosen for Li₃YCl₆-size cells (30-60 atoms,
wide-gap ionic solids) on a few CPU cores:

* ``mode`` plane waves, ``ecut`` 400 eV: plane waves give the stress (LCAO gives none, and the
  NPT runs that these labels correct need it); 400 eV is GPAW's usual accuracy for its PAW
  setups at a third of the cost of VASP-like 520 eV.
* ``xc`` optB88-vdW, the paper's functional (GPAW's own vdW-DF, no libvdwxc needed), so learned
  models compare with the paper's.
* ``kpts`` density 1.5 k-points per Å⁻¹ (Monkhorst-Pack): 1×1×2 for the 30-atom Li₃YCl₆ cell
  (a = 11.2 Å, c = 6.0 Å), Γ only for its 1×1×2 supercell; enough for an insulator with a gap of
  several eV, and one irreducible k-point keeps a label within minutes. Raise it for metals.
* ``occupations`` Fermi-Dirac 0.05 eV: a small smearing that insulators do not feel and that
  keeps metallic snapshots converging.
* ``convergence`` forces 0.01 eV/Å (besides GPAW's energy, density and eigenstate criteria): the
  labels train forces, so their SCF error stays below the force errors the loop measures.
* ``maxiter`` 150 SCF iterations: a frame that does not converge by then is marked failed
  rather than holding the loop (GPAW's default is 333).
"""

GPAW_KEYS = frozenset(
    {
        "mode",
        "xc",
        "kpts",
        "basis",
        "convergence",
        "maxiter",
        "occupations",
        "mixer",
        "nbands",
        "spinpol",
        "magmoms",
        "charge",
        "symmetry",
        "setups",
        "eigensolver",
        "h",
        "gpts",
        "poissonsolver",
        "hund",
        "random",
        "interpolation",
    }
)
"""GPAW keywords a label may set (the labeller sets ``txt``; parallel runs are not supported)."""
GPAW_MODES = ("pw", "lcao", "fd")

VASP_DEFAULTS: dict = {
    "user_incar_settings": {
        "ISMEAR": 0,
        "SIGMA": 0.05,
        "ISIF": 2,
        "LCHARG": False,
        "LORBIT": None,
        "LWAVE": False,
    },
}
"""Changes to atomate2's static input set for labels: Gaussian smearing 0.05 eV (atomate2's
tetrahedron method, ISMEAR −5, gives forces that are not derivatives of the energy), ISIF 2 so
VASP computes the stress, and no charge density, projections or wavefunctions written."""
VASP_SETTINGS = frozenset(
    {
        "user_incar_settings",
        "user_kpoints_settings",
        "user_potcar_settings",
        "user_potcar_functional",
        "vdw",
        "run_vasp_kwargs",
    }
)
"""Keys of VASP settings: pymatgen's input-set fields (``vdw``: e.g. ``"optB88"``, the paper's
functional) and ``run_vasp_kwargs`` of atomate2's :func:`~atomate2.vasp.run.run_vasp`."""
EMT_SETTINGS = frozenset({"asap_cutoff"})

POSITION_DECIMALS = 6
"""Decimals kept of fractional coordinates (1e-6 of a lattice vector, ~1e-5 Å) in the key."""
CELL_DECIMALS = 6
"""Decimals kept of the cell vectors (Å) in the key."""


def canonical(value: object) -> object:
    """``value`` as plain JSON data: dict keys as sorted strings, tuples and arrays as lists,
    numpy scalars as Python numbers, integral floats as ints.

    Raises:
        TypeError: a value JSON cannot represent (e.g. an object or a non-finite float).
    """
    if isinstance(value, dict):
        return {str(k): canonical(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, list | tuple | np.ndarray):
        return [canonical(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or value is None or isinstance(value, str | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError(f"non-finite number {value!r}")
        return int(value) if value.is_integer() else value
    raise TypeError(f"{type(value).__name__} {value!r} is not JSON data")


def label_hash(atoms: Atoms, labeller: str, settings: dict) -> str:
    """sha256 (hex) of ``atoms`` (cell Å and fractional positions rounded, positions wrapped
    into the cell, species in site order, pbc), ``labeller`` and ``settings``
    (:func:`canonical`). Site order counts: forces are listed per site."""
    cell = np.round(atoms.cell.array, CELL_DECIMALS) + 0.0  # + 0.0 turns -0.0 into 0.0
    fractional = np.round(atoms.get_scaled_positions(wrap=True), POSITION_DECIMALS) % 1.0
    payload = {
        "cell": cell.tolist(),
        "fractional": (np.round(fractional, POSITION_DECIMALS) + 0.0).tolist(),
        "numbers": [int(n) for n in atoms.numbers],
        "pbc": [bool(p) for p in atoms.pbc],
        "labeller": labeller,
        "settings": canonical(settings),
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def ase_stress_to_vasp_kbar(stress: object) -> list[list[float]]:
    """ASE stress (Voigt xx yy zz yz xz xy or 3×3, eV/Å³, positive = tensile) as a 3×3 list in
    kbar with VASP's sign (positive = compressive)."""
    values = np.asarray(stress, dtype=np.float64)
    if values.shape == (6,):
        values = voigt_6_to_full_3x3_stress(values)
    if values.shape != (3, 3):
        raise ValueError(f"stress must be 6 Voigt values or 3×3, got shape {values.shape}")
    return (-values / KBAR).tolist()


def gpaw_mode_name(settings: dict) -> str:
    """``"pw"``, ``"lcao"`` or ``"fd"``: the GPAW mode of ``settings`` (GPAW's default: fd)."""
    mode = settings.get("mode", "fd")
    return str(mode.get("name") if isinstance(mode, dict) else mode).lower()


def _check_gpaw_kpts(kpts: object) -> None:
    """``kpts`` as a size (3 integers ≥ 1) or a dict with ``size`` or ``density`` (per Å⁻¹)."""
    if isinstance(kpts, dict):
        unknown = sorted(set(kpts) - {"size", "density", "gamma", "even"})
        if unknown or ("size" in kpts) == ("density" in kpts):
            raise GPTFFInputError(
                f"gpaw settings kpts: give 'size' or 'density' (k-points per "
                f"Å⁻¹) with optional 'gamma', got {kpts}"
            )
        if "density" in kpts:
            require_number("gpaw settings kpts.density", kpts["density"], "k-points per Å⁻¹")
            return
        kpts = kpts["size"]
    if not isinstance(kpts, list) or len(kpts) != 3:
        raise GPTFFInputError(f"gpaw settings kpts size must be 3 integers, got {kpts!r}")
    for n in kpts:
        require_int("gpaw settings kpts size", n)


def _check_gpaw(settings: dict) -> None:
    """GPAW installed with PAW setups, and ``settings`` it accepts (keys, mode, numbers)."""
    if importlib.util.find_spec("gpaw") is None:
        raise GPTFFInputError(
            "labeller 'gpaw' needs GPAW: run `make gpaw` (builds GPAW 26.7 "
            "without MPI and installs the PAW setups of gpaw-data)"
        )
    reserved = sorted(set(settings) & {"txt", "parallel", "communicator", "filename"})
    unknown = sorted(set(settings) - GPAW_KEYS - set(reserved))
    if reserved or unknown:
        raise GPTFFInputError(
            f"gpaw settings: {reserved or unknown} not accepted (the labeller "
            f"sets txt and runs serially); known: {sorted(GPAW_KEYS)}"
        )
    if gpaw_mode_name(settings) not in GPAW_MODES:
        raise GPTFFInputError(
            f"gpaw settings mode must be one of {GPAW_MODES}, got {settings.get('mode')!r}"
        )
    mode = settings.get("mode")
    if isinstance(mode, dict) and "ecut" in mode:
        require_number("gpaw settings mode.ecut", mode["ecut"], "eV")
    if "maxiter" in settings:
        require_int("gpaw settings maxiter", settings["maxiter"])
    if "kpts" in settings:
        _check_gpaw_kpts(settings["kpts"])
    width = (
        (settings.get("occupations") or {}).get("width")
        if isinstance(settings.get("occupations"), dict)
        else None
    )
    if width is not None:
        require_number("gpaw settings occupations.width", width, "eV", inclusive=True)
    if not isinstance(settings.get("xc", "LDA"), str | dict):
        raise GPTFFInputError(f"gpaw settings xc must be a name, got {settings['xc']!r}")


def check_settings(labeller: str, settings: dict) -> None:
    """Refuse resolved ``settings`` that ``labeller`` would reject, naming the key and unit.

    Raises:
        GPTFFInputError: the reason, and what to do.
    """
    if labeller == "gpaw":
        _check_gpaw(settings)
    elif labeller == "emt":
        unknown = sorted(set(settings) - EMT_SETTINGS)
        if unknown:
            raise GPTFFInputError(
                f"emt settings: {unknown} unknown; EMT takes {sorted(EMT_SETTINGS)}"
            )
    elif labeller == "vasp":
        if importlib.util.find_spec("atomate2") is None:
            raise GPTFFInputError("labeller 'vasp' needs atomate2: pip install 'gptff[flows]'")
        unknown = sorted(set(settings) - VASP_SETTINGS)
        if unknown:
            raise GPTFFInputError(
                f"vasp settings: {unknown} unknown; known: {sorted(VASP_SETTINGS)}"
            )
        for key in ("user_incar_settings", "user_kpoints_settings", "run_vasp_kwargs"):
            if not isinstance(settings.get(key, {}), dict):
                raise GPTFFInputError(f"vasp settings {key} must be a dict, got {settings[key]!r}")


def _field(obj, name: str):
    """``obj[name]`` of a dict or ``obj.name`` of a model; None when absent."""
    if obj is None:
        return None
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def _as_list(values) -> list | None:
    return None if values is None else np.asarray(values, dtype=float).tolist()


def task_document_label(task) -> dict:
    """``energy`` (eV, ``output.energy``: VASP's e_0_energy), ``forces`` (eV/Å), ``stress``
    (kbar, VASP sign), ``error`` (None when the task state is successful), ``structure``,
    ``code_version`` and ``wall_time_s`` (s, VASP's elapsed time; 0 when unknown) of atomate2's
    VASP task document ``task`` (a ``TaskDoc`` or its dict; None: the VASP job failed)."""
    from pymatgen.core import Structure

    output = _field(task, "output")
    state = _field(task, "state")
    state = getattr(state, "value", state)
    structure = _field(output, "structure")
    if isinstance(structure, dict):
        structure = Structure.from_dict(structure)
    values = {k: _field(output, k) for k in ("energy", "forces", "stress")}
    if task is None:
        error = "the VASP job failed (see its job in the store)"
    elif state != "successful":
        error = f"VASP task state {state!r} (SCF or run not converged)"
    elif values["energy"] is None or values["forces"] is None:
        error = "the VASP task document has no energy or forces"
    else:
        error = None
    calcs = _field(task, "calcs_reversed") or [None]
    version = _field(calcs[0], "vasp_version")
    overall = _field(_field(task, "run_stats"), "overall")
    return dict(
        energy=None if error else float(values["energy"]),
        forces=None if error else _as_list(values["forces"]),
        stress=None if error else _as_list(values["stress"]),
        error=error,
        structure=structure,
        code_version=f"vasp {version}" if version else "vasp unknown",
        wall_time_s=float(_field(overall, "elapsed_time") or 0.0),
    )
