"""Diffusion analysis of MD trajectories with pymatgen-analysis-diffusion.

* :func:`analyze_diffusion` — one temperature: mean squared displacement (MSD) of the mobile
  species after equilibration, diffusion coefficient D with its statistical error, Nernst–Einstein
  conductivity, and flags when the run is not diffusive or too short to trust. The MSD, D and
  σ come from pymatgen's :class:`~pymatgen.analysis.diffusion.analyzer.DiffusionAnalyzer`
  (framework drift removed, all time origins averaged, ``smoothed="max"``).
* :func:`check_temperature` — whether the production run's mean temperature reached its
  target within a stated tolerance (flag ``temperature_not_reached`` otherwise).
* :func:`fit_arrhenius_temperatures` — Arrhenius fit ``D = D0 exp(−Ea/kT)`` over the usable
  temperatures (pymatgen's ``fit_arrhenius``): Ea in eV with its standard error, and the
  conductivity extrapolated to 300 K (pymatgen's ``get_extrapolated_conductivity``); flagged
  temperatures (:data:`EXCLUDING_FLAGS`) are left out, and fewer than two usable give no Ea.
* :func:`plot_msd`, :func:`plot_arrhenius` — PNG files.

Units: positions Å, time fs, temperature K, D cm²/s (pymatgen's unit; 1 cm²/s = 10 Å²/fs),
conductivity mS/cm, Ea eV.

Statistical error of D: pymatgen's regression error of the MSD slope underestimates the
uncertainty (successive MSD points are correlated), so D is taken from lags up to
1/``n_blocks`` of the production run, the run is also cut into ``n_blocks`` contiguous blocks
analysed independently, and the reported error is the largest of the regression error, the
standard error of the block mean (widened to 68 % with Student's t) and the error of
``n_mobile`` independent random walkers over ``n_blocks`` windows,
``D·sqrt(2 / (3·n_mobile·n_blocks))`` (a floor: correlated ions only add to it). Measured on
12 synthetic random walks (32 ions, 20 ps): rms of (D − D_true)/error = 0.8.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from ase import units
from pydantic import BaseModel, Field
from pymatgen.analysis.diffusion.analyzer import (
    DiffusionAnalyzer,
    fit_arrhenius,
    get_conversion_factor,
    get_extrapolated_conductivity,
)
from pymatgen.core import Element, Structure
from scipy.stats import t as t_distribution

from gptff_core.errors import GPTFFInputError

logger = logging.getLogger(__name__)

MIN_MSD_A2 = 1.0
"""Å², mean squared displacement of the mobile ions over the whole production run below which
the run counts as not diffusive (thermal vibration alone gives ~0.1–0.3 Å²; one ~2.5 Å hop of
one ion in 32 adds ~0.2 Å²)."""
MIN_MSD_EXPONENT = 0.5
"""Slope of log MSD vs log t over the analysed lags below which a run is not diffusive (1 for
diffusion, 0 for vibration in a cage)."""
MAX_RELATIVE_ERROR = 0.5
"""Relative error of D above which the run is flagged ``large_error``."""
MAX_FRAMEWORK_DISPLACEMENT_A = 2.0
"""Å; a framework atom that moved farther (drift removed) flags ``framework_mobile`` (melting?)."""
MIN_LAG_WINDOW_FS = 1000.0
"""fs; pymatgen fits lags from 1 ps (past the ballistic regime) to 1/``n_blocks`` of the run here:
a window narrower than this flags ``too_short`` (production < ``n_blocks`` × 2 ps)."""
ROOM_TEMPERATURE_K = 300.0
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
EXCLUDING_FLAGS = frozenset(
    {"not_diffusive", "framework_mobile", "temperature_not_reached", "volume_unstable"}
)
"""Per-temperature flags that leave a temperature out of the Arrhenius fit."""

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


class DiffusionResult(BaseModel):
    """Diffusion of one species at one temperature (after equilibration)."""

    species: str = Field(description="mobile species, e.g. 'Li'")
    charge: float = Field(description="charge of the mobile ion (e) used by Nernst–Einstein")
    temperature: float = Field(description="K, temperature used for Nernst–Einstein")
    n_mobile: int = Field(description="atoms of the mobile species in the cell")
    n_frames: int = Field(description="frames analysed (after equilibration)")
    frame_interval_fs: float = Field(description="fs between analysed frames")
    production_fs: float = Field(description="fs, length of the analysed run")
    smoothing: str = Field(description="pymatgen smoothing used: 'max' or 'none' (too short)")
    diffusivity: float = Field(description="cm²/s, self-diffusion coefficient D")
    diffusivity_error: float = Field(description="cm²/s, reported 1σ error of D")
    diffusivity_regression_error: float = Field(description="cm²/s, pymatgen's slope error")
    diffusivity_block_error: float | None = Field(
        None, description="cm²/s, standard error of the block mean (None: blocks too short)"
    )
    block_diffusivities: list[float] = Field(
        default_factory=list, description="cm²/s, D of each block"
    )
    conductivity: float = Field(description="mS/cm, Nernst–Einstein conductivity (Haven ratio 1)")
    conductivity_error: float = Field(description="mS/cm, 1σ error from D's error")
    final_msd: float = Field(
        description="Å², mean squared displacement of the mobile ions from the first to the last "
        "frame (framework drift removed)"
    )
    msd_exponent: float | None = Field(None, description="slope of log MSD vs log t")
    max_framework_displacement: float = Field(description="Å, drift removed")
    msd: list[float] = Field(description="Å², MSD of the mobile species (≤ 200 lags)")
    msd_time_fs: list[float] = Field(description="fs, lag of each MSD value")
    flags: list[str] = Field(default_factory=list, description="see diffusion.FLAG_HELP")

    @property
    def diffusive(self) -> bool:
        """The mobile ions diffuse (D > 0, not flagged ``not_diffusive``)."""
        return "not_diffusive" not in self.flags and self.diffusivity > 0

    @property
    def fit_worthy(self) -> bool:
        """Diffusive in an intact framework at the target temperature: used by the Arrhenius
        fit (no flag of :data:`EXCLUDING_FLAGS`)."""
        return self.diffusivity > 0 and not EXCLUDING_FLAGS & set(self.flags)


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


def valence_charge(species: str) -> float:
    """pymatgen's guess of an ion's charge (its valence electrons: 1 for Li and Na), e."""
    return float(Element(species).full_electronic_structure[-1][2])


def nernst_einstein_factor(
    structure: Structure, species: str, temperature: float, charge: float | None = None
) -> float:
    """(mS/cm) / (cm²/s): pymatgen's Nernst–Einstein factor for ``species`` in ``structure``
    at ``temperature`` (K), for an ion of ``charge`` (e; None: :func:`valence_charge`)."""
    factor = get_conversion_factor(structure, species, temperature)
    if charge is None:
        return factor
    return factor * (charge / valence_charge(species)) ** 2


def unwrapped_displacements(frac: np.ndarray, lattices: np.ndarray) -> np.ndarray:
    """Cartesian displacements (n_atoms, n_frames, 3) Å from the first frame, unwrapped across
    periodic boundaries (each step's fractional change taken to its nearest image), as pymatgen's
    ``DiffusionAnalyzer.from_structures`` builds them.

    Args:
        frac: (n_frames, n_atoms, 3) fractional coordinates.
        lattices: (n_frames, 3, 3) lattice vectors as rows, Å (one cell for every frame: (3, 3)).
    """
    frac = np.asarray(frac, dtype=float)
    lattices = np.asarray(lattices, dtype=float)
    if lattices.ndim == 2:
        lattices = np.broadcast_to(lattices, (len(frac), 3, 3))
    step = np.diff(frac, axis=0)
    step -= np.round(step)
    cumulative = np.concatenate([np.zeros_like(frac[:1]), np.cumsum(step, axis=0)])
    cartesian = np.einsum("fai,fij->faj", cumulative, lattices)
    return np.transpose(cartesian, (1, 0, 2))


def _analyzer(
    structure, displacements, species, temperature, interval_fs, lattices, smoothed, min_obs=30
):
    return DiffusionAnalyzer(
        structure,
        displacements,
        species,
        temperature,
        interval_fs,
        1,
        smoothed=smoothed,
        min_obs=min_obs,
        lattices=lattices,
    )


def _msd_exponent(msd: np.ndarray, dt: np.ndarray) -> float | None:
    keep = (dt > 0) & (msd > 0)
    if keep.sum() < 3:
        return None
    return float(np.polyfit(np.log(dt[keep]), np.log(msd[keep]), 1)[0])


def analyze_diffusion(
    structure: Structure,
    frac_coords: np.ndarray,
    species: str,
    temperature: float,
    frame_interval_fs: float,
    lattices: np.ndarray | None = None,
    charge: float | None = None,
    n_blocks: int = 5,
    min_msd: float = MIN_MSD_A2,
) -> DiffusionResult:
    """D, σ and flags of ``species`` from a trajectory (equilibration already removed).

    Args:
        structure: the cell (species and order of the atoms; its lattice when ``lattices`` is
            None).
        frac_coords: (n_frames, n_atoms, 3) fractional coordinates, wrapped or not.
        species: mobile element, e.g. ``"Li"``.
        temperature: K (the thermostat's target, or the measured mean).
        frame_interval_fs: fs between frames (time step × frames interval).
        lattices: (n_frames, 3, 3) Å, lattice vectors as rows (NPT); None: ``structure``'s.
        charge: ionic charge for Nernst–Einstein (None: pymatgen's valence guess, 1 for Li).
        n_blocks: blocks for the error estimate (≥ 2).
        min_msd: Å², below this final MSD the run is flagged ``not_diffusive``.

    Raises:
        GPTFFInputError: no atom of ``species``, fewer than 3 frames, mismatched shapes.
    """
    frac = np.asarray(frac_coords, dtype=float)
    if frac.ndim != 3 or frac.shape[1:] != (len(structure), 3):
        raise GPTFFInputError(
            f"frac_coords must have shape (n_frames, {len(structure)}, 3), got {frac.shape}"
        )
    if len(frac) < 3:
        raise GPTFFInputError(f"need at least 3 frames after equilibration, got {len(frac)}")
    if not frame_interval_fs > 0:
        raise GPTFFInputError(f"frame_interval_fs must be > 0 fs, got {frame_interval_fs}")
    if n_blocks < 2:
        raise GPTFFInputError(f"n_blocks must be at least 2, got {n_blocks}")
    n_mobile = sum(site.specie.symbol == species for site in structure)
    if n_mobile == 0:
        raise GPTFFInputError(
            f"species {species!r} is not in {structure.composition.reduced_formula}; "
            "give the mobile element, e.g. Li"
        )
    if n_mobile == len(structure):
        raise GPTFFInputError(
            f"every atom is {species}: the analysis removes the drift of the other (framework) "
            "atoms and needs some"
        )
    lattice_array = (
        np.asarray(lattices, dtype=float)
        if lattices is not None
        else np.asarray(structure.lattice.matrix)
    )
    displacements = unwrapped_displacements(frac, lattice_array)
    mean_lattice = lattice_array.mean(axis=0) if lattice_array.ndim == 3 else lattice_array
    analyzer_lattices = mean_lattice[None]  # pymatgen only keeps it for drift-corrected frames
    # the cell at the start of production, with the mean lattice (NPT): its volume sets the
    # carrier density of Nernst-Einstein
    start = Structure(mean_lattice, [s.specie for s in structure], frac[0])
    ion = species
    charge = valence_charge(species) if charge is None else float(charge)
    flags = []
    smoothing = "max"
    try:
        analyzer = _analyzer(
            start,
            displacements,
            ion,
            temperature,
            frame_interval_fs,
            analyzer_lattices,
            "max",
            min_obs=max(30, n_mobile * n_blocks),
        )
    except ValueError:
        smoothing = "none"
        flags.append("too_short")
        analyzer = _analyzer(
            start, displacements, ion, temperature, frame_interval_fs, analyzer_lattices, False
        )
    diffusivity = float(analyzer.diffusivity)
    regression = float(analyzer.diffusivity_std_dev)
    blocks = _block_diffusivities(
        start,
        displacements,
        ion,
        temperature,
        frame_interval_fs,
        analyzer_lattices,
        n_blocks,
        n_mobile,
    )
    block_error = None
    if blocks:  # standard error of the mean, widened to a 68 % interval with Student's t
        student = float(t_distribution.ppf(0.84, len(blocks) - 1))
        block_error = student * float(np.std(blocks, ddof=1) / math.sqrt(len(blocks)))
    # the error of n_mobile independent walkers observed over n_blocks independent windows: a
    # floor (correlated ions only add to it) when a few blocks happen to agree by chance
    counting_error = abs(diffusivity) * math.sqrt(2.0 / (3.0 * n_mobile * n_blocks))
    error = max(regression, block_error or 0.0, counting_error if smoothing == "max" else 0.0)
    msd, dt = np.asarray(analyzer.msd, dtype=float), np.asarray(analyzer.dt, dtype=float)
    exponent = _msd_exponent(msd, dt)
    if smoothing == "max" and (len(dt) < 2 or dt[-1] - dt[0] < MIN_LAG_WINDOW_FS):
        flags.append("too_short")
    mobile = [i for i, site in enumerate(start) if site.specie.symbol == species]
    framework = [i for i in range(len(start)) if i not in set(mobile)]
    drift = displacements[framework, -1].mean(axis=0) if framework else np.zeros(3)
    final_msd = float(np.mean(np.sum((displacements[mobile, -1] - drift) ** 2, axis=-1)))
    if final_msd < min_msd or (exponent is not None and exponent < MIN_MSD_EXPONENT):
        flags.append("not_diffusive")
    if diffusivity <= 0 or error > MAX_RELATIVE_ERROR * diffusivity:
        flags.append("large_error")
    framework_displacement = float(analyzer.max_framework_displacement)
    if framework_displacement > MAX_FRAMEWORK_DISPLACEMENT_A:
        flags.append("framework_mobile")
    factor = nernst_einstein_factor(start, species, temperature, charge)
    stride = max(1, len(msd) // 200)
    return DiffusionResult(
        species=species,
        charge=charge,
        temperature=float(temperature),
        n_mobile=n_mobile,
        n_frames=len(frac),
        frame_interval_fs=float(frame_interval_fs),
        production_fs=float((len(frac) - 1) * frame_interval_fs),
        smoothing=smoothing,
        diffusivity=diffusivity,
        diffusivity_error=error,
        diffusivity_regression_error=regression,
        diffusivity_block_error=block_error,
        block_diffusivities=blocks,
        conductivity=diffusivity * factor,
        conductivity_error=error * factor,
        final_msd=final_msd,
        msd_exponent=exponent,
        max_framework_displacement=framework_displacement,
        msd=msd[::stride].tolist(),
        msd_time_fs=dt[::stride].tolist(),
        flags=flags,
    )


def _block_diffusivities(
    start, displacements, ion, temperature, interval, lattices, n_blocks, n_mobile
):
    """D of each of ``n_blocks`` contiguous blocks (lags up to half a block); [] when a block is
    too short for pymatgen's smoothed MSD."""
    n_frames = displacements.shape[1]
    edges = np.linspace(0, n_frames, n_blocks + 1).astype(int)
    values = []
    for lo, hi in itertools.pairwise(edges):
        block = displacements[:, lo:hi] - displacements[:, lo : lo + 1]
        try:
            analyzer = _analyzer(
                start, block, ion, temperature, interval, lattices, "max", min_obs=2 * n_mobile
            )
        except ValueError:
            return []
        values.append(float(analyzer.diffusivity))
    return values


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
    temps = np.array(fit.temperatures)
    values = np.array(fit.diffusivities)
    ea, prefactor, ea_error = fit_arrhenius(temps, values, mode="linear")
    fit.activation_energy = float(ea)
    fit.prefactor = float(prefactor)
    fit.activation_energy_error = None if ea_error is None else float(ea_error)
    if ea_error is None:
        fit.flags.append("no_error_with_two_temperatures")
    charge_scale = (results[0].charge / valence_charge(species)) ** 2
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
    return fit


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
