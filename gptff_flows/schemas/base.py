"""What every GPTFF document shares: provenance, and atomate2's task documents carrying it.

* :class:`GPTFFDocument` — the fields every workflow's document starts with (formula, chemical
  system, atoms, provenance); :func:`formula_fields` fills the first three from a structure.
* :class:`GPTFFProvenance` — which network produced a result: model name, checkpoint path and
  sha256, dtype, smooth flag, device, model version, neighbour-list skin, D3 dispersion (and its
  settings) and the ``gptff`` package version.
* :class:`GPTFFTaskDocument` — atomate2's ``ForceFieldTaskDocument`` unchanged (energies in eV,
  forces in eV/Å, stress as atomate2 stores it) plus a ``gptff`` provenance block; static, relax and
  MD jobs return it.
"""

from __future__ import annotations

import logging
from importlib import metadata
from typing import Literal

from atomate2.forcefields.schemas import ForceFieldMoleculeTaskDocument, ForceFieldTaskDocument
from pydantic import BaseModel, Field
from pymatgen.core import Structure

logger = logging.getLogger(__name__)

JobType = Literal["static", "relax", "md", "eos", "finetune", "finetune_md", "tensile", "learn"]


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
    model_version: str | None = Field(
        None, description="'v1' or 'v2' (transformer blocks); None in older documents"
    )
    skin: float | None = Field(
        None,
        description="Å, neighbour-list skin of the ASE calculator; None where none was used "
        "(TorchSim batches) or in older documents",
    )
    dispersion: bool = Field(
        False, description="whether D3 dispersion was added (False in older documents)"
    )
    dispersion_settings: dict | None = Field(
        None,
        description="D3 settings when dispersion is on (D3Dispersion.settings(): functional, "
        "damping, its parameters (a2 in bohr under 'rs18'), cutoff and cn_cutoff in Å)",
    )

    @classmethod
    def from_calculator(cls, calculator, job_type: JobType, model: str) -> GPTFFProvenance:
        """Provenance of a :class:`~gptff_core.calculator.GPTFFCalculator` that has been used
        (``skin``, ``dispersion`` from its ``parameters``, the D3 settings from its ``d3``); any
        object with a loaded network as ``model`` (and optionally ``parameters``, ``d3``)."""
        network = calculator.model
        source = network.source
        parameter = next(network.parameters())
        parameters = dict(getattr(calculator, "parameters", None) or {})
        d3 = getattr(calculator, "d3", None)
        skin = parameters.get("skin")
        return cls(
            model_version=parameters.get("model_version")
            or ("v2" if network.config.transformer else "v1"),
            skin=None if skin is None else float(skin),
            dispersion=bool(parameters.get("dispersion", d3 is not None)),
            dispersion_settings=d3.settings() if d3 is not None else None,
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


class GPTFFDocument(BaseModel):
    """What every GPTFF result document starts with: the compound, the cell size, the network."""

    formula_pretty: str = Field(description="reduced formula, e.g. 'NaCl'")
    chemsys: str = Field(description="chemical system, elements joined by '-', e.g. 'Cl-Na'")
    nsites: int = Field(description="number of atoms in the cell that was computed")
    gptff: GPTFFProvenance = Field(description="the GPTFF network that produced this result")


def formula_fields(structure: Structure, nsites: int | None = None) -> dict:
    """``formula_pretty``, ``chemsys`` and ``nsites`` of a :class:`GPTFFDocument` for
    ``structure``; ``nsites`` when the cell computed is another (a supercell of it)."""
    composition = structure.composition
    return dict(
        formula_pretty=composition.reduced_formula,
        chemsys=composition.chemical_system,
        nsites=len(structure) if nsites is None else int(nsites),
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
