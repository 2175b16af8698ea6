"""Diffusion of one species at one temperature from an MD trajectory (pymatgen-analysis-diffusion).

:func:`analyze_diffusion` gives the mean squared displacement (MSD) of the mobile species after
equilibration, the diffusion coefficient D with its statistical error, the Nernst–Einstein
conductivity, and flags when the run is not diffusive or too short to trust. The MSD, D and σ come
from pymatgen's :class:`~pymatgen.analysis.diffusion.analyzer.DiffusionAnalyzer` (framework drift
removed, all time origins averaged, ``smoothed="max"``). The temperature and volume checks are in
:mod:`.md_verdict`, the Arrhenius fit in :mod:`.arrhenius`, the plots in :mod:`.plotting`.

Units: positions Å, time fs, temperature K, D cm²/s (pymatgen's unit; 1 cm²/s = 10 Å²/fs),
conductivity mS/cm.

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
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from pydantic import BaseModel, Field
from pymatgen.analysis.diffusion.analyzer import DiffusionAnalyzer, get_conversion_factor
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


EXCLUDING_FLAGS = frozenset(
    {"not_diffusive", "framework_mobile", "temperature_not_reached", "volume_unstable"}
)
"""Per-temperature flags that leave a temperature out of the Arrhenius fit."""


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
    flags: list[str] = Field(default_factory=list, description="see md_verdict.FLAG_HELP")

    @property
    def diffusive(self) -> bool:
        """The mobile ions diffuse (D > 0, not flagged ``not_diffusive``)."""
        return "not_diffusive" not in self.flags and self.diffusivity > 0

    @property
    def fit_worthy(self) -> bool:
        """Diffusive in an intact framework at the target temperature: used by the Arrhenius
        fit (no flag of :data:`EXCLUDING_FLAGS`)."""
        return self.diffusivity > 0 and not EXCLUDING_FLAGS & set(self.flags)


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
    frac, n_mobile = _checked_trajectory(
        structure, frac_coords, species, frame_interval_fs, n_blocks
    )
    run = _production_run(structure, frac, species, temperature, frame_interval_fs, lattices)
    charge = valence_charge(species) if charge is None else float(charge)
    analyzer, smoothing = _fit_msd(run, n_mobile, n_blocks)
    estimate = _diffusivity_estimate(analyzer, run, smoothing, n_mobile, n_blocks)
    msd = _msd_summary(analyzer, run)
    flags = _flags(smoothing, _lag_window_fs(analyzer), estimate, msd, min_msd)
    factor = nernst_einstein_factor(run.start, species, temperature, charge)
    return DiffusionResult(
        species=species,
        charge=charge,
        temperature=float(temperature),
        n_mobile=n_mobile,
        n_frames=len(frac),
        frame_interval_fs=float(frame_interval_fs),
        production_fs=float((len(frac) - 1) * frame_interval_fs),
        smoothing=smoothing,
        conductivity=estimate.diffusivity * factor,
        conductivity_error=estimate.diffusivity_error * factor,
        flags=flags,
        **estimate._asdict(),
        **msd._asdict(),
    )


def _checked_trajectory(
    structure: Structure,
    frac_coords: np.ndarray,
    species: str,
    frame_interval_fs: float,
    n_blocks: int,
) -> tuple[np.ndarray, int]:
    """The fractional coordinates as a float array (n_frames, n_atoms, 3) and the number of
    atoms of ``species``, after refusing what :func:`analyze_diffusion` cannot analyse
    (``frame_interval_fs`` in fs)."""
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
    return frac, n_mobile


@dataclass(frozen=True)
class _ProductionRun:
    """The production run as pymatgen's :class:`DiffusionAnalyzer` takes it: ``start`` the
    cell at the start of production with the mean lattice (Å; NPT), whose volume sets the
    carrier density of Nernst–Einstein; ``displacements`` (n_atoms, n_frames, 3) Å from the
    first frame, unwrapped; ``lattices`` (1, 3, 3) Å, the mean lattice (pymatgen only keeps it
    for drift-corrected frames); the mobile ``species``, ``temperature`` K, ``interval_fs`` fs
    between frames."""

    start: Structure
    displacements: np.ndarray
    lattices: np.ndarray
    species: str
    temperature: float
    interval_fs: float

    def analyzer(
        self, displacements: np.ndarray, smoothed: str | bool, min_obs: int = 30
    ) -> DiffusionAnalyzer:
        """pymatgen's analyser of ``displacements`` (Å; the whole run or one block); raises
        ``ValueError`` when the run is too short for ``smoothed``."""
        args = (self.start, displacements, self.species, self.temperature, self.interval_fs, 1)
        return DiffusionAnalyzer(*args, smoothed=smoothed, min_obs=min_obs, lattices=self.lattices)


def _production_run(
    structure: Structure,
    frac: np.ndarray,
    species: str,
    temperature: float,
    interval_fs: float,
    lattices: np.ndarray | None,
) -> _ProductionRun:
    """Unwrapped displacements (Å) and the starting cell with the mean lattice (Å) of the run
    (``lattices`` None: ``structure``'s); ``temperature`` K, ``interval_fs`` fs."""
    given = structure.lattice.matrix if lattices is None else lattices
    lattice_array = np.asarray(given, dtype=float)
    displacements = unwrapped_displacements(frac, lattice_array)
    mean_lattice = lattice_array.mean(axis=0) if lattice_array.ndim == 3 else lattice_array
    start = Structure(mean_lattice, [s.specie for s in structure], frac[0])
    return _ProductionRun(
        start, displacements, mean_lattice[None], species, temperature, interval_fs
    )


def _fit_msd(run: _ProductionRun, n_mobile: int, n_blocks: int) -> tuple[DiffusionAnalyzer, str]:
    """pymatgen's analyser of the whole run and its smoothing: ``"max"`` (all time origins,
    lags up to 1/``n_blocks`` of the run), or ``"none"`` when the run is too short for it."""
    try:
        return run.analyzer(run.displacements, "max", min_obs=max(30, n_mobile * n_blocks)), "max"
    except ValueError:
        return run.analyzer(run.displacements, False), "none"


def _block_diffusivities(run: _ProductionRun, n_blocks: int, n_mobile: int) -> list[float]:
    """D (cm²/s) of each of ``n_blocks`` contiguous blocks (lags up to half a block); [] when a
    block is too short for pymatgen's smoothed MSD."""
    n_frames = run.displacements.shape[1]
    edges = np.linspace(0, n_frames, n_blocks + 1).astype(int)
    values = []
    for lo, hi in itertools.pairwise(edges):
        block = run.displacements[:, lo:hi] - run.displacements[:, lo : lo + 1]
        try:
            analyzer = run.analyzer(block, "max", min_obs=2 * n_mobile)
        except ValueError:
            return []
        values.append(float(analyzer.diffusivity))
    return values


class _Estimate(NamedTuple):
    """D and its errors, cm²/s (fields of :class:`DiffusionResult`)."""

    diffusivity: float
    diffusivity_error: float
    diffusivity_regression_error: float
    diffusivity_block_error: float | None
    block_diffusivities: list[float]


def _diffusivity_estimate(
    analyzer: DiffusionAnalyzer, run: _ProductionRun, smoothing: str, n_mobile: int, n_blocks: int
) -> _Estimate:
    """D (cm²/s) and its reported error: the largest of pymatgen's regression error, the
    Student-t widened standard error of the block mean and (smoothed runs) the error of
    ``n_mobile`` independent walkers over ``n_blocks`` windows."""
    diffusivity = float(analyzer.diffusivity)
    regression = float(analyzer.diffusivity_std_dev)
    blocks = _block_diffusivities(run, n_blocks, n_mobile)
    block_error = None
    if blocks:  # standard error of the mean, widened to a 68 % interval with Student's t
        student = float(t_distribution.ppf(0.84, len(blocks) - 1))
        block_error = student * float(np.std(blocks, ddof=1) / math.sqrt(len(blocks)))
    # the error of n_mobile independent walkers observed over n_blocks independent windows: a
    # floor (correlated ions only add to it) when a few blocks happen to agree by chance
    counting_error = abs(diffusivity) * math.sqrt(2.0 / (3.0 * n_mobile * n_blocks))
    error = max(regression, block_error or 0.0, counting_error if smoothing == "max" else 0.0)
    return _Estimate(diffusivity, error, regression, block_error, blocks)


class _MSDSummary(NamedTuple):
    """The MSD fields of :class:`DiffusionResult` (Å², fs)."""

    final_msd: float
    msd_exponent: float | None
    max_framework_displacement: float
    msd: list[float]
    msd_time_fs: list[float]


def _msd_summary(analyzer: DiffusionAnalyzer, run: _ProductionRun) -> _MSDSummary:
    """The MSD (Å², at most 200 lags in fs), its log–log slope, the mobile ions' MSD from the
    first to the last frame (Å², framework drift removed) and the largest framework
    displacement (Å)."""
    msd, dt = np.asarray(analyzer.msd, dtype=float), np.asarray(analyzer.dt, dtype=float)
    mobile = [i for i, site in enumerate(run.start) if site.specie.symbol == run.species]
    framework = [i for i in range(len(run.start)) if i not in set(mobile)]
    displacements = run.displacements
    drift = displacements[framework, -1].mean(axis=0) if framework else np.zeros(3)
    final_msd = float(np.mean(np.sum((displacements[mobile, -1] - drift) ** 2, axis=-1)))
    stride = max(1, len(msd) // 200)
    return _MSDSummary(
        final_msd=final_msd,
        msd_exponent=_msd_exponent(msd, dt),
        max_framework_displacement=float(analyzer.max_framework_displacement),
        msd=msd[::stride].tolist(),
        msd_time_fs=dt[::stride].tolist(),
    )


def _msd_exponent(msd: np.ndarray, dt: np.ndarray) -> float | None:
    """Slope of log MSD vs log t (None: fewer than 3 positive points)."""
    keep = (dt > 0) & (msd > 0)
    if keep.sum() < 3:
        return None
    return float(np.polyfit(np.log(dt[keep]), np.log(msd[keep]), 1)[0])


def _lag_window_fs(analyzer: DiffusionAnalyzer) -> float:
    """fs, the span of lags pymatgen fitted (0 with fewer than two lags)."""
    dt = np.asarray(analyzer.dt, dtype=float)
    return float(dt[-1] - dt[0]) if len(dt) >= 2 else 0.0


def _flags(
    smoothing: str, lag_window_fs: float, estimate: _Estimate, msd: _MSDSummary, min_msd: float
) -> list[str]:
    """The run's verdicts, in this order: ``too_short`` (no smoothed MSD, or lags spanning less
    than :data:`MIN_LAG_WINDOW_FS` fs), ``not_diffusive`` (final MSD below ``min_msd`` Å² or
    log–log slope below :data:`MIN_MSD_EXPONENT`), ``large_error``, ``framework_mobile``."""
    flags = []
    if smoothing == "none" or lag_window_fs < MIN_LAG_WINDOW_FS:
        flags.append("too_short")
    exponent = msd.msd_exponent
    if msd.final_msd < min_msd or (exponent is not None and exponent < MIN_MSD_EXPONENT):
        flags.append("not_diffusive")
    diffusivity = estimate.diffusivity
    if diffusivity <= 0 or estimate.diffusivity_error > MAX_RELATIVE_ERROR * diffusivity:
        flags.append("large_error")
    if msd.max_framework_displacement > MAX_FRAMEWORK_DISPLACEMENT_A:
        flags.append("framework_mobile")
    return flags
