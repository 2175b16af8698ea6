"""The structures of a substitution screening campaign, each keyed for the store.

A campaign relaxes its candidates (:func:`gptff_flows.analysis.substitution.generate`, optionally a
random sample of them: :func:`sample_candidates`), the competing phases given as structures
(:func:`normalise_competing` checks them and the computed entries given instead) and the elemental
reference of every element present (:func:`gptff_flows.analysis.energetics.elemental_reference`).
:func:`campaign_items` lists them once each, keyed with
:func:`~gptff_flows.analysis.substitution.structure_key` on the settings that decide a result,
so a rerun finds what is stored. Structures in Å, energies in eV.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Iterable, Mapping, Sequence

from pymatgen.core import Composition, Structure

from gptff_core.errors import GPTFFInputError

logger = logging.getLogger(__name__)


def normalise_competing(competing) -> list[dict]:
    """Competing phases as ``{"name", "structure"}`` or ``{"name", "composition", "energy"}``
    (total energy in eV) dicts; ``competing`` is name → phase, a list of phases, or None.

    Raises:
        StructureError: a structure GPTFF cannot take, named.
        GPTFFInputError: a non-finite energy, or neither a Structure nor a computed entry.
    """
    if competing is None:
        return []
    pairs = (
        list(competing.items())
        if isinstance(competing, Mapping)
        else [(None, phase) for phase in competing]
    )
    return [_competing_phase(name, phase) for name, phase in pairs]


def _competing_phase(name: str | None, phase) -> dict:
    """One competing phase as a dict (see :func:`normalise_competing`)."""
    from gptff_flows.analysis.substitution import check_phase_structure

    if isinstance(phase, Structure):
        name = name or phase.composition.reduced_formula
        check_phase_structure(phase, f"competing phase {name!r}")
        return dict(name=name, structure=phase)
    if hasattr(phase, "composition") and hasattr(phase, "energy"):
        composition = phase.composition
        name = name or getattr(phase, "name", None) or composition.reduced_formula
        energy = float(phase.energy)
        if not math.isfinite(energy) or composition.num_atoms <= 0:
            raise GPTFFInputError(
                f"competing phase {name!r}: energy {energy} eV of {composition.formula} is "
                "not a finite total energy of a composition with atoms; fix the entry"
            )
        return dict(name=name, composition=composition.formula, energy=energy)
    raise GPTFFInputError(
        f"competing phase {name or ''} must be a pymatgen Structure or a computed entry "
        f"(ComputedEntry, PDEntry), got {type(phase).__name__}"
    )


def sample_candidates(generation, limit: int | None, seed: int = 0) -> None:
    """Keep a random sample of ``limit`` of the generation's candidates (in their order), drawn
    with ``seed``; ``None``, or no more candidates than ``limit``: keep them all."""
    if limit is not None and len(generation.candidates) > limit:
        sample = random.Random(seed).sample(range(len(generation.candidates)), limit)
        generation.candidates = [generation.candidates[i] for i in sorted(sample)]


def campaign_items(generation, competing: Sequence[dict], settings) -> list[dict]:
    """Every structure of the campaign once, with its ``role``, ``label``, ``structure``,
    ``relax_cell`` and ``key``: candidates, competing phases given as structures, elemental
    references of every element present (of the computed entries' too).

    Args:
        generation: the campaign's :class:`~gptff_flows.analysis.substitution.Generation`.
        competing: phases from :func:`normalise_competing`.
        settings: the :class:`~gptff_flows.schemas.screening.ScreeningSettings` hashed into
            every key (all but ``model``, named by its checkpoint sha256; ``dispersion`` only
            when on, so the keys of campaigns without D3 stay those stored before it existed).
    """
    items = [_candidate_item(candidate) for candidate in generation.candidates]
    for phase in competing:
        if "structure" in phase:
            items.append(
                dict(role="competing", label=phase["name"], structure=phase["structure"])
                | dict(relax_cell=True)
            )
    items += reference_items(_elements(items, competing))
    hashed_out = {"model"} if getattr(settings, "dispersion", False) else {"model", "dispersion"}
    return _keyed(items, settings.model_dump(exclude=hashed_out))


def _candidate_item(candidate) -> dict:
    """The item of a generated candidate (its cell is relaxed)."""
    return dict(
        role="candidate",
        label=candidate.label,
        structure=candidate.structure,
        prototype_id=candidate.prototype_id,
        substitution=dict(candidate.substitution),
        volume_scaling=candidate.volume_scaling,
        notes=list(candidate.notes),
        relax_cell=True,
    )


def _elements(items: Sequence[dict], competing: Sequence[dict]) -> set[str]:
    """Element symbols of the items' structures and of the computed entries."""
    elements = set()
    for item in items:
        elements |= {e.symbol for e in item["structure"].composition.elements}
    for phase in competing:
        if "composition" in phase:
            elements |= {e.symbol for e in Composition(phase["composition"]).elements}
    return elements


def reference_items(symbols: Iterable[str]) -> list[dict]:
    """The elemental reference item of each symbol, in alphabetical order (the cell relaxed for
    crystals, not for molecules in a box); an element without one is logged and left out."""
    from pymatgen.io.ase import AseAtomsAdaptor

    from gptff_flows.analysis.energetics import elemental_reference

    items = []
    for symbol in sorted(symbols):
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
    return items


def _keyed(items: Sequence[dict], key_settings: dict) -> list[dict]:
    """The items with their ``key`` (structure, settings and cell relaxation hashed), the
    first of each key only."""
    from gptff_flows.analysis.substitution import structure_key

    unique, seen = [], set()
    for item in items:
        item["key"] = structure_key(
            item["structure"], key_settings | {"relax_cell": item["relax_cell"]}
        )
        if item["key"] not in seen:
            seen.add(item["key"])
            unique.append(item)
    return unique
