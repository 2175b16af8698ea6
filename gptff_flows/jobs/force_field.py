"""GPTFF jobs for jobflow: atomate2's force-field Makers with GPTFF as the calculator.

Each Maker is atomate2's own (``ForceFieldStaticMaker``, ``ForceFieldRelaxMaker``,
``ForceFieldMDMaker``) with four extra fields — ``model``, ``dtype``, ``smooth``, ``device`` — that
become the :class:`~gptff_core.calculator.GPTFFCalculator` arguments, and a document that adds a
``gptff`` provenance block (:class:`~gptff_flows.schemas.GPTFFProvenance`) to atomate2's schema.

Units are atomate2's: energies eV, forces eV/Å, ``relax_kwargs["fmax"]`` eV/Å, MD ``time_step`` fs,
``temperature`` K, ``pressure`` kbar.

``smooth=None`` keeps the checkpoint's setting (off for the published networks); the provenance
records the setting the network actually ran with. An MD run that fails part-way keeps its frames
and the cause in the store (:mod:`gptff_flows.failures`) and fails with a message naming the
cause. :func:`require_periodic` refuses a structure without a 3D periodic cell (the MD flows use
it before any work).

Any other atomate2 force-field flow (elastic, phonons, ...) runs with GPTFF through
:func:`gptff_force_field`::

    from atomate2.forcefields.flows.elastic import ElasticMaker
    spec = gptff_force_field(model="gptff-v2", dtype="float64")
    maker = ElasticMaker.from_force_field_name(*spec)
    static = ForceFieldStaticMaker(**spec._asdict())  # Makers take them as keywords
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import import_module
from typing import ClassVar, NamedTuple

import numpy as np
from ase import units
from ase.md.md import MolecularDynamics
from ase.md.npt import NPT
from atomate2.ase.md import DynamicsPresets, MDEnsemble
from atomate2.ase.schemas import AseResult
from atomate2.forcefields.jobs import ForceFieldRelaxMaker, ForceFieldStaticMaker, forcefield_job
from atomate2.forcefields.md import ForceFieldMDMaker
from atomate2.forcefields.utils import _FORCEFIELD_DATA_OBJECTS
from jobflow import JobConfig, job
from pymatgen.core import Structure
from pymatgen.core.trajectory import Trajectory

from gptff_core.errors import ComputationError, GPTFFInputError
from gptff_core.pretrained import DEFAULT_MODEL
from gptff_flows.failures import failure_document, store_failure
from gptff_flows.jobs.md import ProgressLog, ThermoObserver
from gptff_flows.options import GPTFFOptions, check_gptff_options
from gptff_flows.schemas.base import GPTFFProvenance, JobType, with_provenance
from gptff_flows.schemas.md_trajectory import add_thermo

logger = logging.getLogger(__name__)

GPTFF_CALCULATOR = {"@module": "gptff_core.calculator", "@callable": "GPTFFCalculator"}
"""atomate2 ``force_field_name`` that loads :class:`~gptff_core.calculator.GPTFFCalculator`."""


class ForceFieldSpec(NamedTuple):
    """The two arguments atomate2's force-field Makers take to use GPTFF."""

    force_field_name: dict
    calculator_kwargs: dict


def gptff_force_field(
    model: str = DEFAULT_MODEL,
    dtype: str = "float32",
    smooth: bool | None = None,
    device: str = "cpu",
    **calculator_kwargs,
) -> ForceFieldSpec:
    """``(force_field_name, calculator_kwargs)`` that make any atomate2 force-field Maker use GPTFF.

    Args:
        model: registry name (``"gptff-v1"``, ``"gptff-v2"``) or checkpoint path.
        dtype: ``"float32"`` or ``"float64"``.
        smooth: C² cutoff envelopes; ``None`` keeps the checkpoint's setting.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
        **calculator_kwargs: further :class:`~gptff_core.calculator.GPTFFCalculator` arguments,
            e.g. ``skin=1.0`` (Å) for MD.

    Raises:
        GPTFFInputError: a field has a value GPTFF does not accept (the message names it).
    """
    check_gptff_options(model, dtype, smooth, device)
    options = dict(model=model, dtype=dtype, smooth=smooth, device=device)
    return ForceFieldSpec(dict(GPTFF_CALCULATOR), {**calculator_kwargs, **options})


