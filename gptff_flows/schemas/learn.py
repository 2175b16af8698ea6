"""Documents of the active-learning loop (:mod:`gptff_flows.flows.learn`).

* :class:`LearningIterationDocument` — one iteration: the MD sampling and its committee
  uncertainty, the frames selected, their labels (computed, or found in the store), the committee
  fine-tuned on every training label so far (checkpoints in the ``"data"`` store) and its errors
  on the held-out labels it never trained on.
* :class:`LearningStop` — what the iterations after the threshold was reached return.
* :class:`LearningDocument` — the run: why it stopped, per-iteration metrics
  (:class:`IterationSummary`), every label, the failed ones, and the final committee (checkpoints
  in the ``"data"`` store, sha256 in the document; :meth:`LearningDocument.write_committee`).

Units: temperatures K, uncertainties and force errors eV/Å, energy errors meV/atom, times s,
distances Å. A committee's frame uncertainty is the largest per-atom force disagreement of its
members (:mod:`gptff_core.committee`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from gptff_flows.schemas.base import GPTFFDocument
from gptff_flows.schemas.finetune_md import CheckpointBlob

__all__ = [
    "CommitteeMember",
    "HeldOutMetrics",
    "IterationSummary",
    "LabelRecord",
    "LearningDocument",
    "LearningIterationDocument",
    "LearningStop",
    "SamplingSummary",
    "SelectedFrame",
    "StopReason",
]

StopReason = Literal["threshold", "iterations"]


class SamplingSummary(BaseModel):
    """The MD frames an iteration chose from."""

    sampler: str = Field(description="'base model' (iteration 0) or 'committee of iteration N'")
    n_candidates: int = Field(description="frames sampled (count)")
    mean_uncertainty: float | None = Field(
        None,
        description="eV/Å, mean committee frame uncertainty of the sampled frames (None: "
        "sampled with the base model, no committee yet)",
    )
    max_uncertainty: float | None = Field(None, description="eV/Å, largest of them")
    md_failures: list[str] = Field(
        default_factory=list,
        description="MD runs that stopped early and why (their frames so far are kept)",
    )
    elapsed_s: float = Field(description="s, wall time of the sampling")


class SelectedFrame(BaseModel):
    """A sampled frame chosen for labelling."""

    frame_key: str = Field(description="sha256 of structure, labeller and settings (no unit)")
    structure_index: int = Field(description="which input structure the MD started from")
    temperature: float = Field(description="K, MD target temperature")
    step: int = Field(description="MD step of the frame")
    uncertainty: float | None = Field(
        None, description="eV/Å, committee frame uncertainty (None at iteration 0)"
    )
    distance: float | None = Field(
        None, description="Å, distance to the nearest frame selected before it (None: first)"
    )
    holdout: bool = Field(description="kept out of training, for evaluation")


class LabelRecord(BaseModel):
    """Where a label is and whether it can be used."""

    frame_key: str = Field(description="sha256 of structure, labeller and settings (no unit)")
    iteration: int = Field(description="iteration that selected the frame")
    holdout: bool = Field(description="held out of training (evaluation only)")
    uuid: str | None = Field(None, description="job whose output is the LabelDocument")
    converged: bool = Field(description="usable: the calculation converged and finished")
    error: str | None = Field(None, description="why the label failed (None: converged)")
    reused: bool = Field(description="found in the store, not computed by this iteration")
    wall_time_s: float | None = Field(None, description="s, cost of the label when computed")


class HeldOutMetrics(BaseModel):
    """Errors of a committee's mean against labels it never trained on."""

    n_frames: int = Field(description="held-out frames (count)")
    n_atoms: int = Field(description="atoms in them (count)")
    force_mae: float = Field(description="eV/Å, mean absolute error of the force components")
    energy_mae: float = Field(description="meV/atom, mean absolute error of the energy per atom")
    mean_uncertainty: float = Field(description="eV/Å, mean committee frame uncertainty")
    max_uncertainty: float = Field(description="eV/Å, largest committee frame uncertainty")
    spearman: float | None = Field(
        None,
        description="Spearman ρ between frame uncertainty and the frame's largest "
        "per-atom force error (None: fewer than 3 frames or no variation)",
    )


class CommitteeMember(BaseModel):
    """One fine-tuned member of a committee."""

    seed: int = Field(description="recipe seed of the member (Maker seed + member index)")
    checkpoint_sha256: str = Field(description="sha256 (hex) of its best checkpoint")
    best_epoch: int = Field(description="epoch of the best checkpoint (0: reference refit)")
    after: dict = Field(
        description="training-set metrics of the best checkpoint (meV/atom, meV/Å, GPa)"
    )


