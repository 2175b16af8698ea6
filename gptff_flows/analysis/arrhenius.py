"""Arrhenius fit ``D = D0 exp(−Ea/kT)`` over the usable temperatures of a set of MD runs.

:func:`fit_arrhenius_temperatures` uses pymatgen's ``fit_arrhenius``: Ea in eV with its standard
error, and the conductivity extrapolated to 300 K (pymatgen's ``get_extrapolated_conductivity``);
flagged temperatures (:data:`~gptff_flows.analysis.md_verdict.EXCLUDING_FLAGS`) are left out, and
fewer than two usable give no Ea.

Units: temperature K, D cm²/s, conductivity mS/cm, Ea eV.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from ase import units
from pydantic import BaseModel, Field
from pymatgen.analysis.diffusion.analyzer import fit_arrhenius, get_extrapolated_conductivity
from pymatgen.core import Structure

from gptff_core.errors import GPTFFInputError
from gptff_flows.analysis.diffusion import EXCLUDING_FLAGS, DiffusionResult, valence_charge

ROOM_TEMPERATURE_K = 300.0
"""K, the temperature the conductivity is extrapolated to."""


class ArrheniusFit(BaseModel):
    """Arrhenius fit of D over temperatures and the conductivity extrapolated to 300 K."""

    species: str = Field(description="mobile species")
    temperatures: list[float] = Field(description="K, temperatures used in the fit")
    excluded_temperatures: list[float] = Field(
        default_factory=list,
        description="K, left out (not diffusive, framework mobile, or temperature not reached)",
    )
    diffusivities: list[float] = Field(description="cm²/s, D at the fitted temperatures")
    activation_energy: float | None = Field(None, description="eV, Ea")
    activation_energy_error: float | None = Field(
        None, description="eV, standard error of Ea (needs ≥ 3 temperatures)"
    )
    prefactor: float | None = Field(None, description="cm²/s, D0 of D = D0 exp(−Ea/kT)")
    conductivity_300K: float | None = Field(None, description="mS/cm, extrapolated to 300 K")
    conductivity_300K_range: list[float] | None = Field(
        None, description="mS/cm, σ(300 K) with Ea ± its error (pivot at the fitted mean 1/T)"
    )
    diffusivity_300K: float | None = Field(None, description="cm²/s, extrapolated to 300 K")
    flags: list[str] = Field(default_factory=list, description="why a quantity is missing")
    reason: str | None = Field(
        None, description="which temperatures were left out and why; why there is no Ea"
    )


def fit_arrhenius_temperatures(
    results: Sequence[DiffusionResult],
    structure: Structure,
    extrapolate_to: float = ROOM_TEMPERATURE_K,
) -> ArrheniusFit:
    """Arrhenius fit of the usable temperatures of ``results`` (pymatgen, ln D vs 1/T): those
    with D > 0 and no flag of :data:`EXCLUDING_FLAGS` (diffusive, framework intact, target
    temperature reached).

    Ea needs two usable temperatures (else flag ``fewer_than_two_usable_temperatures`` and no
    Ea), its error three. ``reason`` names the temperatures left out and their flags. σ at
    ``extrapolate_to`` (K) is pymatgen's extrapolated conductivity for ``structure`` (the
    analysed cell).
    """
    if not results:
        raise GPTFFInputError("no temperatures to fit")
    species = results[0].species
    used = [r for r in results if r.fit_worthy]
    left_out = [r for r in results if not r.fit_worthy]
    fit = ArrheniusFit(
        species=species,
        temperatures=[r.temperature for r in used],
        excluded_temperatures=[r.temperature for r in left_out],
        diffusivities=[r.diffusivity for r in used],
    )
    reasons = [
        f"{r.temperature:g} K ({', '.join(sorted(EXCLUDING_FLAGS & set(r.flags))) or 'D ≤ 0'})"
        for r in left_out
    ]
    if reasons:
        fit.reason = "left out of the fit: " + "; ".join(reasons)
    if len({r.temperature for r in used}) < 2:
        fit.flags.append("fewer_than_two_usable_temperatures")
        fit.reason = (
            f"no Ea: {len({r.temperature for r in used})} usable temperature(s), 2 needed"
            + (f"; {fit.reason}" if fit.reason else "")
        )
        return fit
    _fit_and_extrapolate(fit, results[0].charge, structure, extrapolate_to)
    return fit


def _fit_and_extrapolate(
    fit: ArrheniusFit, charge: float, structure: Structure, extrapolate_to: float
) -> None:
    """Fill in ``fit``'s Ea (eV) with its error, D0 (cm²/s), and σ (mS/cm, for an ion of
    ``charge`` e) and D (cm²/s) at ``extrapolate_to`` K, from its temperatures (K) and
    diffusivities (cm²/s)."""
    species = fit.species
    temps = np.array(fit.temperatures)
    values = np.array(fit.diffusivities)
    ea, prefactor, ea_error = fit_arrhenius(temps, values, mode="linear")
    fit.activation_energy = float(ea)
    fit.prefactor = float(prefactor)
    fit.activation_energy_error = None if ea_error is None else float(ea_error)
    if ea_error is None:
        fit.flags.append("no_error_with_two_temperatures")
    charge_scale = (charge / valence_charge(species)) ** 2
    fit.conductivity_300K = charge_scale * float(
        get_extrapolated_conductivity(temps, values, extrapolate_to, structure, species)
    )
    fit.diffusivity_300K = float(prefactor * math.exp(-ea / (units.kB * extrapolate_to)))
    if ea_error is not None:
        lever = 1.0 / extrapolate_to - float(np.mean(1.0 / temps))
        spread = math.exp(ea_error * lever / units.kB)
        fit.conductivity_300K_range = [
            fit.conductivity_300K / spread,
            fit.conductivity_300K * spread,
        ]
    if extrapolate_to < temps.min():
        fit.flags.append("extrapolated")
