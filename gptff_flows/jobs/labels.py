"""First-principles labels as jobflow jobs: GPAW and EMT in-process, VASP through atomate2.

* :func:`label_structure` — energy (eV), forces (eV/Å) and stress (kbar, VASP sign) of one
  structure with ``"emt"`` (ASE's EMT: tests only, but real) or ``"gpaw"`` (GPAW, PAW setups
  from ``gpaw-data``, found automatically; install with ``make gpaw``), in a temporary
  directory, as a :class:`~gptff_flows.schemas.labels.LabelDocument`. A calculation that fails
  (SCF not converged) gives ``converged=False`` and the ``error``; it never raises.
* :func:`label_job` — that as a jobflow job; :func:`make_label` — the job, or for ``"vasp"``
  atomate2's VASP :class:`~atomate2.vasp.jobs.core.StaticMaker` job followed by
  :func:`vasp_label_job`, which turns its task document into a label.
* :func:`frame_key` — sha256 of structure + labeller + settings (defaults merged), by which a
  loop finds a label it already has; :func:`check_labeller` — refuses bad input before work.

Settings are JSON dicts: GPAW's keywords (``mode`` with ``ecut`` eV, ``kpts`` with ``density``
in k-points per Å⁻¹, ``occupations`` width eV, ``convergence``, ``maxiter``, ``xc``) merged over
:data:`GPAW_DEFAULTS`; for VASP pymatgen's input-set fields (:data:`VASP_SETTINGS`) merged over
:data:`VASP_DEFAULTS`; EMT takes ``asap_cutoff`` only.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from ase import Atoms
from jobflow import Flow, Job, OnMissing, job
from pymatgen.core import Structure
from pymatgen.io.ase import AseAtomsAdaptor

from gptff_core.errors import GPTFFInputError, StructureError
from gptff_flows.analysis.labels import (
    GPAW_DEFAULTS,
    VASP_DEFAULTS,
    VASP_SETTINGS,
    ase_stress_to_vasp_kbar,
    canonical,
    check_settings,
    gpaw_mode_name,
    label_hash,
    task_document_label,
)
from gptff_flows.schemas.base import formula_fields
from gptff_flows.schemas.labels import LabelDocument

logger = logging.getLogger(__name__)

__all__ = [
    "GPAW_DEFAULTS",
    "LABELLERS",
    "VASP_DEFAULTS",
    "VASP_SETTINGS",
    "check_labeller",
    "frame_key",
    "label_job",
    "label_structure",
    "make_label",
    "resolve_settings",
    "vasp_label_job",
]

LABELLERS = ("emt", "gpaw", "vasp")
"""Labellers by name: ASE's EMT (tests), GPAW (in-process DFT), VASP (atomate2, HPC)."""


def resolve_settings(labeller: str, settings: dict | None) -> dict:
    """The settings a label is computed with: ``settings`` over the labeller's defaults (one
    level deep; VASP's ``user_incar_settings`` merged key by key), as canonical JSON data.

    Raises:
        GPTFFInputError: unknown labeller, settings not a dict of JSON data.
    """
    if labeller not in LABELLERS:
        raise GPTFFInputError(f"labeller must be one of {', '.join(LABELLERS)}, got {labeller!r}")
    if settings is not None and not isinstance(settings, dict):
        raise GPTFFInputError(f"labeller settings must be a dict, got {type(settings).__name__}")
    try:
        given = canonical(dict(settings or {}))
    except TypeError as exc:
        raise GPTFFInputError(f"labeller settings must be JSON data: {exc}") from None
    if labeller == "gpaw":
        return {**canonical(GPAW_DEFAULTS), **given}
    if labeller == "vasp":
        incar = {**VASP_DEFAULTS["user_incar_settings"], **given.get("user_incar_settings", {})}
        return canonical({**VASP_DEFAULTS, **given, "user_incar_settings": incar})
    return given


def _atoms(structure) -> Atoms:
    """A bare periodic copy of ``structure`` (Structure, its dict, or Atoms): numbers,
    positions (Å), cell (Å), pbc; no calculator, magnetic moments or site properties."""
    if isinstance(structure, dict):
        structure = Structure.from_dict(structure)
    if isinstance(structure, Structure):
        if not structure.is_ordered:
            raise StructureError(f"{structure.formula}: order the partial occupancies first")
        structure = AseAtomsAdaptor.get_atoms(structure)
    if not isinstance(structure, Atoms):
        raise StructureError(
            f"a structure must be a pymatgen Structure or ASE Atoms, got {type(structure).__name__}"
        )
    if not structure.pbc.all() or structure.cell.rank != 3:
        raise StructureError("labels need a cell periodic in all three directions")
    return Atoms(
        numbers=structure.numbers,
        positions=structure.positions,
        cell=structure.cell.array,
        pbc=True,
    )


def frame_key(structure, labeller: str, settings: dict | None) -> str:
    """sha256 (hex) of the structure (cell Å and fractional positions rounded to 1e-6, species
    in site order), ``labeller`` and its settings with defaults merged (:func:`resolve_settings`),
    so a label asked for with ``None`` and with the defaults spelled out share a key."""
    return label_hash(_atoms(structure), labeller, resolve_settings(labeller, settings))


