"""Figures of the workflows' results, drawn on :class:`matplotlib.figure.Figure` objects outside
pyplot, so the user's matplotlib backend is never switched.

Units: time ps, MSD Å², D cm²/s, 1000/T in 1/K.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from ase import units

from gptff_flows.analysis.arrhenius import ROOM_TEMPERATURE_K, ArrheniusFit
from gptff_flows.analysis.diffusion import DiffusionResult


def _figure(size: tuple[float, float], dpi: int = 120):
    """A matplotlib Figure and its axes, outside pyplot (the user's backend stays as it is)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, dpi=dpi)
    return figure, figure.subplots()


def plot_msd(results: Sequence[DiffusionResult], path: str | Path) -> Path:
    """PNG of the MSD (Å²) vs time (ps) of every temperature."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure, axes = _figure((5, 4))
    for result in results:
        time_ps = np.asarray(result.msd_time_fs) * units.fs / (1000 * units.fs)
        label = f"{result.temperature:.0f} K"
        if result.flags:
            label += f" ({', '.join(result.flags)})"
        axes.plot(time_ps, result.msd, label=label)
    axes.set_xlabel("time (ps)")
    axes.set_ylabel(f"MSD of {results[0].species} (Å²)" if results else "MSD (Å²)")
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path)
    return path


def plot_arrhenius(fit: ArrheniusFit, results: Sequence[DiffusionResult], path: str | Path) -> Path:
    """PNG of log10 D (cm²/s) vs 1000/T (K⁻¹) with error bars and the fitted line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure, axes = _figure((5, 4))
    for used in (True, False):
        chosen = [r for r in results if r.fit_worthy == used and r.diffusivity > 0]
        if chosen:
            axes.errorbar(
                [1000.0 / r.temperature for r in chosen],
                [r.diffusivity for r in chosen],
                yerr=[min(r.diffusivity_error, 0.99 * r.diffusivity) for r in chosen],
                fmt="o" if used else "x",
                color="k" if used else "0.6",
                label="fitted" if used else "flagged (excluded)",
            )
    if fit.activation_energy is not None:
        inverse = np.linspace(1000.0 / max(fit.temperatures), 1000.0 / ROOM_TEMPERATURE_K, 50)
        line = fit.prefactor * np.exp(-fit.activation_energy * inverse / (1000.0 * units.kB))
        error = fit.activation_energy_error
        text = f"Ea = {fit.activation_energy:.3f}" + (f" ± {error:.3f}" if error else "") + " eV"
        axes.plot(inverse, line, "--", color="C0", label=text)
    axes.set_yscale("log")
    axes.set_xlabel("1000 / T (1/K)")
    axes.set_ylabel(f"D of {fit.species} (cm²/s)")
    if fit.conductivity_300K is not None:
        axes.set_title(f"σ(300 K) ≈ {fit.conductivity_300K:.3g} mS/cm", fontsize=9)
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path)
    return path
