"""The jobs of a substitution screening campaign: relaxing a chunk, and the analysis.

:func:`relax_items` relaxes a chunk of structures in TorchSim batches
(:func:`gptff_core.torchsim.relax_batch`, FIRE on a Frechet cell filter; positions only for
molecules in a box), takes each final energy on a supercell of at least ``min_atoms`` atoms (the
cell policy of :mod:`gptff_flows.analysis.energetics`) and returns one
:class:`~gptff_flows.schemas.screening.CandidateDocument` per structure. It never raises for a
bad structure: one GPTFF cannot take at all (an element beyond Pu, overlapping atoms, a degenerate
cell) is found before the batch and stored as ``failed``; when a batch stops on a structure that
breaks during its relaxation (atoms collapsing closer than 0.5 Å), the chunk is relaxed again one
structure at a time with ASE's FIRE (the same algorithm) so that only the culprit fails.

:func:`analyse` computes formation energies (eV/atom) and energies above the hull (eV/atom)
of every candidate with pymatgen's ``PhaseDiagram``, one diagram per chemical system, built from
the elemental references and competing phases whose elements all belong to that system.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from jobflow import JobConfig, job
from pydantic import BaseModel
from pymatgen.core import Composition, Structure
from pymatgen.io.ase import AseAtomsAdaptor

from gptff_flows.analysis.energetics import stabilities, supercell
from gptff_flows.jobs.leases import LEASE_SECONDS, lease_book, new_owner, share_work
from gptff_flows.schemas.base import GPTFFProvenance
from gptff_flows.schemas.screening import (
    CHUNK_DOCUMENT,
    CandidateDocument,
    CellPolicy,
    RankedCandidate,
    ScreeningCampaignDocument,
    ScreeningChunkDocument,
    ScreeningSettings,
)

logger = logging.getLogger(__name__)

_NETWORKS: dict[tuple, object] = {}
_STATUS_ORDER = {"relaxed": 0, "not_converged": 1, "failed": 2}


def torchsim_model(model: str, dtype: str, smooth: bool | None, device: str = "cpu"):
    """A :class:`~gptff_core.torchsim.GPTFFTorchSimModel`, loaded once per process."""
    key = (model, dtype, smooth, device)
    if key not in _NETWORKS:
        from gptff_core.torchsim import GPTFFTorchSimModel

        _NETWORKS[key] = GPTFFTorchSimModel(model, dtype=dtype, smooth=smooth, device=device)
    return _NETWORKS[key]


def _short(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return f"{type(error).__name__}: {text}"[:1000]


def precheck(structure: Structure, label: str):
    """``(atoms, None)`` for a structure GPTFF can evaluate, else ``(None, error message)``."""
    from gptff_core.graph import BOND_CUTOFF, THREE_BODY_CUTOFF, structure_graph
    from gptff_core.validation import as_atoms, check_structure

    try:
        atoms = as_atoms(structure).copy()
        check_structure(atoms, label)
        structure_graph(atoms, BOND_CUTOFF, THREE_BODY_CUTOFF, label)
    except Exception as error:  # any refusal makes this item fail, never the chunk
        return None, _short(error)
    return atoms, None


def _relax_group(atoms_list, network, fmax: float, steps: int, relax_cell: bool):
    """RelaxResults (or exceptions) of structures relaxed together, then alone if needed;
    the second item says whether they were relaxed one by one."""
    from gptff_core.relax import relax
    from gptff_core.torchsim import relax_batch

    if not atoms_list:
        return [], False
    try:
        return relax_batch(
            atoms_list, network, fmax=fmax, steps=steps, relax_cell=relax_cell
        ), False
    except Exception as error:  # a structure broke mid-batch: find it by relaxing one by one
        logger.info("batch of %d stopped (%s); relaxing one by one", len(atoms_list), error)
    from gptff_core import GPTFFCalculator

    calculator = GPTFFCalculator(network.model)
    results = []
    for atoms in atoms_list:
        try:
            results.append(relax(atoms, calculator, fmax=fmax, steps=steps, relax_cell=relax_cell))
        except Exception as error:  # this structure fails, the others go on
            results.append(error)
    return results, True


def _final_energies(structures, network, min_atoms: int) -> list[float | Exception]:
    """Energy per atom (eV/atom) of each structure's ≥ ``min_atoms`` supercell."""
    from gptff_core import predict

    cells = [supercell(atoms, min_atoms) for atoms in structures]
    if not cells:
        return []
    try:
        energies = predict(cells, network.model, forces=False, stress=False, progress=False)
        values = [float(e) / len(c) for e, c in zip(energies.energies, cells, strict=True)]
    except Exception:  # evaluate one by one so only the culprit fails
        values = []
        for cell in cells:
            try:
                one = predict([cell], network.model, forces=False, stress=False, progress=False)
                values.append(float(one.energies[0]) / len(cell))
            except Exception as error:
                values.append(error)
    return [
        v if isinstance(v, Exception) or math.isfinite(v) else ValueError("non-finite energy")
        for v in values
    ]


