"""The jobs of a substitution screening campaign: generation, relaxing a chunk, and the analysis.

:func:`generate_campaign` generates the candidates, lists them with the elemental references and
competing phases (:mod:`gptff_flows.analysis.campaign`), looks up in the store what was already
computed (:func:`gptff_flows.queries.screening.stored_records`) and replaces itself with one
:func:`relax_chunk` job per ``chunk_size`` structures still missing and one :func:`analyse` job.

:func:`relax_chunk` relaxes the structures of its chunk that no other run has stored or is
computing (leases, :mod:`gptff_flows.jobs.leases`) with
:func:`~gptff_flows.jobs.batch_relax.relax_items`: batched FIRE relaxations, final energies on
≥ ``min_atoms``-atom supercells, one document per structure, never failing for a bad one.

:func:`analyse` computes formation energies (eV/atom) and energies above the hull (eV/atom)
of every candidate with pymatgen's ``PhaseDiagram``, one diagram per chemical system, built from
the elemental references and competing phases whose elements all belong to that system
(:mod:`gptff_flows.analysis.hull`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence

from jobflow import Flow, JobConfig, Response, job
from pydantic import BaseModel
from pymatgen.core import Structure

from gptff_flows.analysis.campaign import campaign_items, sample_candidates
from gptff_flows.analysis.hull import STATUS_ORDER, hull_phases, plot_hulls, rank
from gptff_flows.jobs.batch_relax import relax_items
from gptff_flows.jobs.leases import LEASE_SECONDS, lease_book, new_owner, share_work
from gptff_flows.queries.screening import slim, stored_records
from gptff_flows.schemas.screening import (
    CellPolicy,
    RankedCandidate,
    ScreeningCampaignDocument,
    ScreeningChunkDocument,
    ScreeningSettings,
)

logger = logging.getLogger(__name__)

GENERATION_OPTIONS = ("keep_original", "suggest_threshold", "charge_balanced")
GENERATION_OPTIONS += ("volume_scaling", "deduplicate")
"""Options of :func:`gptff_flows.analysis.substitution.generate` a campaign passes on."""


def checkpoint_sha256(model: str) -> str:
    """sha256 of the checkpoint a registry name or path resolves to."""
    from gptff_core.pretrained import cached_sha256, resolve_checkpoint

    return cached_sha256(resolve_checkpoint(model))


def lookup_store(location: str | None):
    """The store where results are looked up and leases kept: ``location`` opened, else the
    running job's own store (``jobflow.CURRENT_JOB.store``; None outside a job)."""
    if location is not None:
        from gptff_flows.stores import open_job_store

        return open_job_store(location)
    from jobflow import CURRENT_JOB

    return getattr(CURRENT_JOB, "store", None)


@job(config=JobConfig(expose_store=True))
def generate_campaign(
    options: dict, prototypes: dict, substitutions: dict, competing: list[dict]
) -> Response:
    """Job: candidates, references and competing phases; chunks for what is not stored; the
    analysis. Replaces itself with them. With no candidate, nothing is relaxed and the
    analysis records why (status ``no_candidates``). ``options``: the Maker's fields."""
    started_at, start = time.time(), time.perf_counter()
    for phase in competing:
        if isinstance(phase.get("structure"), dict):
            phase["structure"] = Structure.from_dict(phase["structure"])
    generation, n_generated = _generate(options, prototypes, substitutions)
    settings = _settings(options)
    items = campaign_items(generation, competing, settings) if generation.candidates else []
    stored, missing = _split_stored(items, options)
    chunks = _chunk_jobs(missing, settings, options)
    summary = _generation_summary(options, prototypes, substitutions, generation)
    summary |= dict(n_chunks=len(chunks), n_generated=n_generated)
    timing = dict(generation=time.perf_counter() - start, started_at=started_at)
    analysis = _analysis_job(options, settings, chunks, stored, competing, summary, timing)
    return Response(replace=Flow([*chunks, analysis], output=analysis.output))


def _generate(options: dict, prototypes: dict, substitutions: dict):
    """The campaign's Generation (sampled to ``max_candidates``) and the number generated."""
    from gptff_flows.analysis.substitution import generate

    prototypes = {
        k: Structure.from_dict(v) if isinstance(v, dict) else v for k, v in prototypes.items()
    }
    generation = generate(
        prototypes, substitutions, **{name: options[name] for name in GENERATION_OPTIONS}
    )
    n_generated = len(generation.candidates)
    sample_candidates(generation, options.get("max_candidates"), options.get("sample_seed", 0))
    return generation, n_generated


