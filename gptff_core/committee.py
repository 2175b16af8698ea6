"""Committee uncertainty: several GPTFF networks (fine-tuned from one base with different seeds,
see :func:`gptff_core.training.committee.train_committee`) evaluated together.

The committee's prediction is the members' mean; their spread measures how far a structure is
from what they were trained on. Per atom, the force disagreement is
``sqrt(mean_m |F_m,i − mean_m F_i|²)`` (eV/Å, :func:`force_disagreement`); per frame, the score
``uncertainty`` is its largest value over the atoms (eV/Å), the quantity an active-learning loop
ranks frames by. Use :class:`CommitteeCalculator` (ASE) for one structure at a time and
:func:`committee_predict` for many (batched, one :func:`gptff_core.predict.predict` per member).
Units: eV, eV/Å, eV/Å³ (ASE sign: positive = tensile).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from gptff_core.calculator import GPTFFCalculator
from gptff_core.errors import GPTFFInputError
from gptff_core.model import GPTFF
from gptff_core.predict import Predictions, predict
from gptff_core.validation import as_atoms

COMMITTEE_SIZE = 4
"""Default number of committee members. Each member costs one fine-tuning and one evaluation, so
the cost of the loop grows linearly with the size, while the ranking of true errors by the frame
score grows slowly. Measured by ``benchmarks/committee_uncertainty.py`` (GPTFF v2 fine-tuned on
50 EMT Cu–Au frames; Spearman ρ between ``uncertainty`` and the committee mean's largest force
error, mean over every subset of each size in two committees of 8): on held-out frames from near
to far from the training data 0.83 (2 members), 0.87 (3), 0.89 (4), 0.91 (6), 0.92 (8); on
frames like the training data 0.51, 0.56, 0.58, 0.62, 0.64. The worst subset of 2 ranks much
worse than the worst of 4 (ρ 0.58 against 0.75 on the first set, 0.30 against 0.42 on the
second). Four members give 60–70 % of the gain from 2 to 8 at half the cost of 8; use 6–8 when
frames like the training data must be told apart and a label costs far more than a fine-tuning."""

MEMBER_OPTIONS = ("bond_window", "three_body_window", "skin")
"""Keyword arguments of :class:`CommitteeCalculator` passed on to every member's
:class:`~gptff_core.calculator.GPTFFCalculator` (the others go to ASE's ``Calculator``)."""

ModelLike = str | os.PathLike | GPTFF


def _checked_models(models: Sequence[ModelLike]) -> list[ModelLike]:
    """``models`` as a list of at least two members (a committee of one has no spread)."""
    if isinstance(models, str | os.PathLike | GPTFF):
        models = [models]
    members = list(models)
    if len(members) < 2:
        raise GPTFFInputError(
            f"a committee needs at least 2 models (checkpoint paths or registry names), got "
            f"{len(members)}: one model has no disagreement to measure"
        )
    return members


def force_disagreement(member_forces: np.ndarray) -> np.ndarray:
    """Per-atom force disagreement of a committee, eV/Å.

    Args:
        member_forces: (M, n_atoms, 3) forces of the M ≥ 2 members, eV/Å.

    Returns:
        (n_atoms,) ``sqrt(mean over members of |F_m,i − mean_m F_i|²)``, eV/Å (the population
        spread: 0 when the members agree).

    Raises:
        GPTFFInputError: a shape other than (M ≥ 2, n_atoms, 3), or non-finite forces.
    """
    forces = np.asarray(member_forces, dtype=np.float64)
    if forces.ndim != 3 or forces.shape[2] != 3 or forces.shape[0] < 2:
        raise GPTFFInputError(
            f"member_forces must have shape (members ≥ 2, atoms, 3) in eV/Å, got {forces.shape}"
        )
    if not np.isfinite(forces).all():
        raise GPTFFInputError("member_forces holds NaN or infinite values (eV/Å)")
    deviation = forces - forces.mean(axis=0)
    return np.sqrt(np.mean(np.sum(deviation**2, axis=2), axis=0))


class CommitteeCalculator(Calculator):
    """ASE calculator of M ≥ 2 GPTFF networks.

    Results: the members' mean ``energy``/``free_energy`` (eV), ``forces`` (eV/Å) and ``stress``
    (Voigt, eV/Å³, ASE sign; none for a structure without a cell volume, like
    :class:`GPTFFCalculator`), plus ``forces_std`` ((n_atoms,) eV/Å, :func:`force_disagreement`),
    ``energy_std`` (eV, population standard deviation of the member energies) and
    ``uncertainty`` (eV/Å, float: the largest ``forces_std``, the frame score).

    Args:
        models: checkpoint paths, registry names or loaded :class:`GPTFF` networks (at least 2).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
        dtype: ``"float32"`` or ``"float64"``.
        smooth: envelopes at the cutoffs (``None``: each checkpoint's setting).
        **kwargs: ``bond_window``, ``three_body_window`` (Å) and ``skin`` (Å) go to every
            member's :class:`GPTFFCalculator`; the rest to ASE's ``Calculator``.

    Attributes:
        members: the members' :class:`GPTFFCalculator`, in the order of ``models``.
    """

    implemented_properties = (
        "energy",
        "free_energy",
        "forces",
        "stress",
        "forces_std",
        "energy_std",
        "uncertainty",
    )

    def __init__(
        self,
        models: Sequence[ModelLike],
        device: str = "cpu",
        dtype: str = "float32",
        smooth: bool | None = None,
        **kwargs,
    ):
        if kwargs.get("dispersion"):  # else ASE would keep it as a parameter and do nothing
            raise GPTFFInputError(
                "CommitteeCalculator does not add D3 dispersion: the members' disagreement is "
                "the same with or without it; add D3 to the model you run, not the committee"
            )
        member_options = {k: kwargs.pop(k) for k in MEMBER_OPTIONS if k in kwargs}
        super().__init__(**kwargs)
        self.members = [
            GPTFFCalculator(model, device=device, dtype=dtype, smooth=smooth, **member_options)
            for model in _checked_models(models)
        ]

    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: list[str] | None = None,
        system_changes: list[str] = all_changes,
    ) -> None:
        super().calculate(atoms, properties, system_changes)
        graph = self.members[0].graph_of(self.atoms)  # one graph: same cutoffs, dtype, device
        energies, forces, stresses = [], [], []
        for member in self.members:
            results = member.results_for(graph, self.atoms)
            energies.append(results["energy"])
            forces.append(results["forces"])
            stresses.append(results.get("stress"))
        forces_std = force_disagreement(np.stack(forces))
        energy = float(np.mean(energies))
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "forces": np.mean(forces, axis=0),
            "forces_std": forces_std,
            "energy_std": float(np.std(energies)),
            "uncertainty": float(forces_std.max()),
        }
        if stresses[0] is not None:
            self.results["stress"] = np.mean(stresses, axis=0)


