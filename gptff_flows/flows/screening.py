"""Element-substitution screening campaigns with GPTFF, as one jobflow flow.

:class:`SubstitutionScreeningMaker` makes a flow of one job
(:func:`~gptff_flows.jobs.screening.generate_campaign`) that decides the campaign's size when it
runs: it generates the candidates (:func:`gptff_flows.analysis.substitution.generate`), adds the
elemental references and the competing phases given as structures, looks up in the job store what
was already computed with the same key, and replaces itself (``Response(replace=Flow(...))``) with

* one :func:`~gptff_flows.jobs.screening.relax_chunk` job per ``chunk_size`` structures still
  missing: batched FIRE relaxations, final energies on ≥ ``min_atoms``-atom supercells, one
  :class:`~gptff_flows.schemas.screening.CandidateDocument` per structure (a bad candidate is
  stored as ``failed`` with its error, never failing the chunk), written when the chunk finishes;
* one :func:`~gptff_flows.jobs.screening.analyse` job ranking every candidate, stored and new,
  by energy above the hull (a :class:`~gptff_flows.schemas.screening.ScreeningCampaignDocument`).

**Resume.** Each structure's key is the sha256 of its initial structure and the settings that
decide its result (checkpoint sha256, dtype, smooth, fmax, steps, min_atoms, cell relaxation):
running the same campaign again computes only the structures whose key is not stored, so an
interrupted campaign loses at most the chunks that were running. Concurrent runs of a campaign
(or of campaigns sharing structures) on one store claim each structure with a lease in the store
before relaxing it (:mod:`gptff_flows.jobs.leases`): a structure another run holds is waited
for and reused, never computed twice; a crashed run's leases expire and are taken over.
Elemental references and competing phases are reused the same way across campaigns. The store
looked in (and holding the leases) is the running job's own (``jobflow.CURRENT_JOB.store``); under
jobflow-remote, where a job runs against a local scratch store, set ``lookup_store`` to the
project's store location (a ``mongodb://`` URI).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from jobflow import Flow, Maker
from pymatgen.core import Structure

from gptff_core.errors import GPTFFInputError
from gptff_flows.jobs.screening import generate_campaign  # also: stored flows name it here
from gptff_flows.options import GPTFFOptions, absolute_dir, require_int, require_number


@dataclass
class SubstitutionScreeningMaker(GPTFFOptions, Maker):
    """Substitution screening campaign: generate, relax in chunks, rank by energy above hull.

    ``model``, ``dtype``, ``smooth``, ``device`` and ``dispersion`` (D3(BJ) added to the
    relaxations, the final energies and the references alike; part of every structure's key) as
    in :class:`~gptff_flows.options.GPTFFOptions`; ``calculator_kwargs`` must stay empty (the
    relaxations run as TorchSim batches, which take no calculator options).

    Args:
        name: flow name, and the campaign's id unless ``campaign`` is set.
        campaign: campaign id recorded in every document (default: ``name``).
        fmax: eV/Å, force threshold of the relaxations (cell forces included).
        steps: maximum FIRE steps per relaxation.
        chunk_size: structures per chunk job (one TorchSim batch; one stored unit of work).
        min_atoms: atoms, the final energy of every relaxed structure is taken on a supercell of
            at least this many (the cell policy; 64 by default, see
            :mod:`gptff_flows.analysis.energetics`).
        volume_scaling: ``"ionic-radii"`` (default), ``"data-mined"`` or ``"none"``.
        charge_balanced: keep only charge-balanced candidates.
        suggest_threshold: also take pymatgen's suggested substitutions above this probability.
        keep_original: let each substituted element also stay unchanged in a combination.
        deduplicate: remove candidates StructureMatcher finds equal to an earlier one.
        max_candidates: keep a random sample of this many candidates (``None``: all), e.g. a
            trial run of a big campaign; the full run later reuses what the sample stored.
        sample_seed: seed of that sample.
        plot_dir: directory for the hull PNGs (``None``: no plots).
        lookup_store: store location where earlier results are looked up (``None``: the running
            job's store; see the module docstring for jobflow-remote).
    """

    supports_dispersion: ClassVar[bool] = True

    name: str = "GPTFF screening"
    campaign: str | None = None
    fmax: float = 0.05
    steps: int = 500
    chunk_size: int = 64
    min_atoms: int = 64
    volume_scaling: str = "ionic-radii"
    charge_balanced: bool = False
    suggest_threshold: float | None = None
    keep_original: bool = True
    deduplicate: bool = True
    max_candidates: int | None = None
    sample_seed: int = 0
    plot_dir: str | None = None
    lookup_store: str | None = None

    def __post_init__(self) -> None:
        # jobs run in run_flow's temporary directory: resolve against the caller's cwd now
        self.plot_dir = absolute_dir(self.plot_dir)

    def validate(self) -> None:
        """Raise :class:`GPTFFInputError` naming the first field with a bad value."""
        from gptff_flows.analysis.substitution import VOLUME_SCALINGS

        self.check_options()
        if self.calculator_kwargs:
            raise GPTFFInputError(
                "calculator_kwargs must be empty: the screening relaxes in TorchSim batches, "
                f"which take no calculator options; got {self.calculator_kwargs!r}"
            )
        require_number("fmax", self.fmax, "eV/Å")
        require_int("steps", self.steps, minimum=0)
        require_int("chunk_size", self.chunk_size)
        require_int("min_atoms", self.min_atoms)
        if self.max_candidates is not None:
            require_int("max_candidates", self.max_candidates)
        if self.volume_scaling not in VOLUME_SCALINGS:
            raise GPTFFInputError(
                f"volume_scaling must be one of {', '.join(VOLUME_SCALINGS)}, "
                f"got {self.volume_scaling!r}"
            )
        if self.suggest_threshold is not None and (
            require_number("suggest_threshold", self.suggest_threshold) >= 1
        ):
            raise GPTFFInputError(
                "suggest_threshold must be None or a probability between 0 and 1, "
                f"got {self.suggest_threshold!r}"
            )

    def make(
        self,
        prototypes: Mapping[str, Structure],
        substitutions: Mapping[str, Sequence[str]] | None = None,
        competing: Mapping[str, object] | Sequence[object] | None = None,
    ) -> Flow:
        """The campaign's flow; its output is the ``ScreeningCampaignDocument``.

        Args:
            prototypes: name → prototype structure (lattice in Å).
            substitutions: element → replacement elements, e.g. ``{"Y": ["Sc", "In"]}``.
            competing: competing phases, name → (or a list of) pymatgen Structures (relaxed
                here with the same model) or computed entries (``ComputedEntry``/``PDEntry``,
                total energies in eV, used as given: compute them with the same model and
                cell policy).

        Raises:
            StructureError: a prototype or competing structure GPTFF cannot take (NaN/inf,
                partial occupancy, unknown element, degenerate cell), named.
            GPTFFInputError: a bad field, substitution or competing entry; a substituted
                element that occurs in no prototype.
        """
        from gptff_flows.analysis.campaign import normalise_competing
        from gptff_flows.analysis.substitution import (
            check_matches,
            check_prototypes,
            check_substitutions,
        )

        self.validate()
        prototypes = check_prototypes(prototypes)  # before pymatgen/spglib see them
        substitutions = {k: list(v) for k, v in (substitutions or {}).items()}
        check_substitutions(substitutions)
        if not substitutions and self.suggest_threshold is None:
            raise GPTFFInputError("give substitutions, or suggest_threshold for suggestions")
        check_matches(prototypes, substitutions)
        generation = generate_campaign(
            self._options(), prototypes, substitutions, normalise_competing(competing)
        )
        generation.name = f"{self.name} generation"
        generation.update_metadata({"gptff_role": "screening_generation"})
        flow = Flow([generation], output=generation.output, name=self.name)
        flow.update_metadata({"flow_name": self.name, "campaign_id": self.campaign_id})
        return flow

    @property
    def campaign_id(self) -> str:
        """The campaign's id: ``campaign``, else ``name``."""
        return self.campaign or self.name

    def _options(self) -> dict:
        """The fields the generation job takes (JSON numbers and text; ``dispersion`` only when
        on, so the job's inputs without D3 are those of earlier versions)."""
        extra = {"dispersion": True} if self.dispersion else {}
        return extra | dict(
            name=self.name,
            campaign_id=self.campaign_id,
            model=str(self.model),
            dtype=self.dtype,
            smooth=self.smooth,
            device=self.device,
            fmax=float(self.fmax),
            steps=int(self.steps),
            chunk_size=int(self.chunk_size),
            min_atoms=int(self.min_atoms),
            volume_scaling=self.volume_scaling,
            charge_balanced=self.charge_balanced,
            suggest_threshold=self.suggest_threshold,
            keep_original=self.keep_original,
            deduplicate=self.deduplicate,
            max_candidates=self.max_candidates,
            sample_seed=self.sample_seed,
            plot_dir=self.plot_dir,
            lookup_store=self.lookup_store,
        )
