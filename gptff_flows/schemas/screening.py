"""Documents of a substitution screening campaign (pydantic), with the unit of every number.

* :class:`CellPolicy` — how the final energy of every relaxed structure was taken.
* :class:`ScreeningSettings` — everything that decides a result; hashed into each item's ``key``.
* :class:`CandidateDocument` — one relaxed structure (a candidate, an elemental reference or a
  competing phase): formula, chemical system, prototype and substitution, initial and relaxed
  structure, energy, relaxation steps, converged flag, largest residual force, status and error,
  provenance and cell policy. Chunk jobs return a :class:`ScreeningChunkDocument` holding them.
* :class:`RankedCandidate` — the energetics of one candidate (formation energy, energy above hull,
  decomposition) as the analysis computed them against the campaign's hull, with ``flags``
  (:data:`FLAG_HELP`) and ``hull_references``.
* :class:`ScreeningCampaignDocument` — the analysis job's output: status, settings, counts by
  status, timing, the ranking and the hull plots.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field
from pymatgen.core import Structure

from gptff_flows.schemas.base import GPTFFDocument, GPTFFProvenance

Status = Literal["relaxed", "not_converged", "failed"]
Role = Literal["candidate", "reference", "competing"]
CampaignStatus = Literal["ranked", "no_candidates", "no_results"]
HullReferences = Literal["elements only", "elements and competing phases"]

FLAG_HELP = {
    "no_competing_phases": "the hull of its chemical system holds only the elemental references: "
    "its energy above hull is its formation energy (give competing phases to compare with)",
    "not_converged": "its relaxation stopped before the forces fell below fmax",
    "hull_phase_not_converged": "a reference or competing phase of its hull did not converge",
}
"""The verdicts a :class:`RankedCandidate` may carry in ``flags``, and what each means."""

CANDIDATE_DOCUMENT = "CandidateDocument"
CHUNK_DOCUMENT = "ScreeningChunkDocument"
CAMPAIGN_DOCUMENT = "ScreeningCampaignDocument"


class CellPolicy(BaseModel):
    """How final energies were taken (see :mod:`gptff_flows.analysis.energetics`)."""

    name: Literal["supercell"] = Field("supercell", description="the policy's name")
    min_atoms: int = Field(
        description="each relaxed structure is repeated to at least this many atoms before its "
        "final energy is evaluated (1: the relaxed cell itself)"
    )


class ScreeningSettings(BaseModel):
    """The settings that decide a result: the same settings and initial structure give the same
    ``key``, so a rerun finds what is stored."""

    model: str = Field(description="registry name or checkpoint path, as requested")
    checkpoint_sha256: str = Field(description="sha256 (hex) of the checkpoint file")
    dtype: str = Field(description="floating-point precision of the evaluation")
    smooth: bool | None = Field(description="C² cutoff envelopes (None: checkpoint's setting)")
    fmax: float = Field(description="eV/Å, force threshold of the relaxations")
    steps: int = Field(description="maximum FIRE steps per relaxation")
    min_atoms: int = Field(description="atoms, minimum size of the final-energy supercell")
    dispersion: bool = Field(
        False, description="D3(BJ) dispersion added to every energy (False in older documents)"
    )


class CandidateDocument(GPTFFDocument):
    """One relaxed structure of a campaign: a candidate, an elemental reference or a competing
    phase. Energies are of the final-energy supercell (:class:`CellPolicy`), per atom."""

    key: str = Field(description="sha256 of (initial structure, settings): the resume key")
    campaign_id: str = Field(description="name of the campaign that first computed it")
    role: Role = Field(description="candidate, reference (elemental) or competing (phase)")
    label: str = Field(description="prototype:substitutions, or the phase's name")
    prototype_id: str | None = Field(None, description="the prototype it was made from")
    substitution: dict[str, str] = Field(
        default_factory=dict, description="element replaced → element put in its place"
    )
    volume_scaling: str | None = Field(None, description="how the initial volume was set")
    notes: list[str] = Field(default_factory=list, description="what happened on the way")
    relax_cell: bool = Field(True, description="whether the cell was relaxed (not molecules)")
    initial_structure: Structure = Field(description="the structure before relaxation (Å)")
    relaxed_structure: Structure | None = Field(None, description="the relaxed structure (Å)")
    energy_per_atom: float | None = Field(
        None, description="eV/atom, final energy on the cell-policy supercell"
    )
    energy_per_atom_relaxed_cell: float | None = Field(
        None, description="eV/atom, energy of the relaxed cell itself (for comparison)"
    )
    supercell_atoms: int | None = Field(None, description="atoms of the final-energy supercell")
    n_steps: int | None = Field(None, description="FIRE steps taken")
    converged: bool | None = Field(None, description="max residual force below fmax")
    max_force: float | None = Field(None, description="eV/Å, largest residual atomic force")
    relaxed_one_by_one: bool = Field(
        False, description="relaxed alone after its batch stopped on another structure"
    )
    status: Status = Field(description="relaxed, not_converged or failed")
    error: str | None = Field(None, description="why it failed (None unless failed)")
    wall_time: float | None = Field(None, description="s, this item's share of its chunk")
    cell_policy: CellPolicy = Field(description="how the final energy was taken")
    settings: ScreeningSettings = Field(description="the settings hashed into the key")
    gptff: GPTFFProvenance | None = Field(None, description="the network that computed it")


class ScreeningChunkDocument(BaseModel):
    """Output of one chunk job: the documents of the structures it relaxed."""

    campaign_id: str = Field(description="name of the campaign")
    chunk_index: int = Field(description="position of the chunk in its campaign run")
    wall_time: float = Field(description="s, time of the chunk job")
    candidates: list[CandidateDocument] = Field(description="one document per structure")
    reused: list[dict] = Field(
        default_factory=list,
        description="slim records of this chunk's structures that another run computed and "
        "stored meanwhile (not stored again here)",
    )
    lease_owner: str | None = Field(
        None, description="id of the run that leased the structures (see screening_leases)"
    )


class RankedCandidate(BaseModel):
    """A candidate's energetics against the campaign's hull (references + competing phases)."""

    key: str = Field(description="resume key of its CandidateDocument")
    label: str = Field(description="prototype:substitutions")
    formula: str = Field(description="reduced formula")
    chemsys: str = Field(description="chemical system")
    prototype_id: str | None = Field(None, description="the prototype it was made from")
    status: Status = Field(description="relaxed, not_converged or failed")
    error: str | None = Field(None, description="why it failed or has no energetics")
    energy_per_atom: float | None = Field(None, description="eV/atom, cell-policy energy")
    e_form_per_atom: float | None = Field(
        None, description="eV/atom, formation energy against the elemental references"
    )
    e_above_hull: float | None = Field(
        None, description="eV/atom above the hull (negative: below the known hull)"
    )
    decomposition: dict[str, float] = Field(
        default_factory=dict, description="hull phase (reduced formula) → fraction of atoms"
    )
    n_steps: int | None = Field(None, description="FIRE steps")
    converged: bool | None = Field(None, description="max residual force below fmax")
    stored_before: bool = Field(False, description="taken from the store, not computed now")
    hull_references: HullReferences | None = Field(
        None,
        description="'elements only' when no competing phase lies in its chemical system (then "
        "e_above_hull equals e_form_per_atom), else 'elements and competing phases'",
    )
    flags: list[str] = Field(
        default_factory=list, description="verdicts on its numbers, see FLAG_HELP"
    )


class ScreeningCampaignDocument(BaseModel):
    """Output of a campaign's analysis job."""

    campaign_id: str = Field(description="name of the campaign")
    status: CampaignStatus = Field(
        "ranked",
        description="'ranked'; 'no_candidates' (generation left none) or 'no_results' (no "
        "candidate got energetics): see message",
    )
    message: str | None = Field(None, description="why the campaign has no ranked candidate")
    settings: ScreeningSettings = Field(description="settings of every relaxation")
    cell_policy: CellPolicy = Field(description="how final energies were taken")
    generation: dict = Field(
        default_factory=dict,
        description="generation options, prototype names and the rejected combinations",
    )
    counts: dict[str, int] = Field(
        description="candidates by status, plus 'stored_before', 'computed', 'rejected', "
        "'references', 'competing'"
    )
    timing: dict[str, float] = Field(
        description="s: 'generation', 'chunks' (sum of chunk jobs), 'analysis', "
        "'started_at'/'finished_at' as Unix times"
    )
    ranking: list[RankedCandidate] = Field(
        description="every candidate, by energy above hull (failed ones last)"
    )
    phases: list[dict] = Field(
        default_factory=list,
        description="hull phases used: formula, role, energy_per_atom (eV/atom), source",
    )
    plots: list[str] = Field(default_factory=list, description="PNG files of the hulls")
    gptff: GPTFFProvenance | None = Field(None, description="the network of the relaxations")