@dataclass
class CommitteePredictions:
    """A committee's results in input order.

    Attributes:
        energies: (n_frames,) members' mean energies, eV.
        forces: one (n_i, 3) array of mean forces per frame, eV/Å.
        stresses: one (3, 3) mean stress per frame, eV/Å³ (ASE sign), or None for a frame
            without a cell volume.
        forces_std: one (n_i,) array of per-atom force disagreement per frame, eV/Å
            (:func:`force_disagreement`).
        energy_std: (n_frames,) population standard deviation of the member energies, eV.
        uncertainty: (n_frames,) largest ``forces_std`` of each frame, eV/Å (the frame score).
    """

    energies: np.ndarray
    forces: list[np.ndarray]
    stresses: list[np.ndarray | None]
    forces_std: list[np.ndarray]
    energy_std: np.ndarray
    uncertainty: np.ndarray


def committee_predict(
    structures: Sequence[object] | object,
    models: Sequence[ModelLike],
    device: str = "cpu",
    dtype: str = "float32",
    smooth: bool | None = None,
    progress: bool = False,
) -> CommitteePredictions:
    """The committee's mean predictions and disagreement for many structures.

    Each member is loaded once and evaluates every structure in batches
    (:func:`gptff_core.predict.predict`); results equal :class:`CommitteeCalculator`'s.

    Args:
        structures: a structure or a sequence of them (ASE Atoms or pymatgen), Å.
        models: checkpoint paths, registry names or loaded :class:`GPTFF` networks (at least 2).
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        dtype: ``"float32"`` or ``"float64"``.
        smooth: envelopes at the cutoffs (``None``: each checkpoint's setting).
        progress: one progress bar per member.

    Raises:
        GPTFFInputError: fewer than 2 models, no structures, or a structure GPTFF cannot
            evaluate (named by its index).
        ComputationError: a member gives a non-finite result.
    """
    members = _checked_models(models)
    if _is_structure(structures):
        structures = [structures]
    atoms_list = [as_atoms(s) for s in structures]
    runs = [
        predict(atoms_list, model, device=device, dtype=dtype, smooth=smooth, progress=progress)
        for model in members
    ]
    return _combine(runs)


def _is_structure(item: object) -> bool:
    """Whether ``item`` is one structure (ASE Atoms or a pymatgen site collection)."""
    from pymatgen.core import SiteCollection

    return isinstance(item, Atoms | SiteCollection)


def _combine(runs: list[Predictions]) -> CommitteePredictions:
    """Mean and spread of the members' predictions ``runs`` (same structures, same order)."""
    energies = np.stack([run.energies for run in runs])
    forces, forces_std, stresses = [], [], []
    for k in range(energies.shape[1]):
        member_forces = np.stack([run.forces[k] for run in runs])
        forces.append(member_forces.mean(axis=0))
        forces_std.append(force_disagreement(member_forces))
        member_stresses = [run.stresses[k] for run in runs]
        has_stress = member_stresses[0] is not None
        stresses.append(np.mean(member_stresses, axis=0) if has_stress else None)
    return CommitteePredictions(
        energies=energies.mean(axis=0),
        forces=forces,
        stresses=stresses,
        forces_std=forces_std,
        energy_std=energies.std(axis=0),
        uncertainty=np.array([spread.max() for spread in forces_std]),
    )
