"""Fine-tuning GPTFF on your own data (and training from scratch).

* :mod:`~gptff_core.training.datasets`: frames from extxyz/ASE files, VASP OUTCAR and vasprun.xml,
  ASE databases, the published trainer's CSV and Python lists; units converted at the edge (eV,
  eV/Å, eV/Å³ with ASE's sign); trajectory-grouped train/validation split.
* :mod:`~gptff_core.training.references`: robust (Huber) refit of the per-element reference
  energies.
* :mod:`~gptff_core.training.outliers`: labels checked before training (non-finite labels and
  outliers refused, or outliers dropped and reported).
* :mod:`~gptff_core.training.trainer`: :class:`Trainer` with the paper's recipe
  (:class:`Recipe`), checkpoints, metrics and exact resume.

Typical use::

    from gptff_core.training import Recipe, Trainer, read_frames, split_frames

    train, valid = split_frames(read_frames("OUTCAR"), valid_fraction=0.1)
    result = Trainer("gptff-v2", Recipe(epochs=30)).fit(train, valid, "finetuned")
    result.best_checkpoint  # load with GPTFFCalculator(model=result.best_checkpoint)
"""

import importlib

_EXPORTS = {
    "Frame": "datasets",
    "frames_from_structures": "datasets",
    "read_datasets": "datasets",
    "read_frames": "datasets",
    "read_published_csv": "datasets",
    "split_frames": "datasets",
    "Recipe": "recipe",
    "Trainer": "trainer",
    "TrainingResult": "trainer",
    "new_network": "trainer",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    """Import on first use, so ``gptff_core.training.cli`` stays light for ``gptff --help``."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
