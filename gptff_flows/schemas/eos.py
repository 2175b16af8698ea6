"""The document of :class:`~gptff_flows.flows.eos.GPTFFEosMaker`: the fitted V0 (Å³/atom),
E0 (eV/atom), B0 (GPa), B′, the fitted curve and the fit's verdict."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pymatgen.core import Structure

from gptff_flows.analysis.eos_fit import EosFit
from gptff_flows.analysis.eos_geometry import CutoffCrossing
from gptff_flows.schemas.base import GPTFFDocument

EosVerdict = Literal["ok", "flagged", "refused"]


class GPTFFEosDocument(GPTFFDocument):
    """Energy–volume data of one structure, its equation-of-state fit and the fit's verdict.

    ``verdict``: ``ok``; ``flagged`` (``fit`` is there but ``flags`` say why not to trust it);
    ``refused`` (``fit`` is ``None``: the points show no minimum, ``flag_reasons`` says why; the
    points are kept). Documents stored before verdicts existed have ``verdict`` ``None``.
    """

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