class LearningIterationDocument(GPTFFDocument):
    """One iteration of the loop: sample, select, label, fine-tune, evaluate."""

    job_uuid: str | None = Field(None, description="uuid of the job whose output this is")
    iteration: int = Field(description="0, 1, ... (0: sampled with the base model)")
    labeller: str = Field(description="'emt', 'gpaw' or 'vasp'")
    sampling: SamplingSummary = Field(description="the MD frames chosen from")
    selected: list[SelectedFrame] = Field(description="frames chosen for labelling, in order")
    selection_note: str | None = Field(
        None, description="why fewer frames than asked were selected (None: all were)"
    )
    labels: list[LabelRecord] = Field(description="every label so far, this iteration's last")
    n_labels: int = Field(description="converged labels so far, training and held out")
    n_train: int = Field(description="labels the committee trained on")
    n_holdout: int = Field(description="held-out labels it is evaluated on")
    n_failed: int = Field(description="failed labels so far (skipped)")
    n_computed: int = Field(description="labels computed by this iteration (not found stored)")
    train_key: str = Field(
        description="sha256 of base model, recipe, committee size, seed, precision and the "
        "training labels' keys: a stored committee with this key is reused, not retrained"
    )
    reused_committee: bool = Field(description="the committee was found in the store")
    members: list[CommitteeMember] = Field(description="the committee's members")
    committee_sha256: list[str] = Field(description="sha256 (hex) of each member's checkpoint")
    committee: list[CheckpointBlob] = Field(description="the checkpoints (in the 'data' store)")
    held_out: HeldOutMetrics | None = Field(
        None, description="errors on the held-out labels (None: none held out)"
    )
    training_s: float = Field(description="s, wall time of the fine-tuning (0 when reused)")
    evaluation_s: float = Field(description="s, wall time of the held-out evaluation")
    flags: list[str] = Field(
        default_factory=list,
        description="'selected_fewer' (fewer mutually different frames than asked), "
        "'labels_failed', 'md_failed' (an MD run stopped early), 'committee_untrained' (every "
        "member kept the reference refit: no training step lowered its training error)",
    )


class LearningStop(BaseModel):
    """What an iteration returns once the loop has stopped: the committee's sampled mean
    uncertainty fell below the threshold (later iterations return it unchanged)."""

    stopped: bool = Field(True, description="marker: the loop has stopped")
    iteration: int = Field(description="the iteration whose sampling reached the threshold")
    sampling: SamplingSummary = Field(description="that sampling (uncertainties eV/Å)")


class IterationSummary(BaseModel):
    """One row of :class:`LearningDocument`'s ``iterations``."""

    iteration: int = Field(description="0, 1, ...")
    n_labels: int = Field(description="converged labels after this iteration")
    n_new_labels: int = Field(description="labels this iteration added (converged)")
    n_computed: int = Field(description="labels this iteration computed")
    n_failed: int = Field(description="failed labels so far")
    sampled_mean_uncertainty: float | None = Field(
        None,
        description="eV/Å, mean uncertainty of the frames this iteration sampled, under "
        "the previous committee (None at iteration 0)",
    )
    sampled_max_uncertainty: float | None = Field(None, description="eV/Å")
    held_out: HeldOutMetrics | None = Field(None, description="the new committee's errors")
    committee_sha256: list[str] = Field(description="sha256 of the new committee's members")
    flags: list[str] = Field(default_factory=list, description="the iteration's flags")
    uuid: str | None = Field(None, description="the iteration's job (its output: the document)")


class LearningDocument(GPTFFDocument):
    """The result of an active-learning run."""

    formulas: list[str] = Field(description="reduced formulas of the input structures")
    labeller: str = Field(description="'emt', 'gpaw' or 'vasp'")
    labeller_settings: dict = Field(description="the labeller's settings as given")
    stop_reason: StopReason = Field(
        description="'threshold' (the sampled mean uncertainty fell below it) or 'iterations' "
        "(they ran out)"
    )
    threshold: float = Field(description="eV/Å, the stopping threshold")
    threshold_reached: bool = Field(description="the committee's sampled uncertainty fell below")
    final_sampling: SamplingSummary | None = Field(
        None, description="the sampling whose mean uncertainty fell below the threshold"
    )
    iterations: list[IterationSummary] = Field(description="per iteration, in order")
    n_labels: int = Field(description="converged labels (count)")
    n_failed_labels: int = Field(description="failed labels (count)")
    labels: list[LabelRecord] = Field(description="every label of the run")
    failed_labels: list[LabelRecord] = Field(description="the labels that failed")
    committee_iteration: int | None = Field(
        None, description="iteration that trained the final committee (None: none trained)"
    )
    committee_sha256: list[str] = Field(description="sha256 of the final committee's members")
    committee: list[CheckpointBlob] = Field(description="its checkpoints (in the 'data' store)")
    final_force_mae: float | None = Field(None, description="eV/Å, held out, final committee")
    final_energy_mae: float | None = Field(None, description="meV/atom, held out")
    final_mean_uncertainty: float | None = Field(None, description="eV/Å, held out")
    final_max_uncertainty: float | None = Field(None, description="eV/Å, held out")
    inputs: dict = Field(description="the Maker's settings, to reproduce the run")
    flags: list[str] = Field(default_factory=list, description="union of the iterations' flags")

    def write_committee(self, directory: str | Path) -> list[Path]:
        """Write the final committee's checkpoints into ``directory`` (sha256 checked); their
        paths, in member order (load with :class:`~gptff_core.committee.CommitteeCalculator`,
        or one of them with :class:`~gptff_core.calculator.GPTFFCalculator`)."""
        Path(directory).mkdir(parents=True, exist_ok=True)
        return [CheckpointBlob.model_validate(blob).write(directory) for blob in self.committee]
