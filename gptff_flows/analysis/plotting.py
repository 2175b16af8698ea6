"""Figures of the workflows' results, drawn on :class:`matplotlib.figure.Figure` objects outside
pyplot, so the user's matplotlib backend is never switched.

* :func:`plot_msd`, :func:`plot_arrhenius` — diffusion at each temperature and its Arrhenius fit;
* :func:`plot_tensile` — structure fractions, stress and XRD against tensile strain.

Units: time ps, MSD Å², D cm²/s, 1000/T in 1/K, strain %, stress GPa, 2θ degrees.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from ase import units

from gptff_flows.analysis.arrhenius import ROOM_TEMPERATURE_K, ArrheniusFit
from gptff_flows.analysis.diffusion import DiffusionResult

if TYPE_CHECKING:  # the documents' module imports atomate2; the plots only read attributes
    from gptff_flows.schemas.tensile import TensileRow, TensileStepDocument


def _figure(size: tuple[float, float], dpi: int | None = 120):
    """A matplotlib Figure (``size`` in inches; ``dpi`` None: matplotlib's default) and its
    axes, outside pyplot (the user's backend stays as it is)."""
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


def plot_tensile(
    docs: Sequence[TensileStepDocument], rows: Sequence[TensileRow], stem: str | Path
) -> dict[str, str]:
    """PNG plots of a tensile-strain flow next to ``stem`` (``<stem>_fractions.png``,
    ``<stem>_stress_strain.png``, ``<stem>_xrd.png``): a-CNA fractions (%) and the axial stress
    (GPa) of ``rows``, and the XRD curve of each step of ``docs`` (2θ degrees), all against the
    strain (%). Returns their paths by name: ``fractions``, ``stress_strain``, ``xrd``."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    strain = np.array([100 * row.strain for row in rows])
    figures = {
        "fractions": _fractions_figure(strain, rows),
        "stress_strain": _stress_strain_figure(strain, rows),
        "xrd": _xrd_figure(docs),
    }
    paths = {}
    for name, figure in figures.items():
        paths[name] = str(stem.with_name(f"{stem.name}_{name}.png"))
        figure.savefig(paths[name], dpi=150)
    return paths


def _fractions_figure(strain: np.ndarray, rows: Sequence[TensileRow]):
    """a-CNA hcp/fcc/bcc/other fractions (%) against ``strain`` (%)."""
    figure, axes = _figure((5.5, 3.5), dpi=None)
    for key in ("hcp", "fcc", "bcc", "other"):
        axes.plot(strain, [100 * getattr(row, key) for row in rows], "o-", label=key)
    axes.set(xlabel="tensile strain (%)", ylabel="atoms (%)", ylim=(-2, 102))
    axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    figure.tight_layout()
    return figure


def _stress_strain_figure(strain: np.ndarray, rows: Sequence[TensileRow]):
    """Axial stress (GPa) with its standard deviation against ``strain`` (%)."""
    figure, axes = _figure((4.5, 3.5), dpi=None)
    stress, spread = [r.stress for r in rows], [r.stress_std for r in rows]
    axes.errorbar(strain, stress, yerr=spread, fmt="o-")
    axes.set(xlabel="tensile strain (%)", ylabel="σ along the axis (GPa)")
    figure.tight_layout()
    return figure


def _xrd_figure(docs: Sequence[TensileStepDocument]):
    """The XRD curve (2θ degrees, Cu Kα₁) of each strain, offset by strain; a line at 38°."""
    figure, axes = _figure((4.5, 1.2 + 0.45 * len(docs)), dpi=None)
    for k, doc in enumerate(docs):
        offset = 110 * k
        axes.plot(doc.xrd_two_theta, np.asarray(doc.xrd_intensity) + offset, lw=1)
        axes.text(doc.xrd_two_theta[-1], offset + 10, f"{100 * doc.strain:g} %", ha="right")
    axes.axvline(38.0, color="grey", ls="--", lw=1)
    axes.set(xlabel="2θ (degrees, Cu Kα₁)", ylabel="intensity (offset by strain)", yticks=[])
    figure.tight_layout()
    return figure


def plot_eos(doc, path: str | Path) -> Path:
    """Write a PNG of the computed points and the fitted curve (eV/atom vs Å³/atom) of ``doc`` (a
    :class:`~gptff_flows.schemas.eos.GPTFFEosDocument`, or one as stored) to ``path``; the title
    carries the verdict (the flags, or why the fit was refused)."""
    if isinstance(doc, dict):  # a stored document
        from gptff_flows.schemas.eos import GPTFFEosDocument

        doc = GPTFFEosDocument.model_validate(doc)
    fit = doc.fit
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure, axes = _figure((5, 4))
    axes.plot(doc.volumes_per_atom, doc.energies_per_atom, "o", label="GPTFF")
    title = f"{doc.formula_pretty} ({doc.gptff.model_name})"
    if fit is not None:
        axes.plot(doc.fitted_volumes_per_atom, doc.fitted_energies_per_atom, "-", label=fit.eos)
        title += f": V0 {fit.v0_per_atom:.3f} Å³/atom, B0 {fit.b0:.1f} GPa"
    if doc.flags:
        word = "FLAGGED" if fit is not None else "NO FIT"
        title += f"\n{word}: {', '.join(doc.flags)}"
    axes.set_xlabel("volume (Å³/atom)")
    axes.set_ylabel("energy (eV/atom)")
    axes.set_title(title, fontsize=9, color="firebrick" if doc.flags else "black")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    return path
