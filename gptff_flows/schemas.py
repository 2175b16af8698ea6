"""Output documents of the GPTFF Makers (pydantic), with the unit of every number in its field.

* :class:`GPTFFProvenance` — which network produced a result: model name, checkpoint path and
  sha256, dtype, smooth flag, device and the ``gptff`` package version.
* :class:`GPTFFTaskDocument` — atomate2's ``ForceFieldTaskDocument`` unchanged (energies in eV,
  forces in eV/Å, stress as atomate2 stores it) plus a ``gptff`` provenance block; static, relax and
  MD jobs return it.
* :class:`GPTFFEosDocument` — the result of :class:`~gptff_flows.flows.eos.GPTFFEosMaker`: the
  fitted V0 (Å³/atom), E0 (eV/atom), B0 (GPa), B′, the fitted curve and the fit's verdict.
"""

from __future__ import annotations

import logging
from importlib import metadata
from typing import Literal

from atomate2.forcefields.schemas import ForceFieldMoleculeTaskDocument, ForceFieldTaskDocument
from pydantic import BaseModel, Field
from pymatgen.core import Structure

logger = logging.getLogger(__name__)

JobType = Literal["static", "relax", "md", "eos", "finetune", "finetune_md", "tensile"]


def gptff_version() -> str:
    """Installed version of the ``gptff`` distribution (``"unknown"`` when not installed)."""
    try:
        return metadata.version("gptff")
    except metadata.PackageNotFoundError:
        return "unknown"


class GPTFFProvenance(BaseModel):
    """Which GPTFF network produced a result, exactly."""

    job_type: JobType = Field(
        description="what was computed: static, relax, md, eos, finetune or finetune_md"
    )
    model: str = Field(description="model as requested: registry name or checkpoint path")
    model_name: str = Field(description="registry name, or the checkpoint file's stem")
    checkpoint_path: str = Field(description="checkpoint file that was loaded")
    checkpoint_sha256: str = Field(description="sha256 (hex) of the checkpoint file")
    checkpoint_format: str = Field(description="'published' or 'gptff-toolkit'")
    dtype: str = Field(description="floating-point precision of the evaluation")
    smooth: bool = Field(description="whether C² cutoff envelopes were applied")
    bond_window: float = Field(description="Å, envelope width below the 5 Å bond cutoff")
    three_body_window: float = Field(description="Å, envelope width below the 3.5 Å cutoff")
    device: str = Field(description="torch device the network ran on")
    gptff_version: str = Field(description="version of the gptff package")

    @classmethod
    def from_calculator(cls, calculator, job_type: JobType, model: str) -> GPTFFProvenance:
        """Provenance of a :class:`~gptff_core.calculator.GPTFFCalculator` that has been used."""
        network = calculator.model
        source = network.source
        parameter = next(network.parameters())
        return cls(
            job_type=job_type,
            model=str(model),
            model_name=source.name,
            checkpoint_path=source.path,
            checkpoint_sha256=source.sha256,
            checkpoint_format=source.format,
            dtype=str(parameter.dtype).removeprefix("torch."),
            smooth=bool(network.config.smooth),
            bond_window=float(network.config.bond_window),
            three_body_window=float(network.config.three_body_window),
            device=str(parameter.device),
            gptff_version=gptff_version(),
        )


class GPTFFTaskDocument(ForceFieldTaskDocument):
    """atomate2's force-field task document plus the GPTFF provenance (energies in eV)."""

    gptff: GPTFFProvenance = Field(description="the GPTFF network that produced this result")


class GPTFFMoleculeTaskDocument(ForceFieldMoleculeTaskDocument):
    """atomate2's force-field molecule document plus the GPTFF provenance (energies in eV)."""

    gptff: GPTFFProvenance = Field(description="the GPTFF network that produced this result")


def with_provenance(doc, provenance: GPTFFProvenance):
    """The atomate2 document(s) ``doc`` as GPTFF documents carrying ``provenance``."""
    if isinstance(doc, list):
        return [with_provenance(d, provenance) for d in doc]
    kind = (
        GPTFFMoleculeTaskDocument
        if isinstance(doc, ForceFieldMoleculeTaskDocument)
        else GPTFFTaskDocument
    )
    fields = dict(doc)
    fields["forcefield_version"] = provenance.gptff_version
    return kind(**fields, gptff=provenance)


