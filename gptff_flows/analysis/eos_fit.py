"""Equation-of-state fits that carry their own verdict (pure functions: no jobflow, no network).

:func:`fit_eos` fits a pymatgen EOS form to per-atom energy–volume points and judges the fit:

* **refused** (:class:`EosRefused`, a :class:`~gptff_core.errors.GPTFFInputError`) when the points
  do not show a minimum: the fit fails, V0 lies outside the sampled volumes, B0 ≤ 0, or a number
  is not finite. pymatgen's own behaviour on such points changes between versions (some raise,
  newer ones return V0 = 1e14 Å³/atom), so these checks are made here, on the result.
* **flagged** otherwise, with short machine names in ``EosFit.flags`` and one human sentence each
  in ``EosFit.flag_reasons`` (the thresholds are the named constants below, each with its reason):
  ``poor_fit``, ``jump_at_cutoff``, ``energy_jump``, ``b0_implausible``, ``b1_implausible``,
  ``e0_below_points``.

The cutoff crossings between neighbouring strained cells, which decide ``jump_at_cutoff``, come
from :func:`gptff_flows.analysis.eos_geometry.cutoff_crossings`.

Units: volumes Å³/atom, energies eV/atom (residuals and steps in meV/atom), B0 GPa.
"""

from __future__ import annotations

import warnings

import numpy as np
from ase import units
from pydantic import BaseModel, Field

from gptff_core.errors import GPTFFInputError
from gptff_flows.analysis.eos_geometry import CutoffCrossing

MIN_POINTS = 4
"""Energy–volume points a 4-parameter EOS fit needs."""


