"""The document of one first-principles (or EMT) label: :class:`LabelDocument`.

A label is the energy, forces and (where the method gives it) stress of one structure, with what
computed it (labeller, settings, code version), whether it can be trusted (``converged``,
``error``), what it cost (``wall_time_s``) and its :attr:`~LabelDocument.frame_key`, the sha256 of
structure + labeller + settings by which a loop recognises a label it already has.

Units follow atomate2's VASP task documents, so
:func:`gptff_flows.jobs.training_data.frames_from_documents` reads a label unchanged: energy eV
(total, extrapolated to zero smearing like VASP's ``e_0_energy``), forces eV/Å, stress kbar with
VASP's sign (positive = compressive, i.e. −10 × ASE's stress in GPa).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field
from pymatgen.core import Structure

LABEL_DOCUMENT_VERSION = 1
"""Version of :class:`LabelDocument`'s layout (field ``document_version``)."""

Labeller = Literal["emt", "gpaw", "vasp"]


class LabelDocument(BaseModel):
    """Energy, forces and stress of one structure from a reference method, with provenance."""

    formula_pretty: str = Field(description="reduced formula, e.g. 'Li3YCl6' (no unit)")
    chemsys: str = Field(description="chemical system, elements joined by '-' (no unit)")
    nsites: int = Field(description="number of atoms in the labelled cell (count)")
    structure: Structure = Field(description="the labelled structure (lattice and positions Å)")
    energy: float | None = Field(
        None, description="eV, total energy of the cell (σ→0); None when the label failed"
    )
    forces: list[list[float]] | None = Field(
        None, description="eV/Å, force on each atom (nsites × 3); None when the label failed"
    )
    stress: list[list[float]] | None = Field(
        None,
        description="kbar, 3×3 stress with VASP's sign (positive = compressive), as atomate2 "
        "stores it; None when the method gives none (GPAW LCAO/FD) or the label failed",
    )
    labeller: Labeller = Field(description="method that computed the label: emt, gpaw or vasp")
    settings: dict = Field(
        description="the method's settings as used, defaults included (GPAW keywords: ecut eV, "
        "smearing width eV, k-point density in k-points per Å⁻¹)"
    )
    code_version: str = Field(description="code and version, e.g. 'gpaw 26.7.0; gpaw-data 1.2.1'")
    frame_key: str = Field(
        description="sha256 (hex) of rounded structure, labeller and settings (no unit)"
    )
    converged: bool = Field(description="whether the calculation converged (SCF) and finished")
    error: str | None = Field(None, description="why the label failed (None when converged)")
    wall_time_s: float = Field(description="s, wall-clock time of the calculation")
    document_version: int = Field(
        LABEL_DOCUMENT_VERSION, description="layout version of this document (integer)"
    )
