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

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, Field

from gptff_core.errors import GPTFFInputError
from gptff_core.md import (  # the rule gptff md applies too
    TEMPERATURE_RELATIVE_TOLERANCE,
    TEMPERATURE_SIGMAS,
    temperature_tolerance,
)
from gptff_flows.analysis.diffusion import (
    MAX_FRAMEWORK_DISPLACEMENT_A,
    MAX_RELATIVE_ERROR,
    MIN_LAG_WINDOW_FS,
    MIN_MSD_A2,
    MIN_MSD_EXPONENT,
)

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

    The tolerance (K) is :func:`gptff_core.md.temperature_tolerance`'s: 5 % of the target plus
    3 canonical standard deviations of the mean over the run's independent samples, so small
    cells and short runs get a wide tolerance; a thermostat that did not hold the target (the
    mean missing it by more) is flagged.

    Raises:
        GPTFFInputError: no temperatures, a non-positive target or a non-finite temperature.
    """
    values = np.asarray(temperatures, dtype=float)
    if values.size == 0 or not np.isfinite(values).all():
        raise GPTFFInputError("check_temperature needs finite temperatures (K) of ≥ 1 frame")
    if not target > 0:
        raise GPTFFInputError(f"target temperature must be > 0 K, got {target}")
    mean = float(values.mean())
    std_of_mean, n_effective, tolerance = temperature_tolerance(
        target, n_atoms, duration_fs, correlation_fs
    )
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