class EosFit(BaseModel):
    """One equation-of-state fit, per atom of the cell, with its verdict.

    ``flags`` empty: nothing found against the fit. Otherwise short names, one human reason each
    in ``flag_reasons`` (thresholds: the constants of this module): ``poor_fit`` (RMS residual
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


MAX_RMS_RESIDUAL_MEV = 1.0
"""meV/atom. A fit that misses its own points by more than this (RMS) is flagged ``poor_fit``.
A smooth E(V) is fitted much better: GPTFF's NaCl, Cu, Si and MgO over ±6 % in volume give
0.01 meV/atom, and Cu and Si over ±15 % give 0.5–0.8 meV/atom (the Birch–Murnaghan form's own
limit); phase energies are compared at the meV/atom level (1 meV/atom is kT at 12 K), which a fit
that misses by more cannot resolve."""

MIN_R_SQUARED = 0.999
"""A fit must explain 99.9 % of the variance of the points' energies, else ``poor_fit``: below
that the residuals are over 3 % of the energy spread, which is what B0 (the curvature) is made of.
This catches narrow strain ranges, where the spread is a few meV/atom and the RMS limit above is
too loose (smooth curves over ±6 % in volume give R² ≥ 0.9999)."""

JUMP_AT_CUTOFF_MEV = 1.0
"""meV/atom. Between two neighbouring points where a neighbour distance crosses a cutoff, a
computed energy step that differs from the fitted one by more than this is flagged
``jump_at_cutoff``: the published network's energy jumps there by several meV/atom to over
100 (README, known flaws: 4–26 meV/atom for Cu's shells; measured here: fcc Al's third shell at
5 Å +150, LiF's F–F shell −56), while smooth curves sampled over ±6 % in volume miss their
neighbouring steps by under 0.5 meV/atom. The fit absorbs much of a jump at the end of
the range (Cu's 10.6 meV/atom step at 3.5 Å shows as 1.6 meV/atom), hence a low threshold, which
is only applied where a crossing is known."""

MAX_STEP_MISFIT_MEV = 3.0
"""meV/atom. Anywhere else, a computed step between neighbouring points that differs from the
fitted one by more than this is flagged ``energy_jump`` (a point off the smooth curve: a jump the
geometry check cannot see, or a relaxation that fell into another state). Smooth curves fitted
to the RMS limit above miss neighbouring steps by up to ~2.5 × RMS (Si over ±15 % in volume:
1.3 meV/atom at RMS 0.5), so 3 meV/atom is above what a smooth curve gives."""

B0_RANGE_GPA = (0.5, 600.0)
"""GPa. Bulk moduli of solids at ambient pressure lie between about 1 GPa (solid neon and argon,
caesium: 1.6 GPa) and 443 GPa (diamond, the stiffest known); a fitted B0 outside this range, with
a margin for the network's error, is not a bulk modulus of the points but an artefact of the fit
(``b0_implausible``)."""

B1_RANGE = (1.0, 10.0)
"""B′ (dimensionless). Measured pressure derivatives of bulk moduli lie between about 3 and 8
(metals 4–6, alkali halides ~5, noble-gas solids 7–8); a fit outside 1–10 means the points do not
constrain B′ (too narrow a strain range, noise, or a kink), and its B0 is suspect with it
(``b1_implausible``)."""

E0_NOISE_FACTOR = 2.0
"""E0 may lie below the lowest computed energy by as much as the fitted curve descends from that
point to V0 (the points need not sit at V0) plus this many RMS residuals (the fit noise) before it
is flagged ``e0_below_points`` (2 × RMS: beyond 95 % of normal noise)."""

E0_MIN_TOLERANCE_MEV = 0.1
"""meV/atom, the least tolerance on E0: float32 energies and relaxations to 0.05 eV/Å leave the
points this uncertain even when the fit is exact."""

MEV = 1e-3 * units.eV
"""eV in one meV (residuals and steps are reported in meV/atom)."""


class EosRefused(GPTFFInputError):
    """The points give no trustworthy EOS fit; ``flag`` is ``no_minimum`` or ``fit_failed``."""

    def __init__(self, flag: str, message: str) -> None:
        super().__init__(message)
        self.flag = flag


def fit_eos(
    volumes: list[float],
    energies: list[float],
    form: str,
    crossings: list[CutoffCrossing] | tuple = (),
) -> EosFit:
    """Fit ``form`` (a pymatgen EOS name) to per-atom volumes (Å³/atom) and energies (eV/atom),
    and judge it (see the module docstring); ``crossings``: from
    :func:`~gptff_flows.analysis.eos_geometry.cutoff_crossings` (none: ``jump_at_cutoff`` is
    not judged).

    Raises:
        EosRefused: the points show no minimum inside the sampled volumes, or the fit failed.
        GPTFFInputError: fewer than :data:`MIN_POINTS` points, non-finite or repeated values.
    """
    v, e = _checked_points(volumes, energies)
    try:
        fit, predicted = _fit_with_minimum(v, e, form)
    except EosRefused as exc:
        raise EosRefused(exc.flag, f"{exc}{crossing_note(crossings)}") from None
    fit = fit.model_copy(update=_quality(v, e, predicted))
    flags, reasons = judge_fit(fit, v, e, predicted, crossings)
    return fit.model_copy(update={"flags": flags, "flag_reasons": reasons})


def _fit_with_minimum(v: np.ndarray, e: np.ndarray, form: str) -> tuple[EosFit, np.ndarray]:
    """The fit of sorted points and its energies at them (eV/atom); refused unless it has a
    minimum inside the sampled volumes."""
    fitted = _pymatgen_fit(v, e, form)
    v0, e0, b0 = float(fitted.v0), float(fitted.e0), float(fitted.b0) / units.GPa
    b1 = float(fitted.b1)
    if not np.isfinite([v0, e0, b0, b1]).all() or not v[0] < v0 < v[-1] or not b0 > 0:
        raise EosRefused(
            "no_minimum",
            f"{form} fit gives V0 = {v0:.4g} Å³/atom, B0 = {b0:.4g} GPa, outside the sampled "
            f"volumes {v[0]:.3f}–{v[-1]:.3f} Å³/atom or not positive: {_no_minimum_advice(e)}",
        )
    predicted = np.asarray(fitted.func(v), dtype=float)
    return EosFit(eos=form, v0_per_atom=v0, e0_per_atom=e0, b0=b0, b1=b1), predicted


def crossing_note(crossings: list[CutoffCrossing] | tuple) -> str:
    """A sentence naming the cutoff crossings between the points ("" when there are none)."""
    if not crossings:
        return ""
    where = "; ".join(
        f"{c.cutoff:g} Å {c.kind} cutoff between V = {c.volumes_per_atom[0]:.3f} and "
        f"{c.volumes_per_atom[1]:.3f} Å³/atom ({c.example})"
        for c in crossings
    )
    return (
        f". Pair distances cross {where}: without smooth=True the network's energy jumps there; "
        "narrow the strain range or use smooth=True (--smooth)"
    )


def _checked_points(volumes, energies) -> tuple[np.ndarray, np.ndarray]:
    """The points as float arrays sorted by volume; refuses what cannot be fitted."""
    v = np.asarray(volumes, dtype=float)
    e = np.asarray(energies, dtype=float)
    if v.shape != e.shape or v.ndim != 1:
        raise GPTFFInputError(f"{v.size} volumes but {e.size} energies: give one energy per volume")
    if v.size < MIN_POINTS:
        raise GPTFFInputError(f"an EOS fit needs at least {MIN_POINTS} points, got {v.size}")
    if not (np.isfinite(v).all() and np.isfinite(e).all()) or not (v > 0).all():
        raise GPTFFInputError("EOS points must be finite, with positive volumes (Å³/atom)")
    order = np.argsort(v)
    v, e = v[order], e[order]
    if (np.diff(v) <= 0).any():
        raise GPTFFInputError("EOS points repeat a volume: give distinct volumes")
    return v, e


def _pymatgen_fit(v: np.ndarray, e: np.ndarray, form: str):
    from pymatgen.analysis.eos import EOS

    try:
        eos = EOS(eos_name=form)
    except Exception as exc:  # pymatgen raises EOSError (a plain Exception) for unknown names
        raise GPTFFInputError(f"unknown EOS form {form!r}: {exc}") from None
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")  # maxfev and overflow warnings: judged below
            return eos.fit(v.tolist(), e.tolist())
    except Exception as exc:  # EOSError, RuntimeError (no convergence), LinAlgError, ...
        lowest = int(np.argmin(e))
        if lowest in (0, len(e) - 1) or np.ptp(e) == 0:
            raise EosRefused(
                "no_minimum", f"{form} fit failed ({exc}): {_no_minimum_advice(e)}"
            ) from None
        raise EosRefused(
            "fit_failed",
            f"{form} fit failed ({str(exc).rstrip('.')}): the points have their lowest energy "
            "inside the range but are not an E(V) curve of this form (a jump or a broken point)",
        ) from None


def _no_minimum_advice(e: np.ndarray) -> str:
    lowest = int(np.argmin(e))
    where = {0: "at the smallest volume", len(e) - 1: "at the largest volume"}.get(
        lowest, "inside the range, but the curve through the points has no minimum there"
    )
    return (
        f"the points do not bracket a minimum (lowest energy {where}); relax the structure "
        "first or widen/shift the strain range so that the lowest energy is inside it"
    )


def _quality(v: np.ndarray, e: np.ndarray, predicted: np.ndarray) -> dict:
    """RMS residual and R² of the fit, and its worst step between neighbouring points."""
    residual = (e - predicted) / MEV
    spread = (e - e.mean()) / MEV
    total = float(np.sum(spread**2))
    misfit = np.diff(residual)  # computed step minus fitted step, meV/atom
    k = int(np.argmax(np.abs(misfit)))
    return {
        "rms_residual_meV_per_atom": float(np.sqrt(np.mean(residual**2))),
        "r_squared": 1.0 - float(np.sum(residual**2)) / total if total > 0 else 0.0,
        "step_misfit_meV_per_atom": float(abs(misfit[k])),
        "step_meV_per_atom": float((e[k + 1] - e[k]) / MEV),
        "fitted_step_meV_per_atom": float((predicted[k + 1] - predicted[k]) / MEV),
        "step_volumes_per_atom": [float(v[k]), float(v[k + 1])],
    }


def judge_fit(
    fit: EosFit,
    volumes: np.ndarray,
    energies: np.ndarray,
    predicted: np.ndarray,
    crossings: list[CutoffCrossing] | tuple = (),
) -> tuple[list[str], list[str]]:
    """The verdict on ``fit`` of the points (sorted volumes, Å³/atom; energies and the fitted
    energies ``predicted`` at them, eV/atom): flag names and one reason each (empty: trusted)."""
    jumps = _jump_flags(volumes, energies, predicted, crossings)
    explained = any(flag == "jump_at_cutoff" for flag, _ in jumps)  # names the crossings already
    verdicts = [
        _quality_flag(fit, () if explained else crossings),
        *jumps,
        _range_flag("b0_implausible", "B0", fit.b0, B0_RANGE_GPA, " GPa", _B0_WHY),
        _range_flag("b1_implausible", "B′", fit.b1, B1_RANGE, "", _B1_WHY),
        _e0_flag(fit, volumes, energies, predicted),
    ]
    verdicts = [v for v in verdicts if v is not None]
    return [flag for flag, _ in verdicts], [reason for _, reason in verdicts]


_B0_WHY = "bulk moduli of solids lie between ~1 GPa (solid Ne, Ar, Cs) and 443 GPa (diamond)"
_B1_WHY = "measured B′ of solids lie between ~3 and 8; the points do not constrain it"


def _quality_flag(fit: EosFit, crossings) -> tuple[str, str] | None:
    rms, r2 = fit.rms_residual_meV_per_atom, fit.r_squared
    if rms <= MAX_RMS_RESIDUAL_MEV and r2 >= MIN_R_SQUARED:
        return None
    return "poor_fit", (
        f"the {fit.eos} curve misses the points by {rms:.3g} meV/atom RMS (limit "
        f"{MAX_RMS_RESIDUAL_MEV:g}), R² = {r2:.5f} (limit {MIN_R_SQUARED:g}): the points are not "
        f"one smooth E(V) curve (a jump or a broken point){crossing_note(crossings)}"
    )


def _jump_flags(v, e, predicted, crossings) -> list[tuple[str, str]]:
    misfit = np.diff(e - predicted) / MEV
    places = []
    for crossing in crossings:
        k = _pair_index(v, crossing.volumes_per_atom)
        if k is not None and abs(misfit[k]) > JUMP_AT_CUTOFF_MEV:
            places.append(
                f"between V = {v[k]:.3f} and {v[k + 1]:.3f} Å³/atom, {crossing.n_pairs} pair "
                f"distance(s) cross the {crossing.cutoff:g} Å {crossing.kind} cutoff "
                f"({crossing.example}) and the energy step misses the fit by {misfit[k]:+.3g} "
                "meV/atom"
            )
    if places:
        return [
            (
                "jump_at_cutoff",
                "; ".join(places) + f" (limit {JUMP_AT_CUTOFF_MEV:g}): the published network's "
                "energy jumps at its cutoffs; narrow the strain range so no neighbour shell "
                "crosses one, or use smooth=True (--smooth)",
            )
        ]
    k = int(np.argmax(np.abs(misfit)))
    if abs(misfit[k]) <= MAX_STEP_MISFIT_MEV:
        return []
    return [
        (
            "energy_jump",
            f"between V = {v[k]:.3f} and {v[k + 1]:.3f} Å³/atom the energy changes by "
            f"{(e[k + 1] - e[k]) / MEV:+.3g} meV/atom where the fit gives "
            f"{(predicted[k + 1] - predicted[k]) / MEV:+.3g} (limit "
            f"{MAX_STEP_MISFIT_MEV:g} meV/atom apart): a point off the smooth curve (a jump, or a "
            "relaxation that found another state)",
        )
    ]


def _pair_index(v: np.ndarray, pair: list[float]) -> int | None:
    """Index k of the neighbouring points (v[k], v[k+1]) that ``pair`` names, if any."""
    for k in range(len(v) - 1):
        if np.allclose(v[k : k + 2], pair, rtol=1e-6, atol=0):
            return k
    return None


def _range_flag(flag, name, value, bounds, unit, why) -> tuple[str, str] | None:
    low, high = bounds
    if low <= value <= high:
        return None
    return flag, f"{name} = {value:.4g}{unit} is outside {low:g}–{high:g}{unit}: {why}"


def _e0_flag(fit: EosFit, v: np.ndarray, e: np.ndarray, predicted: np.ndarray):
    """``e0_below_points`` when E0 lies further below the lowest computed energy than the fitted
    curve descends from that point to V0 (the points need not sit at V0) plus the fit noise."""
    k = int(np.argmin(e))
    below = (e[k] - fit.e0_per_atom) / MEV
    descent = (predicted[k] - fit.e0_per_atom) / MEV
    tolerance = max(E0_NOISE_FACTOR * fit.rms_residual_meV_per_atom, E0_MIN_TOLERANCE_MEV)
    if below <= descent + tolerance:
        return None
    return "e0_below_points", (
        f"E0 = {fit.e0_per_atom:.5f} eV/atom is {below:.3g} meV/atom below the lowest computed "
        f"energy (V = {v[k]:.3f} Å³/atom), but the fitted curve descends only {descent:.3g} "
        f"meV/atom from there to V0 and the fit noise is {tolerance:.3g} meV/atom: the curve "
        "passes below the lowest point, so its minimum is not one the points show"
    )
