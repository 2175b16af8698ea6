"""Documents of the fine-tune-then-MD flow (:mod:`gptff_flows.flows.finetune_md`).

* :class:`CheckpointBlob` — a fine-tuned checkpoint as base64 bytes with its sha256; the fine-tune
  job routes it to the job store's ``"data"`` store, so an MD job on any node loads it from the
  store (never from the fine-tune job's files).
* :class:`FineTuneDocument` — validation metrics before/after fine-tuning, data and recipe, and
  the checkpoint (a blob in the data store; its sha256 and size in the document).
* :class:`MDTemperatureDocument` — one temperature: ensemble settings (fs, K, GPa), mean T (checked
  against the target) and P, drift of the conserved quantity (eV/atom/ps), the diffusion result
  (D cm²/s, σ mS/cm), the flags, and the trajectory (a pymatgen ``Trajectory`` as atomate2 stores
  it, in the data store; :func:`load_trajectory` reads it, and the npz of document version 1,
  as arrays: see :mod:`gptff_flows.schemas.md_trajectory`).
* :class:`FineTuneMDDocument` — the summary: per-temperature rows, the Arrhenius fit (Ea eV,
  σ(300 K) mS/cm) and why temperatures were left out, the run's verdict (:func:`verdict_flags`),
  plots, and the inputs needed to reproduce the run.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

from pydantic import BaseModel, Field
from pymatgen.core import Structure
from pymatgen.core.trajectory import Trajectory

from gptff_core.errors import GPTFFInputError
from gptff_flows.analysis.arrhenius import ArrheniusFit
from gptff_flows.analysis.diffusion import DiffusionResult
from gptff_flows.analysis.md_verdict import TemperatureCheck
from gptff_flows.schemas.base import GPTFFDocument, GPTFFProvenance
from gptff_flows.schemas.md_trajectory import TRAJECTORY_DOCUMENT_VERSION, load_trajectory

__all__ = [
    "INFORMATIONAL_FIT_FLAGS",
    "TRAJECTORY_DOCUMENT_VERSION",
    "CheckpointBlob",
    "FineTuneDocument",
    "FineTuneMDDocument",
    "MDTemperatureDocument",
    "TemperatureRow",
    "load_trajectory",
    "verdict_flags",
]


class CheckpointBlob(BaseModel):
    """A checkpoint file carried in the job store (base64 of its bytes)."""

    filename: str = Field(description="file name it had, e.g. 'best.pt'")
    sha256: str = Field(description="sha256 (hex) of the bytes")
    size_bytes: int = Field(description="bytes of the checkpoint file")
    data_base64: str = Field(description="the file's bytes, base64")

    @classmethod
    def from_file(cls, path: str | Path) -> CheckpointBlob:
        raw = Path(path).read_bytes()
        return cls(
            filename=Path(path).name,
            sha256=hashlib.sha256(raw).hexdigest(),
            size_bytes=len(raw),
            data_base64=base64.b64encode(raw).decode("ascii"),
        )

    def write(self, directory: str | Path) -> Path:
        """Write the checkpoint into ``directory``; checks the sha256.

        Raises:
            GPTFFInputError: the bytes do not match the recorded sha256.
        """
        raw = base64.b64decode(self.data_base64)
        digest = hashlib.sha256(raw).hexdigest()
        if digest != self.sha256:
            raise GPTFFInputError(
                f"checkpoint {self.filename} from the store is corrupt: sha256 {digest} "
                f"!= recorded {self.sha256}"
            )
        path = Path(directory) / f"finetuned-{self.sha256[:12]}.pt"
        path.write_bytes(raw)
        return path


class FineTuneDocument(BaseModel):
    """Result of the fine-tune job."""

    base_model: str = Field(description="registry name or checkpoint path fine-tuned")
    n_train: int = Field(description="training frames")
    n_valid: int = Field(description="validation frames")
    data_sources: list[str] = Field(description="files or store documents the frames came from")
    data_fingerprint: str = Field(
        description="sha256 of the training frames (elements, positions, ...)"
    )
    recipe: dict = Field(description="training recipe (gptff_core.training.Recipe fields)")
    before: dict = Field(description="validation metrics before (meV/atom, meV/Å, GPa)")
    after: dict = Field(description="validation metrics of the best checkpoint")
    best_epoch: int = Field(description="epoch of the best checkpoint")
    checkpoint_sha256: str = Field(description="sha256 of the fine-tuned checkpoint")
    checkpoint_size_bytes: int = Field(description="bytes of the checkpoint")
    checkpoint: CheckpointBlob = Field(description="the checkpoint (in the 'data' store)")
    elapsed_s: float = Field(description="s, wall time of the fine-tuning")
    gptff: GPTFFProvenance = Field(description="provenance of the fine-tuned network")


class MDTemperatureDocument(GPTFFDocument):
    """MD at one temperature with the fine-tuned network, and its diffusion analysis."""

    temperature: float = Field(description="K, thermostat target")
    ensemble: str = Field(description="'nvt', 'npt' or 'nve'")
    dynamics: str = Field(description="ASE integrator class")
    pressure: float | None = Field(None, description="GPa, barostat target (NPT)")
    time_step: float = Field(description="fs")
    n_steps: int = Field(description="production steps")
    equilibration_steps: int = Field(description="steps run before production (discarded)")
    traj_interval: int = Field(description="steps between stored frames")
    supercell: list[int] = Field(description="repetitions of the input cell along a, b, c")
    seed: int = Field(description="seed of the Maxwell–Boltzmann velocities")
    mean_temperature: float = Field(description="K, production mean (kinetic)")
    std_temperature: float = Field(description="K, production standard deviation")
    temperature_check: TemperatureCheck | None = Field(
        None,
        description="mean T against the target and its tolerance (K), see "
        "md_verdict.check_temperature",
    )
    mean_pressure: float = Field(description="GPa, production mean, kinetic term included")
    mean_volume: float = Field(description="Å³, production mean")
    conserved_quantity: str = Field(
        description="'total energy' (NVE) or the thermostat's conserved energy"
    )
    conserved_drift: float | None = Field(
        None, description="eV/atom/ps, slope of the conserved quantity over production"
    )
    conserved_max_deviation: float | None = Field(
        None, description="eV/atom, largest deviation from its production start"
    )
    diffusion: DiffusionResult | None = Field(None, description="D (cm²/s), σ (mS/cm), flags")
    flags: list[str] = Field(
        default_factory=list,
        description="verdicts on this temperature: the diffusion flags, 'temperature_not_reached', "
        "'no_production_frames' (see md_verdict.FLAG_HELP); empty: nothing to distrust",
    )
    elapsed_s: float = Field(description="s, wall time of the MD")
    ms_per_step: float = Field(description="ms per MD step")
    trajectory: Trajectory | dict | None = Field(
        None,
        description="the frames (in the 'data' store): a pymatgen Trajectory (document version "
        "2) or npz (version 1); read with load_trajectory",
    )
    document_version: int = Field(
        1,
        description="2: trajectory is a pymatgen Trajectory (atomate2's format); 1 (documents "
        "without this field): npz arrays, base64",
    )


class TemperatureRow(BaseModel):
    """One temperature in the summary."""

    temperature: float = Field(description="K, target")
    mean_temperature: float = Field(description="K, production mean (kinetic)")
    temperature_tolerance: float | None = Field(
        None, description="K, allowed |mean − target| (see md_verdict.check_temperature)"
    )
    temperature_reason: str | None = Field(
        None, description="why 'temperature_not_reached' (None: the target was reached)"
    )
    mean_pressure: float = Field(description="GPa")
    conserved_drift: float | None = Field(None, description="eV/atom/ps")
    diffusivity: float | None = Field(None, description="cm²/s")
    diffusivity_error: float | None = Field(None, description="cm²/s, 1σ")
    conductivity: float | None = Field(None, description="mS/cm")
    conductivity_error: float | None = Field(None, description="mS/cm, 1σ")
    flags: list[str] = Field(default_factory=list, description="see md_verdict.FLAG_HELP")
    md_uuid: str | None = Field(None, description="uuid of the MD job")


class FineTuneMDDocument(GPTFFDocument):
    """Summary of a fine-tune-then-MD flow."""

    species: str = Field(description="mobile species")
    structure: Structure = Field(description="the input structure (before the supercell)")
    finetune: dict | None = Field(
        description="before/after metrics and checkpoint sha256; None: MD with the model as it "
        "is, not fine-tuned"
    )
    temperatures: list[TemperatureRow] = Field(description="per temperature, ascending")
    arrhenius: ArrheniusFit = Field(
        description="Ea (eV) ± error, σ(300 K) mS/cm; its 'reason' says what was left out"
    )
    flags: list[str] = Field(
        default_factory=list,
        description="verdicts of the whole run (see verdict_flags); empty: every number "
        "trustworthy as far as the checks go",
    )
    activation_energy: float | None = Field(None, description="eV, Ea")
    activation_energy_error: float | None = Field(None, description="eV")
    conductivity_300K: float | None = Field(None, description="mS/cm, extrapolated")
    plots: dict[str, str] = Field(default_factory=dict, description="'msd', 'arrhenius': PNG paths")
    inputs: dict = Field(description="Maker settings and data fingerprint to reproduce the run")


INFORMATIONAL_FIT_FLAGS = frozenset({"extrapolated"})
"""Arrhenius flags that describe rather than warn (σ at 300 K is always an extrapolation)."""


def verdict_flags(rows: list[TemperatureRow], arrhenius: ArrheniusFit) -> list[str]:
    """The verdicts of a fine-tune-then-MD run: every per-temperature flag, plus the Arrhenius
    flags other than :data:`INFORMATIONAL_FIT_FLAGS` (e.g. no Ea, or no error on Ea). Empty: no
    number of the run carries a verdict (``gptff finetune-md`` exits 0; otherwise 3)."""
    flags = {flag for row in rows for flag in row.flags}
    flags |= set(arrhenius.flags) - INFORMATIONAL_FIT_FLAGS
    return sorted(flags)