def _settings(options: dict) -> ScreeningSettings:
    """The settings that decide every result (fmax eV/Å), the checkpoint named by sha256."""
    return ScreeningSettings(
        model=options["model"],
        checkpoint_sha256=checkpoint_sha256(options["model"]),
        dtype=options["dtype"],
        smooth=options["smooth"],
        fmax=options["fmax"],
        steps=options["steps"],
        min_atoms=options["min_atoms"],
        dispersion=options.get("dispersion", False),
    )


def _split_stored(items: list[dict], options: dict) -> tuple[list[dict], list[dict]]:
    """``(slim records of the items already stored, items still to relax)``."""
    stored = stored_records(lookup_store(options["lookup_store"]), {i["key"] for i in items})
    missing = [item for item in items if item["key"] not in stored]
    stored_list = [
        stored[item["key"]] | {"role": item["role"], "label": item["label"]}
        | {"prototype_id": item.get("prototype_id")}
        for item in items
        if item["key"] in stored
    ]  # fmt: skip
    logger.info(
        "%s: %d structures, %d stored, %d to relax in chunks of %d",
        options["campaign_id"], len(items), len(stored_list), len(missing), options["chunk_size"],
    )  # fmt: skip
    return stored_list, missing


def _chunk_jobs(missing: list[dict], settings: ScreeningSettings, options: dict) -> list:
    """One :func:`relax_chunk` job per ``chunk_size`` of the ``missing`` items."""
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


def _generation_summary(options: dict, prototypes: dict, substitutions: dict, generation) -> dict:
    """What the analysis document records of the generation: inputs, options, rejections."""
    return dict(
        prototypes=sorted(prototypes),
        substitutions=substitutions,
        options={k: options[k] for k in ("volume_scaling", "charge_balanced", "keep_original")}
        | {k: options[k] for k in ("suggest_threshold", "deduplicate", "chunk_size")},
        rejected=[list(r) for r in generation.rejected],
        notes=list(generation.notes),
        why_empty=generation.why_empty(),
    )


def _analysis_job(options, settings, chunks, stored, competing, summary, timing):
    """The :func:`analyse` job of the campaign (timing in s)."""
    campaign_id = options["campaign_id"]
    analysis = analyse(
        campaign_id,
        settings.model_dump(),
        [chunk.output for chunk in chunks],
        stored,
        [p for p in competing if "composition" in p],
        summary,
        timing,
        options["plot_dir"],
        options["lookup_store"],
    )
    analysis.name = f"{options['name']} analysis"
    analysis.update_metadata({"gptff_role": "screening_analysis", "campaign_id": campaign_id})
    return analysis


@job(config=JobConfig(expose_store=True))
def relax_chunk(
    items: list[dict],
    settings: dict,
    campaign_id: str,
    chunk_index: int,
    device: str = "cpu",
    lookup_store_location: str | None = None,
    lease_seconds: float = LEASE_SECONDS,
) -> ScreeningChunkDocument:
    """Job: :func:`relax_items` of the structures of one chunk that no other run has stored or
    is computing (leases in the store, :mod:`gptff_flows.jobs.leases`), as a
    :class:`ScreeningChunkDocument`; structures another run stored meanwhile come as
    ``reused`` records. ``lease_seconds``: s, lease duration."""
    start = time.perf_counter()
    store = lookup_store(lookup_store_location)
    by_key = {item["key"]: item for item in items}
    owner = new_owner()
    documents, found = share_work(
        by_key,
        lambda keys: relax_items(
            [by_key[k] for k in keys], ScreeningSettings(**settings), campaign_id, device
        ),
        lambda keys: stored_records(store, keys),
        lease_book(store),
        owner,
        seconds=lease_seconds,
    )
    counts = {s: sum(d.status == s for d in documents) for s in STATUS_ORDER}
    logger.info("chunk %d of %s: %s, %d computed by another run", chunk_index, campaign_id,
                counts, len(found))  # fmt: skip
    return ScreeningChunkDocument(
        campaign_id=campaign_id,
        chunk_index=chunk_index,
        wall_time=time.perf_counter() - start,
        candidates=documents,
        reused=[
            found[k]
            | {"role": by_key[k].get("role", "candidate"), "label": by_key[k].get("label")}
            | {"prototype_id": by_key[k].get("prototype_id")}
            for k in found
        ],
        lease_owner=owner["id"],
    )


