"""Element-substitution screening campaigns with GPTFF, as one jobflow flow.

:class:`SubstitutionScreeningMaker` makes a flow of one job that decides the campaign's size when
it runs: it generates the candidates (:func:`gptff_flows.analysis.substitution.generate`), adds the
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

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from jobflow import Flow, JobConfig, Maker, Response, job
from pymatgen.core import Structure

from gptff_core.errors import GPTFFInputError
from gptff_core.pretrained import DEFAULT_MODEL
from gptff_flows.jobs.screening import analyse, lookup_store, relax_chunk, stored_records
from gptff_flows.options import absolute_dir
from gptff_flows.schemas.screening import CHUNK_DOCUMENT, ScreeningSettings

logger = logging.getLogger(__name__)


@dataclass
class SubstitutionScreeningMaker(Maker):
    """Substitution screening campaign: generate, relax in chunks, rank by energy above hull.

    Args:
        name: flow name, and the campaign's id unless ``campaign`` is set.
        campaign: campaign id recorded in every document (default: ``name``).
        model: registry name (``"gptff-v1"``, ``"gptff-v2"``) or checkpoint path.
        dtype: ``"float32"`` or ``"float64"``.
        smooth: C² cutoff envelopes (``None``: the checkpoint's setting).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
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

    name: str = "GPTFF screening"
    campaign: str | None = None
    model: str = DEFAULT_MODEL
    dtype: str = "float32"
    smooth: bool | None = None
    device: str = "cpu"
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
        from gptff_flows.options import DTYPES

        def bad(field: str, what: str):
            return GPTFFInputError(f"{field} must be {what}, got {getattr(self, field)!r}")

        if not isinstance(self.fmax, int | float) or isinstance(self.fmax, bool) or self.fmax <= 0:
            raise bad("fmax", "a positive number of eV/Å")
        if not isinstance(self.steps, int) or isinstance(self.steps, bool) or self.steps < 0:
            raise bad("steps", "a non-negative integer")
        for field in ("chunk_size", "min_atoms"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise bad(field, "a positive integer")
        if self.max_candidates is not None and (
            not isinstance(self.max_candidates, int) or self.max_candidates < 1
        ):
            raise bad("max_candidates", "None or a positive integer")
        if self.dtype not in DTYPES:
            raise bad("dtype", f"one of {', '.join(DTYPES)}")
        if self.volume_scaling not in VOLUME_SCALINGS:
            raise bad("volume_scaling", f"one of {', '.join(VOLUME_SCALINGS)}")
        if self.suggest_threshold is not None and not 0 < self.suggest_threshold < 1:
            raise bad("suggest_threshold", "None or a probability between 0 and 1")
        if not isinstance(self.model, str) or not self.model.strip():
            raise bad("model", "a registry name or checkpoint path")

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
        return self.campaign or self.name

    def _options(self) -> dict:
        return dict(
            name=self.name,
            campaign_id=self.campaign_id,
            model=self.model,
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


def normalise_competing(competing) -> list[dict]:
    """Competing phases as ``{"name", "structure"}`` or ``{"name", "composition", "energy"}``
    (total energy in eV) dicts."""
    from gptff_flows.analysis.substitution import check_phase_structure

    if competing is None:
        return []
    pairs = (
        list(competing.items())
        if isinstance(competing, Mapping)
        else [(None, phase) for phase in competing]
    )
    result = []
    for name, phase in pairs:
        if isinstance(phase, Structure):
            name = name or phase.composition.reduced_formula
            check_phase_structure(phase, f"competing phase {name!r}")
            result.append(dict(name=name, structure=phase))
        elif hasattr(phase, "composition") and hasattr(phase, "energy"):
            composition = phase.composition
            name = name or getattr(phase, "name", None) or composition.reduced_formula
            energy = float(phase.energy)
            if not math.isfinite(energy) or composition.num_atoms <= 0:
                raise GPTFFInputError(
                    f"competing phase {name!r}: energy {energy} eV of {composition.formula} is "
                    "not a finite total energy of a composition with atoms; fix the entry"
                )
            result.append(dict(name=name, composition=composition.formula, energy=energy))
        else:
            raise GPTFFInputError(
                f"competing phase {name or ''} must be a pymatgen Structure or a computed entry "
                f"(ComputedEntry, PDEntry), got {type(phase).__name__}"
            )
    return result


def checkpoint_sha256(model: str) -> str:
    """sha256 of the checkpoint a registry name or path resolves to."""
    from gptff_core.pretrained import cached_sha256, resolve_checkpoint

    return cached_sha256(resolve_checkpoint(model))


def campaign_items(
    generation, competing: Sequence[dict], settings: ScreeningSettings
) -> list[dict]:
    """Every structure of the campaign, with its role and key: candidates, elemental
    references of every element present, competing phases given as structures."""
    from pymatgen.io.ase import AseAtomsAdaptor

    from gptff_flows.analysis.energetics import elemental_reference
    from gptff_flows.analysis.substitution import structure_key

    key_settings = settings.model_dump(exclude={"model"})
    items = []
    for candidate in generation.candidates:
        items.append(
            dict(
                role="candidate",
                label=candidate.label,
                structure=candidate.structure,
                prototype_id=candidate.prototype_id,
                substitution=dict(candidate.substitution),
                volume_scaling=candidate.volume_scaling,
                notes=list(candidate.notes),
                relax_cell=True,
            )
        )
    for phase in competing:
        if "structure" in phase:
            items.append(
                dict(role="competing", label=phase["name"], structure=phase["structure"])
                | dict(relax_cell=True)
            )
    elements = set()
    for item in items:
        elements |= {e.symbol for e in item["structure"].composition.elements}
    for phase in competing:
        if "composition" in phase:
            from pymatgen.core import Composition

            elements |= {e.symbol for e in Composition(phase["composition"]).elements}
    for symbol in sorted(elements):
        try:
            atoms, kind = elemental_reference(symbol)
        except (GPTFFInputError, KeyError, ValueError) as error:
            logger.warning("no elemental reference for %s: %s", symbol, error)
            continue
        items.append(
            dict(
                role="reference",
                label=f"{symbol} ({kind})",
                structure=AseAtomsAdaptor.get_structure(atoms),
                relax_cell=kind == "crystal",
            )
        )
    unique, seen = [], set()
    for item in items:
        item["key"] = structure_key(
            item["structure"], key_settings | {"relax_cell": item["relax_cell"]}
        )
        if item["key"] not in seen:
            seen.add(item["key"])
            unique.append(item)
    return unique


def _generate(options: dict, prototypes: dict, substitutions: dict):
    """The campaign's Generation (sampled to ``max_candidates``) and the number generated."""
    from gptff_flows.analysis.substitution import generate

    prototypes = {
        k: Structure.from_dict(v) if isinstance(v, dict) else v for k, v in prototypes.items()
    }
    generation = generate(
        prototypes,
        substitutions,
        keep_original=options["keep_original"],
        suggest_threshold=options["suggest_threshold"],
        charge_balanced=options["charge_balanced"],
        volume_scaling=options["volume_scaling"],
        deduplicate=options["deduplicate"],
    )
    n_generated = len(generation.candidates)
    limit = options.get("max_candidates")
    if limit is not None and len(generation.candidates) > limit:
        import random

        sample = random.Random(options.get("sample_seed", 0)).sample(
            range(len(generation.candidates)), limit
        )
        generation.candidates = [generation.candidates[i] for i in sorted(sample)]
    return generation, n_generated


def _chunk_jobs(missing: list[dict], settings: ScreeningSettings, options: dict) -> list:
    campaign_id, size = options["campaign_id"], options["chunk_size"]
    chunks = []
    n_chunks = -(-len(missing) // size)
    for index in range(n_chunks):
        chunk = relax_chunk(
            missing[index * size : (index + 1) * size],
            settings.model_dump(),
            campaign_id,
            index,
            options["device"],
            options["lookup_store"],
        )
        chunk.name = f"{options['name']} chunk {index + 1}/{n_chunks}"
        chunk.update_metadata({"gptff_role": "screening_chunk", "campaign_id": campaign_id})
        chunks.append(chunk)
    return chunks


@job(config=JobConfig(expose_store=True))
def generate_campaign(
    options: dict, prototypes: dict, substitutions: dict, competing: list[dict]
) -> Response:
    """Job: candidates, references and competing phases; chunks for what is not stored; the
    analysis. Replaces itself with them. With no candidate, nothing is relaxed and the
    analysis records why (status ``no_candidates``)."""
    started_at, start = time.time(), time.perf_counter()
    for phase in competing:
        if isinstance(phase.get("structure"), dict):
            phase["structure"] = Structure.from_dict(phase["structure"])
    generation, n_generated = _generate(options, prototypes, substitutions)
    settings = ScreeningSettings(
        model=options["model"],
        checkpoint_sha256=checkpoint_sha256(options["model"]),
        dtype=options["dtype"],
        smooth=options["smooth"],
        fmax=options["fmax"],
        steps=options["steps"],
        min_atoms=options["min_atoms"],
    )
    items = campaign_items(generation, competing, settings) if generation.candidates else []
    stored = stored_records(lookup_store(options["lookup_store"]), {i["key"] for i in items})
    missing = [item for item in items if item["key"] not in stored]
    stored_list = [
        stored[item["key"]] | {"role": item["role"], "label": item["label"]}
        | {"prototype_id": item.get("prototype_id")}
        for item in items
        if item["key"] in stored
    ]  # fmt: skip
    campaign_id = options["campaign_id"]
    logger.info(
        "%s: %d structures, %d stored, %d to relax in chunks of %d",
        campaign_id, len(items), len(stored_list), len(missing), options["chunk_size"],
    )  # fmt: skip
    chunks = _chunk_jobs(missing, settings, options)
    summary = dict(
        prototypes=sorted(prototypes),
        substitutions=substitutions,
        options={k: options[k] for k in ("volume_scaling", "charge_balanced", "keep_original")}
        | {k: options[k] for k in ("suggest_threshold", "deduplicate", "chunk_size")},
        rejected=[list(r) for r in generation.rejected],
        notes=list(generation.notes),
        why_empty=generation.why_empty(),
        n_chunks=len(chunks),
        n_generated=n_generated,
    )
    analysis = analyse(
        campaign_id,
        settings.model_dump(),
        [chunk.output for chunk in chunks],
        stored_list,
        [p for p in competing if "composition" in p],
        summary,
        dict(generation=time.perf_counter() - start, started_at=started_at),
        options["plot_dir"],
        options["lookup_store"],
    )
    analysis.name = f"{options['name']} analysis"
    analysis.update_metadata({"gptff_role": "screening_analysis", "campaign_id": campaign_id})
    return Response(replace=Flow([*chunks, analysis], output=analysis.output))


def candidate_documents(store, keys) -> list:
    """The stored :class:`~gptff_flows.schemas.screening.CandidateDocument` of each key (relaxed
    structures included), e.g. of the ``key`` column of
    :func:`gptff_flows.queries.screening_results`; in the order of ``keys``, missing ones left
    out."""
    from gptff_flows.schemas.screening import CandidateDocument

    wanted = list(dict.fromkeys(keys))
    lookup = set(wanted)
    found: dict[str, dict] = {}
    store.connect()
    for doc in store.query({"output.@class": CHUNK_DOCUMENT}, properties=["output.candidates"]):
        for candidate in (doc.get("output") or {}).get("candidates") or []:
            if candidate.get("key") in lookup and candidate["key"] not in found:
                found[candidate["key"]] = candidate
    return [CandidateDocument(**found[k]) for k in wanted if k in found]
