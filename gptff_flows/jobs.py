"""GPTFF jobs for jobflow: atomate2's force-field Makers with GPTFF as the calculator.

Each Maker is atomate2's own (``ForceFieldStaticMaker``, ``ForceFieldRelaxMaker``,
``ForceFieldMDMaker``) with four extra fields — ``model``, ``dtype``, ``smooth``, ``device`` — that
become the :class:`~gptff_core.calculator.GPTFFCalculator` arguments, and a document that adds a
``gptff`` provenance block (:class:`~gptff_flows.schemas.GPTFFProvenance`) to atomate2's schema.

Units are atomate2's: energies eV, forces eV/Å, ``relax_kwargs["fmax"]`` eV/Å, MD ``time_step`` fs,
``temperature`` K, ``pressure`` kbar.

Any other atomate2 force-field flow (elastic, phonons, ...) runs with GPTFF through
:func:`gptff_force_field`::

    from atomate2.forcefields.flows.elastic import ElasticMaker
    spec = gptff_force_field(model="gptff-v2", dtype="float64")
    maker = ElasticMaker.from_force_field_name(*spec)
    static = ForceFieldStaticMaker(**spec._asdict())  # Makers take them as keywords
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import NamedTuple

from ase import units
from atomate2.ase.md import MDEnsemble
from atomate2.forcefields.jobs import ForceFieldRelaxMaker, ForceFieldStaticMaker, forcefield_job
from atomate2.forcefields.md import ForceFieldMDMaker
from atomate2.forcefields.utils import _FORCEFIELD_DATA_OBJECTS
from jobflow import job

from gptff_core.errors import GPTFFInputError
from gptff_core.pretrained import DEFAULT_MODEL
from gptff_flows.schemas import GPTFFProvenance, JobType, with_provenance

logger = logging.getLogger(__name__)

GPTFF_CALCULATOR = {"@module": "gptff_core.calculator", "@callable": "GPTFFCalculator"}
"""atomate2 ``force_field_name`` that loads :class:`~gptff_core.calculator.GPTFFCalculator`."""

DTYPES = ("float32", "float64")


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
    if not isinstance(model, str) or not model.strip():
        raise GPTFFInputError(f"model must be a registry name or checkpoint path, got {model!r}")
    if dtype not in DTYPES:
        raise GPTFFInputError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if smooth is not None and not isinstance(smooth, bool):
        raise GPTFFInputError(f"smooth must be True, False or None, got {smooth!r}")
    if not isinstance(device, str) or not device:
        raise GPTFFInputError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got {device!r}")
    options = dict(model=model, dtype=dtype, smooth=smooth, device=device)
    return ForceFieldSpec(dict(GPTFF_CALCULATOR), {**calculator_kwargs, **options})


@dataclass
class GPTFFOptions:
    """The GPTFF fields shared by every GPTFF Maker (a mix-in for atomate2's Makers).

    Args:
        model: registry name (``"gptff-v1"``, ``"gptff-v2"``) or checkpoint path.
        dtype: ``"float32"`` or ``"float64"`` (use float64 when comparing energies finely).
        smooth: C² cutoff envelopes; ``None`` keeps the checkpoint's setting (off for the
            published networks).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
    """

    model: str = DEFAULT_MODEL
    dtype: str = "float32"
    smooth: bool | None = None
    device: str = "cpu"

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
        if isinstance(getattr(self, "relax_kwargs", None), dict):
            # atomate2 otherwise appends every final structure to ./final_atoms_object.xyz
            self.relax_kwargs.setdefault("final_atoms_object_file", None)
        super().__post_init__()

    def _provenance(self, job_type: JobType) -> GPTFFProvenance:
        """Provenance of the calculator this Maker has just used."""
        return GPTFFProvenance.from_calculator(self.calculator, job_type, self.model)


@dataclass
class GPTFFStaticMaker(GPTFFOptions, ForceFieldStaticMaker):
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
class GPTFFRelaxMaker(GPTFFOptions, ForceFieldRelaxMaker):
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
class GPTFFMDMaker(GPTFFOptions, ForceFieldMDMaker):
    """Molecular dynamics with GPTFF: NVE, NVT or NPT as atomate2 offers them.

    ``ensemble`` ``"nve"``, ``"nvt"`` (Langevin by default) or ``"npt"``; ``time_step`` in fs,
    ``temperature`` in K, ``pressure`` in kbar, ``n_steps`` steps. The trajectory goes to the
    job store's ``"data"`` store. For long runs pass ``calculator_kwargs={"skin": 1.0}`` (Å) to
    reuse neighbour lists. Returns a :class:`~gptff_flows.schemas.GPTFFTaskDocument`.
    """

    name: str = "GPTFF MD"
    calculator_kwargs: dict = field(default_factory=dict)

    def _get_ensemble_defaults(self) -> None:
        """atomate2's defaults, plus the damping times its default NPT (MTKNPT) requires.

        ``tdamp`` and ``pdamp`` default to 100 and 1000 time steps (ASE's advice; 2 fs steps
        when ``time_step`` is None); set them in ``ase_md_kwargs`` (ASE time units) to override.
        """
        super()._get_ensemble_defaults()
        if self.ensemble == MDEnsemble.npt and self.dynamics == "nose-hoover-chain":
            step = (self.time_step or 2.0) * units.fs
            self.ase_md_kwargs.setdefault("tdamp", 100 * step)
            self.ase_md_kwargs.setdefault("pdamp", 1000 * step)

    @job(data=[*_FORCEFIELD_DATA_OBJECTS, "ionic_steps"])
    def make(self, structure, prev_dir=None):
        """Job running MD from ``structure``."""
        doc = ForceFieldMDMaker.make.original(self, structure, prev_dir=prev_dir)
        return with_provenance(doc, self._provenance("md"))