@job(data=["ranking", "phases"], config=JobConfig(expose_store=True))
def analyse(
    campaign_id: str,
    settings: dict,
    chunks: list,
    stored: list[dict],
    entries: list[dict],
    generation: dict,
    timing: dict,
    plot_dir: str | None = None,
    lookup_store_location: str | None = None,
) -> ScreeningCampaignDocument:
    """Job: rank every candidate of the campaign (stored before, computed by another run
    meanwhile, and computed now), then release the chunks' leases (their documents are stored by
    now). The ranking and the hull phases go to the "data" store (no document size limit); query
    with ``load=True``, as :func:`gptff_flows.queries.screening_results` does. A campaign
    without candidates, or whose candidates all lack energetics, says so in ``status`` and
    ``message``. ``timing``: s, the generation's."""
    start = time.perf_counter()
    computed, reused, chunk_seconds, leases = _chunk_documents(chunks)
    records, stored_keys = _campaign_records(computed, [*stored, *reused])
    phases = hull_phases(records, entries)
    ranking = rank(records, phases, stored_keys)
    ranked = [RankedCandidate(**r) for r in ranking]
    plots = plot_hulls(ranking, phases, plot_dir, campaign_id) if plot_dir else []
    counts = _counts(ranked, records, generation, entries)
    status, message = campaign_status(ranked, generation)
    if message:
        logger.warning("campaign %s: %s", campaign_id, message)
    release_leases(leases, lookup_store_location)
    timing = dict(timing) | dict(chunks=chunk_seconds, analysis=time.perf_counter() - start)
    timing["finished_at"] = time.time()
    return ScreeningCampaignDocument(
        campaign_id=campaign_id,
        status=status,
        message=message,
        settings=ScreeningSettings(**settings),
        cell_policy=CellPolicy(min_atoms=settings["min_atoms"]),
        generation=generation,
        counts=counts,
        timing=timing,
        ranking=ranked,
        phases=phases,
        plots=plots,
    )


def _chunk_documents(chunks: Iterable) -> tuple[list[dict], list[dict], float, dict]:
    """``(computed records, reused records, seconds, {lease owner: keys})`` of the chunks."""
    records, reused, seconds, leases = [], [], 0.0, {}
    for chunk in chunks:
        data = chunk.model_dump() if isinstance(chunk, BaseModel) else dict(chunk)
        seconds += float(data.get("wall_time") or 0.0)
        records += [slim(c) for c in data["candidates"]]
        reused += [slim(r) for r in data.get("reused") or []]
        if data.get("lease_owner"):
            leases[data["lease_owner"]] = [c["key"] for c in data["candidates"]]
    return records, reused, seconds, leases


def _campaign_records(computed: list[dict], earlier: list[dict]) -> tuple[list[dict], set[str]]:
    """``(records, keys stored before)``: those computed now, then those stored earlier (or by
    another run meanwhile) that were not computed now, once each."""
    seen = {r["key"] for r in computed}
    earlier = [r for r in earlier if r["key"] not in seen]
    records = computed + list({r["key"]: r for r in earlier}.values())
    return records, {r["key"] for r in earlier}


def _counts(ranked: Sequence[RankedCandidate], records, generation: dict, entries) -> dict:
    """Candidates by status, and how many were stored before, computed, rejected, ranked;
    references, competing phases and failed hull phases."""
    counts = {s: sum(r.status == s for r in ranked) for s in STATUS_ORDER}
    return counts | dict(
        candidates=len(ranked),
        stored_before=sum(r.stored_before for r in ranked),
        computed=sum(not r.stored_before for r in ranked),
        rejected=len(generation.get("rejected", [])),
        references=sum(r["role"] == "reference" for r in records),
        competing=sum(r["role"] == "competing" for r in records) + len(entries),
        failed_phases=sum(r["role"] != "candidate" and r["status"] == "failed" for r in records),
        ranked=sum(r.e_above_hull is not None for r in ranked),
    )


def campaign_status(ranked: Sequence[RankedCandidate], generation: dict) -> tuple[str, str | None]:
    """``(status, message)`` of a campaign: ``ranked`` (None), ``no_candidates`` (the
    generation's reason) or ``no_results`` (no candidate has an energy above hull: why)."""
    if not ranked:
        return "no_candidates", generation.get("why_empty") or "no candidates were generated"
    if any(r.e_above_hull is not None for r in ranked):
        return "ranked", None
    errors = sorted({r.error for r in ranked if r.error})
    shown = "; ".join(errors[:3]) + (f"; and {len(errors) - 3} more" if len(errors) > 3 else "")
    return "no_results", f"none of the {len(ranked)} candidates got energetics: {shown}"


def release_leases(leases: dict[str, list[str]], location: str | None) -> None:
    """Delete the leases ``{owner: keys}`` of chunks whose documents are stored; a failure is
    only logged (the leases then expire on their own)."""
    if not leases:
        return
    try:
        book = lease_book(lookup_store(location))
        for owner, keys in leases.items():
            book.release(keys, owner)
    except Exception as error:  # never lose a ranked campaign to its bookkeeping
        logger.warning("could not release %d leases (%s); they expire on their own",
                       sum(map(len, leases.values())), error)  # fmt: skip