def relax_items(
    items: Sequence[dict], settings: ScreeningSettings, campaign_id: str, device: str = "cpu"
) -> list[CandidateDocument]:
    """One document per item (see the module docstring); never raises for a bad structure.

    Args:
        items: dicts with ``key``, ``role``, ``label``, ``structure`` (pymatgen Structure, Å),
            ``relax_cell`` and optionally ``prototype_id``, ``substitution``,
            ``volume_scaling``, ``notes``.
        settings: model, dtype, smooth, fmax (eV/Å), steps, min_atoms.
        campaign_id: recorded in every document.
        device: torch device of the evaluation.
    """
    start = time.perf_counter()
    network = torchsim_model(settings.model, settings.dtype, settings.smooth, device)
    provenance = GPTFFProvenance.from_calculator(
        SimpleNamespace(model=network.model), "relax", settings.model
    )
    policy = CellPolicy(min_atoms=settings.min_atoms)
    fields: list[dict] = []
    prepared = []
    for item in items:
        structure = item["structure"]
        if isinstance(structure, dict):
            structure = Structure.from_dict(structure)
        composition = structure.composition
        fields.append(
            dict(
                key=item["key"],
                campaign_id=campaign_id,
                role=item.get("role", "candidate"),
                label=item.get("label", composition.reduced_formula),
                formula_pretty=composition.reduced_formula,
                chemsys=composition.chemical_system,
                nsites=len(structure),
                prototype_id=item.get("prototype_id"),
                substitution=dict(item.get("substitution") or {}),
                volume_scaling=item.get("volume_scaling"),
                notes=list(item.get("notes") or []),
                relax_cell=bool(item.get("relax_cell", True)),
                initial_structure=structure,
                cell_policy=policy,
                settings=settings,
                gptff=provenance,
            )
        )
        prepared.append(precheck(structure, fields[-1]["label"]))
    outcomes: dict[int, object] = {}
    for relax_cell in (True, False):
        indices = [
            i for i, f in enumerate(fields) if f["relax_cell"] == relax_cell and prepared[i][0]
        ]
        results, alone = _relax_group(
            [prepared[i][0] for i in indices], network, settings.fmax, settings.steps, relax_cell
        )
        for i, result in zip(indices, results, strict=True):
            outcomes[i] = result
            fields[i]["relaxed_one_by_one"] = alone
    finished = [
        i for i, r in outcomes.items() if not isinstance(r, Exception) and math.isfinite(r.energy)
    ]
    energies = _final_energies([outcomes[i].atoms for i in finished], network, settings.min_atoms)
    final = dict(zip(finished, energies, strict=True))
    documents = []
    for i, f in enumerate(fields):
        error = prepared[i][1]
        result = outcomes.get(i)
        if error is None and isinstance(result, Exception):
            error = _short(result)
        elif error is None and i not in final:
            error = "ValueError: the relaxation ended with a non-finite energy"
        elif error is None and isinstance(final[i], Exception):
            error = f"final energy on the supercell failed: {_short(final[i])}"
        if error is None:
            atoms = result.atoms
            f |= dict(
                relaxed_structure=AseAtomsAdaptor.get_structure(atoms),
                energy_per_atom=final[i],
                energy_per_atom_relaxed_cell=float(result.energy) / len(atoms),
                supercell_atoms=len(atoms) * int(np.prod(_repeats(atoms, settings.min_atoms))),
                n_steps=int(result.n_steps),
                converged=bool(result.converged),
                max_force=float(result.max_force),
                status="relaxed" if result.converged else "not_converged",
            )
        else:
            if not isinstance(result, Exception) and result is not None:
                f |= dict(n_steps=int(result.n_steps), converged=bool(result.converged))
            f |= dict(status="failed", error=error)
        documents.append(f)
    share = (time.perf_counter() - start) / max(len(documents), 1)
    return [CandidateDocument(**f, wall_time=share) for f in documents]


def _repeats(atoms, min_atoms: int) -> tuple[int, int, int]:
    from gptff_flows.analysis.energetics import supercell_repeats

    if not all(atoms.pbc):
        return (1, 1, 1)
    return supercell_repeats(atoms.cell.array, len(atoms), min_atoms)