def check_labeller(labeller: str, settings: dict | None, *, structure=None) -> None:
    """Refuse, before any work, what cannot be labelled: an unknown labeller, GPAW or
    atomate2 not installed, no PAW setups, settings GPAW/VASP/EMT would reject (names the key
    and unit), and with ``structure`` elements EMT or the PAW setups do not cover.

    Raises:
        GPTFFInputError: the reason, and what to do.
    """
    resolved = resolve_settings(labeller, settings)
    check_settings(labeller, resolved)
    if structure is None:
        return
    symbols = sorted(set(_atoms(structure).get_chemical_symbols()))
    if labeller == "emt":
        from ase.calculators.emt import parameters

        missing = [s for s in symbols if s not in parameters]
        if missing:
            raise GPTFFInputError(
                f"EMT has no parameters for {missing}; it covers {', '.join(sorted(parameters))}"
            )
    elif labeller == "gpaw" and "setups" not in resolved:
        _check_gpaw_setups(symbols, resolved)


def _check_gpaw_setups(symbols: list[str], settings: dict) -> None:
    """Every element in ``symbols`` has a PAW setup on GPAW's search path, and in LCAO mode the
    basis set named by ``basis`` (``"dzp"``, or ``"sz(dzp)"`` reduced from the dzp file)."""
    import gpaw

    paths = [Path(p) for p in gpaw.setup_paths]

    def found(pattern: str, basis: bool = False) -> bool:
        return any(basis or ".basis" not in f.name for p in paths for f in p.glob(pattern))

    missing = [s for s in symbols if not found(f"{s}.*")]
    basis = settings.get("basis", "dzp")
    if gpaw_mode_name(settings) == "lcao" and isinstance(basis, str):
        name = basis[basis.index("(") + 1 : -1] if "(" in basis else basis
        missing += [f"{s} basis {name}" for s in symbols if not found(f"{s}.{name}.basis*", True)]
    if missing:
        raise GPTFFInputError(
            f"no GPAW PAW setup or basis set for {missing} in {[str(p) for p in paths]}: "
            "install gpaw-data (make gpaw) or point GPAW_SETUP_PATH at a setups directory"
        )


def _code_version(labeller: str) -> str:
    """'<code> <version>' of the labeller (GPAW with its PAW data set)."""
    from importlib import metadata

    if labeller == "gpaw":
        import gpaw

        try:
            data = f"; gpaw-data {metadata.version('gpaw-data')}"
        except metadata.PackageNotFoundError:
            data = "; setups from GPAW_SETUP_PATH"
        return f"gpaw {gpaw.__version__}{data}"
    return f"ase {metadata.version('ase')}"


def _calculator(labeller: str, settings: dict, log: Path):
    """The ASE calculator of ``labeller`` with ``settings``; GPAW's text log goes to ``log``."""
    if labeller == "gpaw":
        from gpaw import GPAW

        return GPAW(**settings, txt=str(log))
    from ase.calculators.emt import EMT

    return EMT(**settings)


@contextmanager
def _directory(workdir: str | Path | None):
    """``workdir`` (created) or a temporary directory removed afterwards."""
    if workdir is not None:
        Path(workdir).mkdir(parents=True, exist_ok=True)
        yield Path(workdir)
        return
    with tempfile.TemporaryDirectory(prefix="gptff-label-") as tmp:
        yield Path(tmp)


def _failure_message(exc: Exception, settings: dict) -> str:
    """One line saying why a calculation failed (SCF not converged named as such)."""
    text = f"{type(exc).__name__}: {exc}".rstrip(": ")
    if "ConvergenceError" in type(exc).__name__:
        limit = settings.get("maxiter", "GPAW's default")
        text += f" (SCF not converged within maxiter={limit})"
    return text


def _compute(atoms: Atoms, labeller: str, settings: dict, log: Path) -> dict:
    """Energy, forces and stress of ``atoms`` (ASE units); raises what the calculator raises."""
    atoms.calc = _calculator(labeller, settings, log)
    energy = float(atoms.get_potential_energy())
    forces = np.asarray(atoms.get_forces(), dtype=float)
    has_stress = labeller == "emt" or gpaw_mode_name(settings) == "pw"
    stress = np.asarray(atoms.get_stress(voigt=True), dtype=float) if has_stress else None
    values = [energy, *forces.ravel(), *([] if stress is None else stress)]
    if not all(math.isfinite(v) for v in values):
        raise FloatingPointError("non-finite energy, forces or stress")
    return dict(
        energy=energy,
        forces=forces.tolist(),
        stress=None if stress is None else ase_stress_to_vasp_kbar(stress),
    )


