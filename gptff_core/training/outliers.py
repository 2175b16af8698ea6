"""Training and validation labels checked before any training step.

* A non-finite label (NaN or infinity) is always refused.
* **Energies.** The per-element reference energies are fitted robustly (Huber, see
  :mod:`~gptff_core.training.references`) to ``(E_label − E_network)/N`` of the training frames,
  ``E_network`` being the network's energy without its references. A frame is an outlier when
  its residual per atom ``r`` (label minus that fit) satisfies ``|r| > MAD_FACTOR·σ`` **and**
  ``|r| > energy floor``: σ = 1.4826 × the median absolute deviation of the training residuals,
  ``MAD_FACTOR`` = 10, the floor ``Recipe.outlier_energy_per_atom`` (default 5 eV/atom). The
  floor keeps legitimately varied data (surfaces, hot MD, defects: up to a few eV/atom from a
  per-element fit) from being refused when σ is small; the σ condition keeps a data set of wide
  spread from being cut. Validation frames are measured against the training fit when every
  element of theirs is in the training set.
* **Forces.** A frame with an atom whose force norm exceeds ``Recipe.outlier_force`` (default
  100 eV/Å) is an outlier.

Outliers are refused with a :class:`GPTFFInputError` naming frame and file, or dropped and
reported when ``Recipe.drop_outliers`` (``gptff finetune --drop-outliers``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from gptff_core.errors import GPTFFInputError
from gptff_core.training.datasets import Frame
from gptff_core.training.references import composition_matrix, reference_fit

logger = logging.getLogger(__name__)

MAD_FACTOR = 10.0
"""An energy residual must exceed this many σ (1.4826·MAD) to be an outlier."""


@dataclass
class Outlier:
    """One frame left out of (or refusing) a run: its name, file, frame number in the file,
    split (``train``/``valid``) and position in that split, and why."""

    frame: str
    file: str
    index: int
    split: str
    position: int
    reason: str


@dataclass
class Screening:
    """The rule applied and the outliers found (dropped when ``dropped``)."""

    rule: dict
    outliers: list[Outlier] = field(default_factory=list)
    dropped: bool = False

    def record(self) -> dict:
        """JSON-ready summary for checkpoints, metrics.json and the CLI."""
        return {
            "rule": self.rule,
            "n_dropped": len(self.outliers) if self.dropped else 0,
            "dropped": [asdict(o) for o in self.outliers] if self.dropped else [],
            "files": sorted({o.file for o in self.outliers}) if self.dropped else [],
        }


def check_finite_labels(frames: Sequence[Frame], split: str) -> None:
    """Refuse a frame whose energy, forces or stress hold NaN or infinity (always)."""
    for frame in frames:
        for name, value in (("energy", frame.energy), ("forces", frame.forces),
                            ("stress", frame.stress)):  # fmt: skip
            if value is not None and not np.isfinite(np.asarray(value, dtype=float)).all():
                raise GPTFFInputError(
                    f"{frame.label} ({split}): its {name} label is not finite (NaN or infinity); "
                    "fix or remove the frame"
                )


def _energy_outliers(
    train: Sequence[Frame],
    valid: Sequence[Frame],
    energies: tuple[np.ndarray, np.ndarray],
    references: np.ndarray,
    floor: float,
) -> tuple[list[Outlier], float]:
    """Energy outliers of both splits and the σ (eV/atom) of the training residuals."""
    fit = reference_fit(train, energies[0], references)
    threshold = max(MAD_FACTOR * fit.sigma, floor)
    rule = f"|r| > max({MAD_FACTOR:g}σ = {MAD_FACTOR * fit.sigma:.3g}, {floor:g}) eV/atom"
    found = []
    for split, frames, network in (("train", train, energies[0]), ("valid", valid, energies[1])):
        counts = composition_matrix(frames, len(references))
        for k, frame in enumerate(frames):
            if frame.energy is None:
                continue
            if split == "valid" and not np.isin(np.flatnonzero(counts[k]), fit.present).all():
                continue  # an element the training set cannot calibrate
            residual = (frame.energy - network[k] - counts[k] @ fit.references) / frame.n_atoms
            if abs(residual) > threshold:
                reason = (
                    f"energy {frame.energy:.6g} eV is {residual:+.4g} eV/atom from the robust "
                    f"per-element fit of the training energies ({rule})"
                )
                found.append(Outlier(frame.label, frame.source, frame.index, split, k, reason))
    return found, fit.sigma


def _force_outliers(frames: Sequence[Frame], split: str, bound: float) -> list[Outlier]:
    found = []
    for k, frame in enumerate(frames):
        if frame.forces is None or frame.n_atoms == 0:
            continue
        largest = float(np.linalg.norm(frame.forces, axis=1).max())
        if largest > bound:
            reason = f"a force of {largest:.4g} eV/Å (rule: |F| > {bound:g} eV/Å)"
            found.append(Outlier(frame.label, frame.source, frame.index, split, k, reason))
    return found


def screen(
    train: Sequence[Frame],
    valid: Sequence[Frame],
    energies: tuple[np.ndarray, np.ndarray],
    references: np.ndarray,
    recipe,
) -> Screening:
    """Apply the module's rule with ``recipe``'s thresholds.

    Args:
        train, valid: the frames.
        energies: network energies without references of ``train`` and ``valid``, eV.
        references: (n_elements,) the references in use, eV/atom.
        recipe: a :class:`~gptff_core.training.recipe.Recipe`.

    Raises:
        GPTFFInputError: a non-finite label.
    """
    check_finite_labels(train, "train")
    check_finite_labels(valid, "valid")
    floor, bound = recipe.outlier_energy_per_atom, recipe.outlier_force
    rule = {"energy_mad_factor": MAD_FACTOR, "energy_floor_eV_per_atom": floor,
            "force_bound_eV_per_A": bound}  # fmt: skip
    outliers: list[Outlier] = []
    if floor is not None and any(f.energy is not None for f in train):
        found, sigma = _energy_outliers(train, valid, energies, references, floor)
        rule["energy_sigma_eV_per_atom"] = sigma
        outliers += found
    if bound is not None:
        outliers += _force_outliers(train, "train", bound) + _force_outliers(valid, "valid", bound)
    unique: dict[tuple[str, int], Outlier] = {}
    for outlier in outliers:  # one entry per frame, its energy reason first
        unique.setdefault((outlier.split, outlier.position), outlier)
    return Screening(rule, list(unique.values()), dropped=recipe.drop_outliers)


def refuse_or_drop(
    screening: Screening, train: Sequence[Frame], valid: Sequence[Frame]
) -> tuple[list[int], list[int]]:
    """Positions of the frames kept in ``train`` and ``valid``.

    Raises:
        GPTFFInputError: outliers and not ``screening.dropped`` (first ones named), or a split
            left empty by dropping.
    """
    if screening.outliers and not screening.dropped:
        shown = "; ".join(f"{o.frame}: {o.reason}" for o in screening.outliers[:3])
        more = len(screening.outliers) - 3
        raise GPTFFInputError(
            f"{len(screening.outliers)} outlier frame(s) in the data: {shown}"
            + (f"; and {more} more" if more > 0 else "")
            + ". Fix or remove them, or pass --drop-outliers (Recipe(drop_outliers=True)) to "
            "leave them out; --outlier-energy/--outlier-force set the limits"
        )
    out = {(o.split, o.position) for o in screening.outliers}
    kept_train = [i for i in range(len(train)) if ("train", i) not in out]
    kept_valid = [i for i in range(len(valid)) if ("valid", i) not in out]
    if screening.outliers:
        logger.warning(
            "dropped %d outlier frame(s): %s",
            len(screening.outliers),
            "; ".join(f"{o.frame}: {o.reason}" for o in screening.outliers),
        )
    if not kept_train or not kept_valid:
        raise GPTFFInputError(
            "dropping the outliers leaves no "
            + ("training" if not kept_train else "validation")
            + " frame; check the data"
        )
    return kept_train, kept_valid