@dataclass
class ForceFieldOptions(GPTFFOptions):
    """:class:`~gptff_flows.options.GPTFFOptions` wired into atomate2's force-field Makers: the
    fields become ``force_field_name`` and ``calculator_kwargs``."""

    supports_dispersion: ClassVar[bool] = True

    def __post_init__(self) -> None:
        spec = gptff_force_field(self.model, self.dtype, self.smooth, self.device)
        for key, value in spec.calculator_kwargs.items():
            given = self.calculator_kwargs.get(key, value)
            if given != value:
                raise GPTFFInputError(
                    f"calculator_kwargs[{key!r}]={given!r} contradicts {key}={value!r}; "
                    f"set the Maker's {key} field instead"
                )
        self.force_field_name = spec.force_field_name
        self.calculator_meta = None
        self.calculator_kwargs = {**self.calculator_kwargs, **spec.calculator_kwargs}
        if self.dispersion:  # D3(BJ) in every calculator atomate2 builds from these kwargs
            self.calculator_kwargs["dispersion"] = True
        if isinstance(getattr(self, "relax_kwargs", None), dict):
            # atomate2 otherwise appends every final structure to ./final_atoms_object.xyz
            self.relax_kwargs.setdefault("final_atoms_object_file", None)
        super().__post_init__()

    def _provenance(self, job_type: JobType) -> GPTFFProvenance:
        """Provenance of the calculator this Maker has just used."""
        return GPTFFProvenance.from_calculator(self.calculator, job_type, self.model)


@dataclass
class GPTFFStaticMaker(ForceFieldOptions, ForceFieldStaticMaker):
    """Energy, forces and stress of a structure with GPTFF (atomate2's static job).

    Returns a :class:`~gptff_flows.schemas.GPTFFTaskDocument` (eV, eV/Å). See
    :class:`GPTFFOptions` for ``model``, ``dtype``, ``smooth``, ``device``.
    """

    name: str = "GPTFF static"

    @forcefield_job
    def make(self, structure, prev_dir=None):
        """Job computing energy (eV), forces (eV/Å) and stress of ``structure``."""
        doc = ForceFieldStaticMaker.make.original(self, structure, prev_dir=prev_dir)
        return with_provenance(doc, self._provenance("static"))


@dataclass
class GPTFFRelaxMaker(ForceFieldOptions, ForceFieldRelaxMaker):
    """Relax positions and (``relax_cell=True``, default) the cell with GPTFF.

    atomate2's relaxation: FIRE on a ``FrechetCellFilter``, ``relax_kwargs={"fmax": 0.1}`` eV/Å
    by default, at most ``steps`` steps. Returns a
    :class:`~gptff_flows.schemas.GPTFFTaskDocument`; ``is_force_converged`` says whether fmax
    was reached.
    """

    name: str = "GPTFF relax"

    @forcefield_job
    def make(self, structure, prev_dir=None):
        """Job relaxing ``structure``; energies in eV."""
        doc = ForceFieldRelaxMaker.make.original(self, structure, prev_dir=prev_dir)
        return with_provenance(doc, self._provenance("relax"))