def lookup_store(location: str | None):
    """The store where results are looked up and leases kept: ``location`` opened, else the
    running job's own store (``jobflow.CURRENT_JOB.store``; None outside a job)."""
    if location is not None:
        from gptff_flows.stores import open_job_store

        return open_job_store(location)
    from jobflow import CURRENT_JOB

    return getattr(CURRENT_JOB, "store", None)


def stored_records(store, keys: set[str]) -> dict[str, dict]:
    """Slim records (see :func:`slim`) of ``keys`` already in ``store``, from the chunk
    documents of any campaign."""
    if store is None or not keys:
        return {}
    store.connect()
    found: dict[str, dict] = {}
    fields = ["key", "role", "label", "formula_pretty", "chemsys", "prototype_id", "status"]
    fields += ["error", "energy_per_atom", "n_steps", "converged"]
    docs = store.query(
        {"output.@class": CHUNK_DOCUMENT, "output.candidates.key": {"$in": sorted(keys)}},
        properties=[f"output.candidates.{f}" for f in fields],
        load=False,
    )
    for doc in docs:
        for record in (doc.get("output") or {}).get("candidates") or []:
            key = record.get("key")
            if key in keys and key not in found:
                found[key] = slim(record)
    return found


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
    counts = {s: sum(d.status == s for d in documents) for s in _STATUS_ORDER}
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


def slim(document: dict | BaseModel) -> dict:
    """The fields of a candidate document the analysis needs (no structures)."""
    data = document.model_dump() if isinstance(document, BaseModel) else dict(document)
    keep = ("key", "role", "label", "formula_pretty", "chemsys", "prototype_id", "status")
    keep += ("error", "energy_per_atom", "n_steps", "converged")
    return {k: data.get(k) for k in keep}


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


def hull_phases(records: Sequence[dict], entries: Sequence[dict]) -> list[dict]:
    """Hull phases: relaxed references and competing phases (not-converged ones too, flagged),
    and the user's computed entries; each ``formula``, ``energy_per_atom`` (eV/atom), ``role``."""
    phases = [
        dict(
            formula=r["formula_pretty"],
            energy_per_atom=r["energy_per_atom"],
            role=r["role"],
            source=r["label"],
            status=r["status"],
        )
        for r in records
        if r["role"] in ("reference", "competing") and r["status"] != "failed"
    ]
    for entry in entries:
        composition = Composition(entry["composition"])
        phases.append(
            dict(
                formula=composition.reduced_formula,
                energy_per_atom=float(entry["energy"]) / composition.num_atoms,
                role="competing",
                source=entry.get("name") or "computed entry",
                status="given",
            )
        )
    return phases


def rank(records: Sequence[dict], phases: Sequence[dict], stored_keys: set[str]):
    """RankedCandidates of the candidate ``records`` against ``phases`` (one hull per chemical
    system), sorted by energy above hull; failed ones last."""
    ranked = []
    by_chemsys: dict[str, list[dict]] = {}
    for record in records:
        if record["role"] != "candidate":
            continue
        base = dict(
            key=record["key"],
            label=record["label"],
            formula=record["formula_pretty"],
            chemsys=record["chemsys"],
            prototype_id=record["prototype_id"],
            status=record["status"],
            error=record["error"],
            energy_per_atom=record["energy_per_atom"],
            n_steps=record["n_steps"],
            converged=record["converged"],
            stored_before=record["key"] in stored_keys,
        )
        if record["status"] == "failed":
            ranked.append(RankedCandidate(**base))
        else:
            by_chemsys.setdefault(record["chemsys"], []).append(base)
    for chemsys, group in by_chemsys.items():
        ranked += _rank_system(group, _phases_inside(phases, chemsys))
    ranked.sort(
        key=lambda r: (
            r.e_above_hull is None,
            r.e_above_hull if r.e_above_hull is not None else 0.0,
            _STATUS_ORDER[r.status],
            r.label,
        )
    )
    return ranked


def _phases_inside(phases: Sequence[dict], chemsys: str) -> list[dict]:
    elements = set(chemsys.split("-"))
    return [p for p in phases if {e.symbol for e in Composition(p["formula"]).elements} <= elements]


def hull_verdict(record: dict, inside: Sequence[dict]) -> tuple[str, list[str]]:
    """``(hull_references, flags)`` of a candidate whose hull is made of the phases ``inside``
    its chemical system (see :data:`~gptff_flows.schemas.screening.FLAG_HELP`)."""
    compounds = [p for p in inside if not Composition(p["formula"]).is_element]
    flags = []
    if record["status"] == "not_converged":
        flags.append("not_converged")
    if not compounds:
        flags.append("no_competing_phases")
    if any(p.get("status") == "not_converged" for p in inside):
        flags.append("hull_phase_not_converged")
    return ("elements and competing phases" if compounds else "elements only"), flags


