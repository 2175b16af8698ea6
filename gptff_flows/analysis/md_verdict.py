"""Whether an MD run at one temperature can be trusted: the temperature it reached, the volume
it kept, and what each per-temperature flag means.

* :func:`check_temperature` — whether the production run's mean temperature reached its target
  within a stated tolerance (flag ``temperature_not_reached`` otherwise);
* :data:`MAX_VOLUME_CHANGE` — how far an NPT run's volume may move (flag ``volume_unstable``);
* :data:`FLAG_HELP` — one sentence per flag (the flags that leave a temperature out of the
  Arrhenius fit: :data:`~gptff_flows.analysis.diffusion.EXCLUDING_FLAGS`).

Units: temperature K.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, Field

from gptff_core.errors import GPTFFInputError
from gptff_flows.analysis.diffusion import (
    MAX_FRAMEWORK_DISPLACEMENT_A,
    MAX_RELATIVE_ERROR,
    MIN_LAG_WINDOW_FS,
    MIN_MSD_A2,
    MIN_MSD_EXPONENT,
)

TEMPERATURE_RELATIVE_TOLERANCE = 0.05
"""Fraction of the target by which the production mean temperature may miss it beyond its
statistical uncertainty (thermostat lag, slow drift). At Eₐ/kT ≈ 6 (0.3 eV at 600 K) a 5 % error
in T changes D by a factor exp(0.3) ≈ 1.35, about D's own statistical error on a 10–50 ps run."""
TEMPERATURE_SIGMAS = 3.0
"""Multiples of the expected canonical standard deviation of the mean temperature added to the
relative tolerance (3σ: a correctly thermostatted run is flagged by chance in 0.3 % of runs)."""
MAX_VOLUME_CHANGE = 0.15
"""Fraction by which the production mean volume of an NPT run may differ from the volume it
started from before the run is flagged ``volume_unstable``. Thermal expansion of solids from 0 K
to their melting point is a few per cent in volume (Al: about 7 %; alkali halides about 10 %), so
a larger change means the network does not hold the crystal together (the published v2 swells
Li₃YCl₆ by 80–180 % at 500–700 K) and D describes another material."""

FLAG_HELP = {
    "not_diffusive": f"MSD below {MIN_MSD_A2} Å² or log-log slope below {MIN_MSD_EXPONENT}: "
    "vibration, not diffusion; excluded from the Arrhenius fit",
    "too_short": "the production run is too short: pymatgen's smoothed MSD was impossible (D "
    "from a single time origin), or its lags span less than "
    f"{MIN_LAG_WINDOW_FS / 1000:g} ps (production < n_blocks × 2 ps)",
    "large_error": f"D's relative error above {MAX_RELATIVE_ERROR}",
    "framework_mobile": f"a framework atom moved more than {MAX_FRAMEWORK_DISPLACEMENT_A} Å "
    "(melting or decomposition?); excluded from the Arrhenius fit",
    "volume_unstable": f"the NPT mean volume differs from the starting volume by more than "
    f"{100 * MAX_VOLUME_CHANGE:g} % (the crystal swelled or collapsed); excluded from the "
    "Arrhenius fit",
    "temperature_not_reached": "the mean kinetic temperature of the production run misses the "
    f"target by more than {100 * TEMPERATURE_RELATIVE_TOLERANCE:g} % plus "
    f"{TEMPERATURE_SIGMAS:g}× its expected canonical standard deviation (see "
    "check_temperature); D belongs to another temperature: excluded from the Arrhenius fit",
}
"""What each per-temperature flag means."""


class TemperatureCheck(BaseModel):
    """Whether an MD run reached its target temperature (production part only)."""

    target: float = Field(description="K, thermostat target (or nominal NVE temperature)")
    mean: float = Field(description="K, mean kinetic temperature of the production frames")
    expected_std_of_mean: float = Field(
        description="K, canonical standard deviation of that mean: T·sqrt(2/(3N−3)) / sqrt(n_eff)"
    )
    n_effective: float = Field(
        description="independent samples of T: production time / (2 × correlation time), ≥ 1"
    )
    tolerance: float = Field(
        description="K, allowed |mean − target|: "
        f"{TEMPERATURE_RELATIVE_TOLERANCE:g}·target + {TEMPERATURE_SIGMAS:g}·expected_std_of_mean"
    )
    reached: bool = Field(description="|mean − target| ≤ tolerance")
    reason: str | None = Field(None, description="why the temperature is flagged (None: reached)")


def check_temperature(
    target: float,
    temperatures: Sequence[float] | np.ndarray,
    n_atoms: int,
    duration_fs: float,
    correlation_fs: float,
) -> TemperatureCheck:
    """Compare the mean of ``temperatures`` (K, production frames) with ``target`` (K).

    Tolerance (K) = ``TEMPERATURE_RELATIVE_TOLERANCE``·target + ``TEMPERATURE_SIGMAS``·σ_mean. In
    the canonical ensemble the kinetic temperature of ``n_atoms`` atoms with the total momentum
    fixed (3N − 3 degrees of freedom) fluctuates with σ = T·sqrt(2/(3N − 3)); it stays correlated
    over about the thermostat time ``correlation_fs`` (fs), so a run of ``duration_fs`` (fs) holds
    n_eff = max(1, duration / (2·correlation)) independent samples and σ_mean = σ/sqrt(n_eff).
    Small cells and short runs thus get a wide tolerance; a thermostat that did not hold the
    target (the mean missing it by more) is flagged.

    Raises:
        GPTFFInputError: no temperatures, a non-positive target or a non-finite temperature.
    """
    values = np.asarray(temperatures, dtype=float)
    if values.size == 0 or not np.isfinite(values).all():
        raise GPTFFInputError("check_temperature needs finite temperatures (K) of ≥ 1 frame")
    if not target > 0:
        raise GPTFFInputError(f"target temperature must be > 0 K, got {target}")
    mean = float(values.mean())
    dof = max(3 * int(n_atoms) - 3, 1)
    n_effective = max(1.0, float(duration_fs) / (2.0 * float(correlation_fs)))
    std_of_mean = target * math.sqrt(2.0 / dof) / math.sqrt(n_effective)
    tolerance = TEMPERATURE_RELATIVE_TOLERANCE * target + TEMPERATURE_SIGMAS * std_of_mean
    reached = abs(mean - target) <= tolerance
    reason = None
    if not reached:
        reason = (
            f"mean T {mean:.0f} K misses the {target:g} K target by {abs(mean - target):.0f} K "
            f"(tolerance ±{tolerance:.0f} K)"
        )
    return TemperatureCheck(
        target=float(target),
        mean=mean,
        expected_std_of_mean=std_of_mean,
        n_effective=n_effective,
        tolerance=tolerance,
        reached=reached,
        reason=reason,
    )