@dataclass
class GPTFFMDMaker(ForceFieldOptions, ForceFieldMDMaker):
    """Molecular dynamics with GPTFF: NVE, NVT or NPT as atomate2 offers them.

    ``ensemble`` ``"nve"``, ``"nvt"`` (Langevin by default) or ``"npt"``; ``time_step`` in fs,
    ``temperature`` in K, ``pressure`` in kbar, ``n_steps`` steps. The trajectory (atomate2's
    pymatgen ``Trajectory``, a frame every ``traj_interval`` steps, with GPTFF's kinetic energy
    and, where the run has one, conserved energy per frame:
    :mod:`gptff_flows.schemas.md_trajectory`) goes to the job store's ``"data"`` store. For long
    runs pass ``calculator_kwargs={"skin": 1.0}`` (Å) to reuse neighbour lists. Returns a
    :class:`~gptff_flows.schemas.GPTFFTaskDocument`.

    ASE's Nosé–Hoover-chain integrators (``NoseHooverChainNVT``, the default NPT ``MTKNPT``)
    keep the targets they are built with, so they take one temperature and pressure, not a
    schedule (refused before the run).

    A run that fails part-way (GPTFF refuses a collapsed structure, a non-finite energy or
    position) is not lost: the job stores a :class:`~gptff_flows.failures.MDFailureDocument`
    (cause, steps completed, trajectory so far) as a document of its own named
    ``"<job name> (failed)"``, then fails with a :class:`~gptff_core.errors.ComputationError`
    naming the cause, so the flow fails too and no later job takes a half run for a result.
    """

    name: str = "GPTFF MD"

    def _get_ensemble_defaults(self) -> None:
        """atomate2's defaults, plus what ASE 3.29's NPT integrators require (:func:`_npt_defaults`:
        ``pressure`` 0 kbar when not given, MTK damping times, Berendsen compressibility).
        The integrator is then wrapped by :func:`_watched` (atomate2 calls this method just
        before it builds the integrator).

        Raises:
            GPTFFInputError: a temperature or pressure schedule that varies, for an integrator
                that keeps the targets it was built with (:func:`_require_fixed_targets`).
        """
        npt = self.ensemble == MDEnsemble.npt
        if npt and any(p is None for p in np.atleast_1d(self.p_schedule)):
            self.p_schedule = np.zeros(self.n_steps + 1)  # kbar; atomate2 fails on None
        super()._get_ensemble_defaults()
        base = _dynamics_class(self.dynamics, self.ensemble)
        if npt and base is not None:
            _npt_defaults(getattr(base, "_gptff_base", base), self)
        if base is not None:
            _require_fixed_targets(getattr(base, "_gptff_base", base), self)
            self.dynamics = _watched(base, self)

    @job(data=[*_FORCEFIELD_DATA_OBJECTS, "ionic_steps"], config=JobConfig(expose_store=True))
    def make(self, structure, prev_dir=None):
        """Job running MD from ``structure`` (:meth:`run_ase`); see the class for what a failed
        run leaves."""
        doc = ForceFieldMDMaker.make.original(self, structure, prev_dir=prev_dir)
        return with_provenance(doc, self._provenance("md"))

    def run_ase(self, mol_or_struct, prev_dir=None) -> AseResult:
        """atomate2's MD run, whose pymatgen trajectory gains each frame's ``step``,
        ``kinetic_energy`` and (NVE, Nosé–Hoover chain, MTK) ``conserved_energy`` (eV)
        (:func:`~gptff_flows.schemas.md_trajectory.add_thermo`).

        Raises:
            ComputationError: the run failed part-way; its frames so far and the cause are kept
                (:meth:`md_failure`).
        """
        dynamics, self._md_runner, self._thermo = self.dynamics, None, None
        try:
            result = super().run_ase(mol_or_struct, prev_dir=prev_dir)
        except Exception as error:
            if self._md_runner is None:
                raise  # failed before the MD started: nothing to keep
            raise self.md_failure(mol_or_struct, error) from error
        finally:
            self.dynamics = dynamics
        if isinstance(result.trajectory, Trajectory) and self._thermo is not None:
            add_thermo(result.trajectory, self._thermo, self.time_step)
        return result

    def observe(self, runner: MolecularDynamics) -> None:
        """Attach GPTFF's observers to ``runner``, the integrator atomate2 has just built (its
        trajectory observer comes next, at ``traj_interval``): a
        :class:`~gptff_flows.jobs.md.ThermoObserver` at ``traj_interval`` (kept as
        ``self._thermo``) and a :class:`~gptff_flows.jobs.md.ProgressLog` every tenth of the
        run; ``runner`` is kept as ``self._md_runner`` so a failed run's frames can be kept."""
        self._md_runner = runner
        self._thermo = ThermoObserver(runner, hamiltonian=self.ensemble == MDEnsemble.nve)
        runner.attach(self._thermo, interval=self.traj_interval)
        progress = ProgressLog(runner, self.n_steps, type(runner).__name__)
        runner.attach(progress, interval=max(1, self.n_steps // 10))

    def md_failure(self, structure, error: BaseException) -> ComputationError:
        """Keep what the failed run produced (a
        :class:`~gptff_flows.failures.MDFailureDocument` with the frames of atomate2's
        trajectory observer so far, stored when run as a jobflow job) and return the error to
        raise, naming the cause."""
        runner = getattr(self, "_md_runner", None)
        doc = failure_document(self, structure, error, runner)
        uuid = store_failure(doc)
        where = (
            f"stored as '{doc.job_name} (failed)' (uuid {uuid})"
            if uuid
            else "not stored (no job store: run it as a jobflow job)"
        )
        failure = ComputationError(
            f"MD failed after {doc.steps_completed} of {doc.n_steps} steps: {doc.error}. The "
            f"trajectory up to the failure ({doc.n_frames} frames) and the cause are {where}"
        )
        failure.document = doc
        return failure


def _dynamics_class(dynamics, ensemble) -> type | None:
    """The ASE integrator class atomate2 would build for ``dynamics`` (a preset name, a
    :class:`DynamicsPresets` or a class); None when atomate2 will refuse it anyway."""
    if isinstance(dynamics, type) and issubclass(dynamics, MolecularDynamics):
        return dynamics
    if isinstance(dynamics, str):
        key = f"{MDEnsemble(ensemble).value}_{dynamics.lower().replace('-', '_')}"
        dynamics = DynamicsPresets.__members__.get(key)
    if isinstance(dynamics, DynamicsPresets):
        module, _, name = dynamics.value.rpartition(".")
        return getattr(import_module(module), name)
    return None


NPT_COMPRESSIBILITY_AU = 1 / (100 * units.GPa)
"""Å³/eV: the compressibility Berendsen NPT is given when ``ase_md_kwargs`` has none (a solid of
100 GPa bulk modulus); it sets only how fast the volume relaxes (with ``taup``), not where to."""


def _npt_defaults(base: type, maker: GPTFFMDMaker) -> None:
    """Fill in the ``ase_md_kwargs`` ASE 3.29's NPT integrator ``base`` requires and atomate2
    leaves out (the user's values win): MTK (``MTKNPT``, ``IsotropicMTKNPT``) ``tdamp`` = 100 and
    ``pdamp`` = 1000 time steps (ASE's advice; ASE time units; 2 fs steps when ``time_step`` is
    None); Berendsen (``NPTBerendsen``, ``Inhomogeneous_NPTBerendsen``) ``compressibility_au`` =
    :data:`NPT_COMPRESSIBILITY_AU` (Å³/eV; its ``taut`` 0.5 ps and ``taup`` 1 ps are ASE's)."""
    kwargs, step = maker.ase_md_kwargs, (maker.time_step or 2.0) * units.fs
    if base.__module__ == "ase.md.nose_hoover_chain":
        kwargs.setdefault("tdamp", 100 * step)
        kwargs.setdefault("pdamp", 1000 * step)
    elif base.__module__ == "ase.md.nptberendsen" and "compressibility" not in kwargs:
        kwargs.setdefault("compressibility_au", NPT_COMPRESSIBILITY_AU)


def _require_fixed_targets(base: type, maker: GPTFFMDMaker) -> None:
    """Refuse a temperature or pressure schedule that varies when ``base`` is one of ASE's
    Nosé–Hoover-chain integrators (``NoseHooverChainNVT``, ``IsotropicMTKNPT``, ``MTKNPT``):
    they have no public way to change their targets once built, so atomate2's per-step
    update would be lost (``NoseHooverChainNVT`` has no ``set_temperature``; the MTK
    integrators ignore the attributes atomate2 sets). Schedules in K and kbar."""
    if base.__module__ != "ase.md.nose_hoover_chain":
        return
    for name in ("t_schedule", "p_schedule"):
        schedule = getattr(maker, name, None)
        if isinstance(schedule, np.ndarray) and np.isfinite(schedule).all():
            if np.ptp(schedule) > 0:
                quantity = "temperature" if name == "t_schedule" else "pressure"
                raise GPTFFInputError(
                    f"{quantity} must be one value with {base.__name__}, which keeps the target "
                    f"it starts with; got a schedule from {schedule[0]:g} to {schedule[-1]:g}. "
                    "Use dynamics='langevin' (NVT) or 'berendsen' for a ramp"
                )


def _keep_target(self, temperature_K=None, **_) -> None:
    """``set_temperature`` for an integrator without one (ASE's ``NoseHooverChainNVT``):
    atomate2 calls it every step with the target of its schedule, which
    :func:`_require_fixed_targets` has checked is the one the integrator was built with."""


def _watched(base: type, maker: GPTFFMDMaker) -> type:
    """``base`` (an ASE integrator) as a subclass that hands its instance to ``maker``
    (:meth:`GPTFFMDMaker.observe`: GPTFF's observers, and the run kept so a failed run's frames
    can be stored) and refuses non-finite positions or energies after every step."""
    base = getattr(base, "_gptff_base", base)

    class Watched(base):
        _gptff_base = base

        def __init__(self, atoms, *args, **kwargs):
            if issubclass(base, NPT):  # atomate2 does this for `dynamics is NPT` only
                atoms.set_cell(atoms.cell.standard_form(form="upper")[0])
            super().__init__(atoms, *args, **kwargs)
            self.attach(self._require_finite, interval=1)
            maker.observe(self)

        def _require_finite(self):
            atoms = self.atoms
            if not np.isfinite(atoms.positions).all():
                raise ComputationError(f"non-finite atomic positions at MD step {self.nsteps}")
            if not np.isfinite(atoms.get_potential_energy()):
                raise ComputationError(f"non-finite energy at MD step {self.nsteps}")

    if not hasattr(base, "set_temperature"):
        Watched.set_temperature = _keep_target
    Watched.__name__ = base.__name__
    Watched.__qualname__ = base.__qualname__
    return Watched


def require_periodic(structure, label: str = "structure") -> None:
    """Refuse ``structure`` unless it is a pymatgen Structure periodic along a, b and c with a
    cell of non-zero volume (Å³): MD and diffusion of a crystal need one.

    Raises:
        GPTFFInputError: a molecule, a non-periodic or degenerate cell (the message says what
            to give instead).
    """
    if not isinstance(structure, Structure):
        raise GPTFFInputError(
            f"{label} must be a pymatgen Structure (a periodic crystal), got "
            f"{type(structure).__name__}"
        )
    lattice = structure.lattice
    if not all(lattice.pbc) or not abs(lattice.volume) > 1e-6:
        raise GPTFFInputError(
            f"{label} {structure.composition.reduced_formula} has no 3D periodic cell (a "
            "molecule?); this workflow simulates a crystal: give a structure with a cell (CIF, "
            "POSCAR, extxyz with a Lattice)"
        )