def _rank_system(group: Sequence[dict], inside: Sequence[dict]) -> list[RankedCandidate]:
    """RankedCandidates of the candidates of one chemical system against its hull phases."""
    entries = [(Composition(p["formula"]), p["energy_per_atom"]) for p in inside]
    candidates = [
        (Composition(b["formula"]), b["energy_per_atom"] * _atoms(b["formula"])) for b in group
    ]
    try:
        results = stabilities(candidates, [(c, e * c.num_atoms) for c, e in entries])
    except Exception as error:  # e.g. a reference failed: these candidates get no energetics
        return [RankedCandidate(**b | {"error": f"no energetics: {_short(error)}"}) for b in group]
    ranked = []
    for b, s in zip(group, results, strict=True):
        references, flags = hull_verdict(b, inside)
        ranked.append(
            RankedCandidate(
                **b,
                e_form_per_atom=s.formation_energy_per_atom,
                e_above_hull=s.e_above_hull,
                decomposition=s.decomposition,
                hull_references=references,
                flags=flags,
            )
        )
    return ranked


def _atoms(formula: str) -> float:
    return Composition(formula).num_atoms


def plot_hulls(ranked, phases, plot_dir: str | Path, campaign_id: str) -> list[str]:
    """A PNG per binary or ternary chemical system of the candidates: the hull of references
    and competing phases (pymatgen's PDPlotter), candidates marked as red crosses labelled with
    their energy above the hull (eV/atom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from pymatgen.analysis.phase_diagram import PDEntry, PDPlotter, PhaseDiagram, triangular_coord

    directory = Path(plot_dir)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    systems = sorted({r.chemsys for r in ranked if r.e_above_hull is not None})
    for chemsys in systems:
        elements = set(chemsys.split("-"))
        if len(elements) not in (2, 3):
            continue
        entries = [
            PDEntry(Composition(p["formula"]), p["energy_per_atom"] * _atoms(p["formula"]))
            for p in phases
            if {e.symbol for e in Composition(p["formula"]).elements} <= elements
        ]
        try:
            diagram = PhaseDiagram(entries)
            axes = PDPlotter(diagram, backend="matplotlib", show_unstable=0).get_plot()
        except Exception as error:  # a plot never fails the campaign
            logger.warning("no hull plot for %s: %s", chemsys, error)
            continue
        heights = []
        for r in (r for r in ranked if r.chemsys == chemsys and r.e_form_per_atom is not None):
            coords = diagram.pd_coords(Composition(r.formula))
            if len(elements) == 2:
                x, y = coords[0], r.e_form_per_atom
                heights.append(y)
            else:
                x, y = triangular_coord(coords[0:2])
            axes.plot(x, y, "x", color="red", markersize=9, mew=2)
            text = f"{r.formula} {r.e_above_hull:+.3f}"
            axes.annotate(text, (x, y), textcoords="offset points", xytext=(4, -12), fontsize=8,
                          color="red")  # fmt: skip
        if heights:  # PDPlotter's limits fit the hull only
            low, high = axes.get_ylim()
            axes.set_ylim(min(low, min(heights) - 0.1), max(high, max(heights) + 0.1))
        axes.set_title(f"{campaign_id}: {chemsys} (×: candidates, E above hull in eV/atom)",
                       fontsize=9)  # fmt: skip
        path = directory / f"{_safe(campaign_id)}_{chemsys}.png"
        axes.figure.savefig(path, dpi=120, bbox_inches="tight")
        plt.close(axes.figure)
        paths.append(str(path))
    return paths


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


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
    ``message``."""
    start = time.perf_counter()
    computed, reused, chunk_seconds, leases = _chunk_documents(chunks)
    seen = {r["key"] for r in computed}
    earlier = [r for r in [*stored, *reused] if r["key"] not in seen]
    records = computed + list({r["key"]: r for r in earlier}.values())
    stored_keys = {r["key"] for r in earlier}
    phases = hull_phases(records, entries)
    ranked = rank(records, phases, stored_keys)
    plots = plot_hulls(ranked, phases, plot_dir, campaign_id) if plot_dir else []
    counts = {s: sum(r.status == s for r in ranked) for s in _STATUS_ORDER}
    counts |= dict(
        candidates=len(ranked),
        stored_before=sum(r.stored_before for r in ranked),
        computed=sum(not r.stored_before for r in ranked),
        rejected=len(generation.get("rejected", [])),
        references=sum(r["role"] == "reference" for r in records),
        competing=sum(r["role"] == "competing" for r in records) + len(entries),
        failed_phases=sum(r["role"] != "candidate" and r["status"] == "failed" for r in records),
        ranked=sum(r.e_above_hull is not None for r in ranked),
    )
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
