"""Fine-tuning GPTFF on your own data (and training from scratch).

* data: :mod:`~.datasets` (extxyz/ASE files, VASP OUTCAR and vasprun.xml, ASE databases, Python
  lists; trajectory-grouped train/validation split), :mod:`~.frames` (the labelled
  :class:`Frame` and its checks), :mod:`~.published_csv` (the published trainer's CSV, VASP
  stress); units converted at the edge (eV, eV/Å, eV/Å³ with ASE's sign);
* checks of the labels: :mod:`~.outliers` (non-finite labels and outliers refused, or dropped and
  reported), :mod:`~.references` (robust Huber refit of the per-element reference energies);
* the run: :mod:`~.trainer` (:class:`Trainer` with the paper's :class:`Recipe`), :mod:`~.loss`,
  :mod:`~.schedule`, :mod:`~.batches`, :mod:`~.network` (new or fine-tuned network, frozen
  parts), :mod:`~.state` (exact resume), :mod:`~.outputs` and :mod:`~.metrics` (checkpoints,
  metrics, plots); :mod:`~.cli` is ``gptff finetune``.

Typical use::

    from gptff_core.training import Recipe, Trainer, read_frames, split_frames

    train, valid = split_frames(read_frames("OUTCAR"), valid_fraction=0.1)
    result = Trainer("gptff-v2", Recipe(epochs=30)).fit(train, valid, "finetuned")
    result.best_checkpoint  # load with GPTFFCalculator(model=result.best_checkpoint)
"""

import importlib

_EXPORTS = {
    "Frame": "frames",
    "frames_from_structures": "datasets",
    "read_datasets": "datasets",
    "read_frames": "datasets",
    "read_published_csv": "published_csv",
    "split_frames": "datasets",
    "Recipe": "recipe",
    "Trainer": "trainer",
    "TrainingResult": "outputs",
    "new_network": "network",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    """Import on first use, so ``gptff_core.training.cli`` stays light for ``gptff --help``."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