class EosFit(BaseModel):
    """One equation-of-state fit, per atom of the cell, with its verdict.

    ``flags`` empty: nothing found against the fit. Otherwise short names, one human reason each
    in ``flag_reasons`` (thresholds: :mod:`gptff_flows.eos_verdict`): ``poor_fit`` (RMS residual
    or R²), ``jump_at_cutoff`` (an energy step off the curve where a neighbour distance crosses
    the 5.0 Å or 3.5 Å cutoff), ``energy_jump`` (a step off the curve elsewhere),
    ``b0_implausible``, ``b1_implausible``, ``e0_below_points``.
    """

    eos: str = Field(description="pymatgen EOS name, e.g. 'birch_murnaghan'")
    v0_per_atom: float = Field(description="Å³/atom, equilibrium volume")
    e0_per_atom: float = Field(description="eV/atom, energy at the equilibrium volume")
    b0: float = Field(description="GPa, bulk modulus at V0")
    b1: float = Field(description="dimensionless pressure derivative B′ of the bulk modulus")
    rms_residual_meV_per_atom: float | None = Field(
        None, description="meV/atom, RMS of computed minus fitted energies at the points"
    )
    r_squared: float | None = Field(None, description="coefficient of determination of the fit")
    step_misfit_meV_per_atom: float | None = Field(
        None,
        description="meV/atom, the largest difference, over neighbouring points, between the "
        "computed energy step and the fitted one (a jump shows here)",
    )
    step_meV_per_atom: float | None = Field(
        None, description="meV/atom, the computed energy step at that pair of points"
    )
    fitted_step_meV_per_atom: float | None = Field(
        None, description="meV/atom, the fitted energy step at that pair of points"
    )
    step_volumes_per_atom: list[float] = Field(
        default_factory=list, description="Å³/atom, the two volumes of that pair of points"
    )
    flags: list[str] = Field(default_factory=list, description="why not to trust the fit")
    flag_reasons: list[str] = Field(default_factory=list, description="one sentence per flag")


class CutoffCrossing(BaseModel):
    """Pair distances that cross one of the network's cutoffs between two neighbouring points."""

    cutoff: float = Field(description="Å, the cutoff crossed (5.0 bond, 3.5 three-body)")
    kind: str = Field(description="'bond' or 'three-body'")
    volumes_per_atom: list[float] = Field(description="Å³/atom, the two neighbouring points")
    n_pairs: int = Field(description="number of atom pairs whose distance crosses the cutoff")
    example: str = Field(description="one of them, e.g. 'Al–Al 4.960 → 5.079 Å'")


EosVerdict = Literal["ok", "flagged", "refused"]


class GPTFFEosDocument(BaseModel):
    """Energy–volume data of one structure, its equation-of-state fit and the fit's verdict.

    ``verdict``: ``ok``; ``flagged`` (``fit`` is there but ``flags`` say why not to trust it);
    ``refused`` (``fit`` is ``None``: the points show no minimum, ``flag_reasons`` says why; the
    points are kept). Documents stored before verdicts existed have ``verdict`` ``None``.
    """

    formula_pretty: str = Field(description="reduced formula, e.g. 'NaCl'")
    chemsys: str = Field(description="chemical system, elements joined by '-', e.g. 'Cl-Na'")
    nsites: int = Field(description="number of atoms in the cell that was strained")
    structure: Structure = Field(description="the relaxed structure the strains were applied to")
    fit: EosFit | None = Field(
        None, description="the selected fit (Birch–Murnaghan by default); None when refused"
    )
    other_fits: list[EosFit] = Field(
        default_factory=list, description="the other EOS forms fitted to the same data"
    )
    verdict: EosVerdict | None = Field(None, description="'ok', 'flagged' or 'refused'")
    flags: list[str] = Field(
        default_factory=list,
        description="the selected fit's flags, or the refusal ('no_minimum', 'fit_failed')",
    )
    flag_reasons: list[str] = Field(default_factory=list, description="one sentence per flag")
    cutoff_crossings: list[CutoffCrossing] = Field(
        default_factory=list, description="cutoff crossings between neighbouring points"
    )
    volumes_per_atom: list[float] = Field(description="Å³/atom, computed points (sorted)")
    energies_per_atom: list[float] = Field(description="eV/atom, computed points")
    fitted_volumes_per_atom: list[float] = Field(
        default_factory=list, description="Å³/atom, grid of the fitted curve"
    )
    fitted_energies_per_atom: list[float] = Field(
        default_factory=list, description="eV/atom, the fitted curve"
    )
    plot_path: str | None = Field(None, description="PNG of the fit, when one was written")
    gptff: GPTFFProvenance = Field(description="the GPTFF network that produced this result")
