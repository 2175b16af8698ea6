"""The training recipe: every option of a fine-tuning (or from-scratch) run, with the paper's
defaults, saved in each checkpoint and in the resume state."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from gptff_core.errors import GPTFFInputError
from gptff_core.training.references import REFIT_MODES


@dataclass(frozen=True)
class Recipe:
    """Options of a training run (units in each line).

    Attributes:
        epochs: passes over the training set (or over ``structures_per_epoch`` samples of it).
        learning_rate: AdamW's initial learning rate (paper: 2e-4).
        final_learning_rate: reached by cosine decay at the end of the last epoch (paper: 5e-6).
        warmup_steps: optimizer steps of linear warm-up from 0 (0: none).
        weight_decay: AdamW's decoupled weight decay.
        energy_weight: weight of the Huber loss on the energy per atom (eV/atom).
        forces_weight: weight of the Huber loss on force components (eV/Å).
        stress_weight: weight of the Huber loss on stress components (GPa).
        huber_delta: Huber threshold, in each term's unit.
        grad_clip: largest L2 norm of the gradient of all parameters (None: no clipping).
        max_structures_per_batch: structures per batch at most.
        max_atoms_per_batch: atoms per batch at most (a larger structure runs alone).
        max_triplets_per_batch: triplets per batch at most; with the atoms it bounds the memory.
        structures_per_epoch: sample this many training structures per epoch (the paper sampled
            ~1M of 37.8M); None: every structure once per epoch.
        freeze: parameter-name prefixes kept fixed, e.g. ``"embedding"``, ``"bond_init"``
            (the initial bond layers), ``"layers.0"`` (first interaction layer), ``"readout"``.
        ema_decay: keep an exponential moving average of the weights with this decay per step
            (e.g. 0.999), validated and saved instead of the raw weights; None: off.
        patience: stop after this many epochs without a better validation score; None: off.
        reference_refit: ``"residual"``, ``"composition"`` or ``"none"``
            (see :mod:`gptff_core.training.references`).
        dropout: override the transformer dropout while training (None: keep the config's).
        seed: seeds the weights of a new network, the shuffling and dropout.
        mixed_precision: bfloat16 autocast of the training forward pass (CUDA or CPU; the
            triplet sums and the atom features are accumulated in the weights' dtype;
            validation runs in full precision).
        outlier_energy_per_atom: eV/atom, the floor of the energy outlier rule (see
            :mod:`gptff_core.training.outliers`); None: no energy screening.
        outlier_force: eV/Å, frames with a larger atomic force are outliers; None: no bound.
        drop_outliers: leave outlier frames out (and report them) instead of refusing the data.
    """

    epochs: int = 30
    learning_rate: float = 2e-4
    final_learning_rate: float = 5e-6
    warmup_steps: int = 0
    weight_decay: float = 0.01
    energy_weight: float = 1.0
    forces_weight: float = 1.0
    stress_weight: float = 0.1
    huber_delta: float = 0.1
    grad_clip: float | None = 10.0
    max_structures_per_batch: int = 16
    max_atoms_per_batch: int = 512
    max_triplets_per_batch: int = 400_000
    structures_per_epoch: int | None = None
    freeze: tuple[str, ...] = ()
    ema_decay: float | None = None
    patience: int | None = None
    reference_refit: str = "residual"
    dropout: float | None = None
    seed: int = 0
    mixed_precision: bool = False
    outlier_energy_per_atom: float | None = 5.0
    outlier_force: float | None = 100.0
    drop_outliers: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "freeze", tuple(self.freeze))
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise GPTFFInputError(f"recipe: {item.name} must be finite, got {value}")
        positive = [
            "epochs",
            "learning_rate",
            "max_structures_per_batch",
            "max_atoms_per_batch",
            "max_triplets_per_batch",
        ]
        for name in positive:
            if not getattr(self, name) > 0:
                raise GPTFFInputError(f"recipe: {name} must be positive, got {getattr(self, name)}")
        non_negative = [
            "final_learning_rate",
            "warmup_steps",
            "weight_decay",
            "energy_weight",
            "forces_weight",
            "stress_weight",
        ]
        for name in non_negative:
            if getattr(self, name) < 0:
                raise GPTFFInputError(f"recipe: {name} must be ≥ 0, got {getattr(self, name)}")
        if self.energy_weight + self.forces_weight + self.stress_weight == 0:
            raise GPTFFInputError("recipe: at least one loss weight must be positive")
        if not self.huber_delta > 0:
            raise GPTFFInputError(f"recipe: huber_delta must be positive, got {self.huber_delta}")
        for name in (
            "grad_clip",
            "structures_per_epoch",
            "patience",
            "outlier_energy_per_atom",
            "outlier_force",
        ):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise GPTFFInputError(f"recipe: {name} must be positive or None, got {value}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise GPTFFInputError(f"recipe: ema_decay must be in (0, 1), got {self.ema_decay}")
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise GPTFFInputError(f"recipe: dropout must be in [0, 1), got {self.dropout}")
        if self.reference_refit not in REFIT_MODES:
            raise GPTFFInputError(
                f"recipe: reference_refit must be one of {REFIT_MODES}, "
                f"got {self.reference_refit!r}"
            )

    def changes_from(self, other: Recipe) -> list[str]:
        """``"name (other's value → this value)"`` for every option that differs."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [f"{k} ({theirs[k]!r} → {mine[k]!r})" for k in mine if mine[k] != theirs[k]]

    def to_dict(self) -> dict:
        values = asdict(self)
        values["freeze"] = list(self.freeze)
        return values

    @classmethod
    def from_dict(cls, values: dict) -> Recipe:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise GPTFFInputError(f"recipe: unknown options {unknown}")
        return cls(**values)