def label_structure(
    structure, labeller: str, settings: dict | None = None, *, workdir: str | Path | None = None
) -> LabelDocument:
    """Label ``structure`` (pymatgen Structure or ASE Atoms, Å) in this process with ``"emt"``
    or ``"gpaw"`` (settings over :data:`GPAW_DEFAULTS`; stress only in PW mode).

    Runs in a temporary directory (or ``workdir``, where GPAW's log ``gpaw-<key>.txt`` stays).
    A calculation that fails (GPAW's SCF not converged within ``maxiter``, a non-finite result,
    any error of the code) returns ``converged=False`` with the ``error``, without raising.

    Raises:
        GPTFFInputError: before any work, for what :func:`check_labeller` refuses, or ``"vasp"``
            (it runs through atomate2: :func:`make_label`).
    """
    atoms = _atoms(structure)
    if labeller == "vasp":
        raise GPTFFInputError("VASP labels run as atomate2 jobs: use make_label(..., 'vasp')")
    resolved = resolve_settings(labeller, settings)
    check_labeller(labeller, resolved, structure=atoms)
    key, version = label_hash(atoms, labeller, resolved), _code_version(labeller)
    result, error = dict(energy=None, forces=None, stress=None), None
    with _directory(workdir) as directory:
        start = time.perf_counter()
        try:
            result = _compute(atoms.copy(), labeller, resolved, directory / f"gpaw-{key[:16]}.txt")
        except Exception as exc:  # a failed label is recorded, never raised
            error = _failure_message(exc, resolved)
            logger.warning(
                "%s label of %s failed: %s", labeller, atoms.get_chemical_formula(), error
            )
        wall = time.perf_counter() - start
    return LabelDocument(
        **formula_fields(AseAtomsAdaptor.get_structure(atoms)),
        structure=AseAtomsAdaptor.get_structure(atoms),
        **result,
        labeller=labeller,
        settings=resolved,
        code_version=version,
        frame_key=key,
        converged=error is None,
        error=error,
        wall_time_s=wall,
    )


@job(output_schema=LabelDocument)
def label_job(structure, labeller: str, settings: dict | None = None) -> LabelDocument:
    """:func:`label_structure` as a jobflow job (``"emt"`` or ``"gpaw"``)."""
    return label_structure(structure, labeller, settings)


@job(output_schema=LabelDocument)
def vasp_label_job(task_document, structure, settings: dict, key: str) -> LabelDocument:
    """A :class:`LabelDocument` from atomate2's VASP task document (``output.energy`` eV =
    e_0_energy, ``output.forces`` eV/Å, ``output.stress`` kbar VASP sign, all unchanged):
    :func:`~gptff_flows.analysis.labels.task_document_label`. ``task_document`` is None when
    the VASP job failed (this job runs anyway): a failed label. ``structure`` is the one asked
    for; the document keeps VASP's (pymatgen's input set sorts the sites)."""
    found = task_document_label(task_document)
    computed = found.pop("structure") or _structure(structure)
    return LabelDocument(
        **formula_fields(computed),
        structure=computed,
        **found,
        labeller="vasp",
        settings=settings,
        frame_key=key,
        converged=found["error"] is None,
    )


def _structure(structure) -> Structure:
    """``structure`` as a pymatgen Structure (via the bare periodic atoms)."""
    return AseAtomsAdaptor.get_structure(_atoms(structure))


def _vasp_flow(structure: Structure, settings: dict, key: str, name: str) -> Flow:
    """atomate2's VASP static job, then :func:`vasp_label_job` (runs even if VASP failed)."""
    from atomate2.vasp.jobs.core import StaticMaker
    from atomate2.vasp.sets.core import StaticSetGenerator

    generator = StaticSetGenerator(**{k: v for k, v in settings.items() if k != "run_vasp_kwargs"})
    static = StaticMaker(
        name=f"{name} static",
        input_set_generator=generator,
        run_vasp_kwargs=settings.get("run_vasp_kwargs", {}),
        stop_children_kwargs={"handle_unsuccessful": False},  # the label job records it
    ).make(structure)
    label = vasp_label_job(static.output, structure, settings, key)
    label.name = name
    label.config.on_missing_references = OnMissing.NONE
    return Flow([static, label], output=label.output, name=name)


def make_label(
    structure, labeller: str, settings: dict | None = None, name: str | None = None
) -> Job | Flow:
    """The job (``"emt"``, ``"gpaw"``: :func:`label_job`) or flow (``"vasp"``: atomate2's
    static job then :func:`vasp_label_job`) whose ``.output`` is a :class:`LabelDocument`.

    Input is checked here, before any work; the job's ``metadata["frame_key"]`` is the label's
    :func:`frame_key`, so a store query finds labels computed already.

    Raises:
        GPTFFInputError: what :func:`check_labeller` refuses.
    """
    pymatgen_structure = _structure(structure)
    resolved = resolve_settings(labeller, settings)
    check_labeller(labeller, resolved, structure=pymatgen_structure)
    key = label_hash(_atoms(pymatgen_structure), labeller, resolved)
    name = name or f"label {labeller} {pymatgen_structure.composition.reduced_formula}"
    if labeller == "vasp":
        made = _vasp_flow(pymatgen_structure, resolved, key, name)
        for item in made.jobs:
            item.metadata["frame_key"] = key
        return made
    made = label_job(pymatgen_structure, labeller, resolved)
    made.name = name
    made.metadata["frame_key"] = key
    return made
