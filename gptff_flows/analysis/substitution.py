"""Candidate structures for a substitution screening campaign, made with pymatgen.

Each prototype's elements are replaced everywhere they occur (all sites of that element), by
every combination of the replacements asked for: ``{"Y": ["Sc", "In"], "Cl": ["Br"]}`` on
Li₃YCl₆ gives Li₃ScCl₆, Li₃InCl₆, Li₃YBr₆, Li₃ScBr₆ and Li₃InBr₆ (with ``keep_original=True``,
the default; the prototype itself is not a candidate). Optional steps, in order: suggestions
from pymatgen's data-mined substitution probabilities, a charge-balance filter (pymatgen's
oxidation-state guesses; both in :mod:`gptff_flows.analysis.oxidation_states`), volume
pre-scaling, and removal of duplicates with
:class:`~pymatgen.analysis.structure_matcher.StructureMatcher`.

Volumes: ``"ionic-radii"`` scales each candidate from its prototype by the change of ionic radii
(pymatgen's ``RLSVolumePredictor``), ``"data-mined"`` predicts it from data-mined bond lengths
(``DLSVolumePredictor``), ``"none"`` keeps the prototype's lattice. Volumes are in Å³.
Ionic radii are the default: on 33 candidates from rocksalt, perovskite and fluorite prototypes
the batched cell relaxation (fmax 0.05 eV/Å) took a median of 6 FIRE steps from ionic-radii
volumes, against 13 from data-mined volumes and 13 from the prototypes' lattices
(``python benchmarks/volume_scaling.py``, gptff-v2).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from pymatgen.core import Element, Structure

from gptff_core.errors import GPTFFInputError, StructureError
from gptff_flows.analysis.oxidation_states import is_charge_balanced, suggested_substitutions

logger = logging.getLogger(__name__)

VOLUME_SCALINGS = ("ionic-radii", "data-mined", "none")


@dataclass(frozen=True)
class Candidate:
    """One substituted structure, before relaxation.

    Attributes:
        structure: the substituted (and volume-scaled) structure; lattice in Å.
        prototype_id: the name of the prototype it came from.
        substitution: element replaced → element put in its place (only those that changed).
        volume_scaling: how its volume was set (one of :data:`VOLUME_SCALINGS`, or ``"none"``
            when the chosen predictor could not handle this candidate; see ``notes``).
        notes: what happened to it on the way (a failed volume prediction, for instance).
    """

    structure: Structure
    prototype_id: str
    substitution: dict[str, str]
    volume_scaling: str
    notes: tuple[str, ...] = field(default=())

    @property
    def formula(self) -> str:
        return self.structure.composition.reduced_formula

    @property
    def chemsys(self) -> str:
        return self.structure.composition.chemical_system

    @property
    def label(self) -> str:
        """``prototype:Y->Sc,Cl->Br`` (or ``prototype:`` for no change)."""
        changes = ",".join(f"{old}->{new}" for old, new in sorted(self.substitution.items()))
        return f"{self.prototype_id}:{changes}"


@dataclass
class Generation:
    """The candidates of a campaign and what was left out, with why.

    Attributes:
        candidates: unique candidates, in a deterministic order.
        rejected: ``(label, reason)`` of combinations filtered out (charge balance) or removed
            as duplicates of an earlier candidate.
        notes: prototypes that gave no combination at all, and why.
    """

    candidates: list[Candidate]
    rejected: list[tuple[str, str]]
    notes: list[str] = field(default_factory=list)

    def why_empty(self) -> str | None:
        """``None`` when there are candidates, else one line saying what removed them all."""
        if self.candidates:
            return None
        reasons = list(self.notes)
        by_reason: dict[str, list[str]] = {}
        for label, reason in self.rejected:
            by_reason.setdefault(reason.split(" of ")[0], []).append(label)
        for reason, labels in by_reason.items():
            shown = ", ".join(labels[:5]) + (
                f" and {len(labels) - 5} more" if len(labels) > 5 else ""
            )
            reasons.append(f"{reason}: {shown}")
        return "no candidates: " + ("; ".join(reasons) or "no substitution applies")


def parse_substitutions(specs: Iterable[str]) -> dict[str, list[str]]:
    """``["Y=Sc,In,Er", "Cl=Br"]`` → ``{"Y": ["Sc", "In", "Er"], "Cl": ["Br"]}`` (the CLI's
    ``--substitute`` syntax), with element symbols checked."""
    result: dict[str, list[str]] = {}
    for spec in specs:
        old, sep, new = spec.partition("=")
        replacements = [s.strip() for s in new.split(",") if s.strip()]
        if not sep or not old.strip() or not replacements:
            raise GPTFFInputError(
                f"substitution {spec!r}: expected ELEMENT=NEW[,NEW...], e.g. Y=Sc,In"
            )
        result.setdefault(old.strip(), []).extend(replacements)
    check_substitutions(result)
    return result


def check_substitutions(substitutions: Mapping[str, Sequence[str]]) -> None:
    """Refuse unknown element symbols and empty replacement lists."""
    for old, replacements in substitutions.items():
        for symbol in (old, *replacements):
            if not Element.is_valid_symbol(symbol):
                raise GPTFFInputError(
                    f"substitution {old}→{replacements}: {symbol!r} is not an element"
                )
        if not replacements:
            raise GPTFFInputError(f"substitution for {old}: no replacement elements given")


def check_phase_structure(structure: object, label: str) -> Structure:
    """Refuse a prototype or competing phase GPTFF cannot take, before any pymatgen or spglib
    call sees it (a NaN coordinate made spglib crash the process): not a pymatgen Structure,
    partial occupancy, dummy species, NaN/inf positions or cell, elements beyond Pu, a
    degenerate cell (see :mod:`gptff_core.validation`). Raises :class:`StructureError` whose
    message starts with ``label``; returns the structure."""
    from gptff_core.validation import as_atoms, check_structure

    if not isinstance(structure, Structure):
        raise StructureError(
            f"{label} must be a pymatgen Structure, got {type(structure).__name__} "
            "(convert ASE Atoms with pymatgen.io.ase.AseAtomsAdaptor.get_structure)"
        )
    try:
        check_structure(as_atoms(structure), label)
    except StructureError as error:
        message = str(error)
        raise StructureError(
            message if message.startswith(label) else f"{label}: {message}"
        ) from None
    return structure


def check_prototypes(prototypes: object) -> dict[str, Structure]:
    """``prototypes`` (name → Structure) checked with :func:`check_phase_structure`."""
    if not isinstance(prototypes, Mapping) or not prototypes:
        raise GPTFFInputError("prototypes must be a non-empty mapping name → pymatgen Structure")
    return {
        name: check_phase_structure(prototype, f"prototype {name!r}")
        for name, prototype in prototypes.items()
    }


def check_matches(
    prototypes: Mapping[str, Structure], substitutions: Mapping[str, Sequence[str]]
) -> None:
    """Refuse a substitution whose element occurs in no prototype (it could only ever give no
    candidate: a typo, or the wrong prototype file)."""
    present = {e.symbol for p in prototypes.values() for e in p.composition.elements}
    for old, replacements in substitutions.items():
        if old not in present:
            raise GPTFFInputError(
                f"substitution {old}={','.join(replacements)}: no prototype contains {old} "
                f"(their elements: {', '.join(sorted(present))}); remove it or add a prototype "
                f"with {old}"
            )


def combinations(
    substitutions: Mapping[str, Sequence[str]], elements: Iterable[str], keep_original: bool = True
) -> list[dict[str, str]]:
    """Every combination of replacements of the ``elements`` present in a prototype.

    With ``keep_original`` each element may also stay as it is (the all-unchanged combination
    is left out); otherwise every listed element present is replaced."""
    present = [e for e in substitutions if e in set(elements)]
    options = [
        ([old] if keep_original else []) + [new for new in substitutions[old] if new != old]
        for old in present
    ]
    result = []
    for choice in itertools.product(*options):
        changes = {old: new for old, new in zip(present, choice, strict=True) if new != old}
        if changes:
            result.append(changes)
    return result


def substitute(prototype: Structure, changes: Mapping[str, str]) -> Structure:
    """The prototype with every site of each element replaced at once (swaps are allowed)."""
    result = prototype.copy()
    result.replace_species(dict(changes))
    return result


def scale_volume(
    candidate: Structure, prototype: Structure, method: str
) -> tuple[Structure, str, str | None]:
    """``(structure, method used, note)``: the candidate at its predicted volume (Å³)."""
    if method == "none":
        return candidate, "none", None
    from pymatgen.analysis.structure_prediction.volume_predictor import (
        DLSVolumePredictor,
        RLSVolumePredictor,
    )

    try:
        if method == "ionic-radii":
            predicted = RLSVolumePredictor(check_isostructural=False).get_predicted_structure(
                candidate, prototype
            )
        else:
            predicted = DLSVolumePredictor().get_predicted_structure(candidate)
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        return (
            candidate,
            "none",
            f"{method} volume prediction failed ({error}); kept the prototype's lattice",
        )
    return predicted, method, None


def generate(
    prototypes: Mapping[str, Structure],
    substitutions: Mapping[str, Sequence[str]] | None = None,
    *,
    keep_original: bool = True,
    suggest_threshold: float | None = None,
    charge_balanced: bool = False,
    volume_scaling: str = "ionic-radii",
    deduplicate: bool = True,
) -> Generation:
    """The candidates of a campaign from named prototypes.

    Args:
        prototypes: name → prototype structure (a known crystal, lattice in Å).
        substitutions: element → replacement elements (see :func:`combinations`).
        keep_original: let each element also stay unchanged in a combination.
        suggest_threshold: also take pymatgen's suggested substitutions with probability above
            this (None: none).
        charge_balanced: keep only candidates with charge-balanced oxidation states.
        volume_scaling: one of :data:`VOLUME_SCALINGS`.
        deduplicate: drop candidates that StructureMatcher finds equal to an earlier one
            (same composition and structure, from any prototype).

    Returns:
        The :class:`Generation`; when it has no candidates (every combination filtered out or
        a duplicate, or no suggestion), :meth:`Generation.why_empty` says why (also logged as a
        warning).

    Raises:
        StructureError: a prototype GPTFF cannot take (see :func:`check_phase_structure`),
            checked before any pymatgen or spglib call.
        GPTFFInputError: bad options, unknown elements, or a substituted element that occurs
            in no prototype.
    """
    prototypes, substitutions = _checked_inputs(
        prototypes, substitutions, suggest_threshold, volume_scaling
    )
    candidates: list[Candidate] = []
    rejected: list[tuple[str, str]] = []
    notes: list[str] = []
    for name, prototype in prototypes.items():
        changes_list = _changes(prototype, substitutions, keep_original, suggest_threshold)
        if not changes_list:
            why = "no substitution applies"
            if suggest_threshold is not None:
                why += f" and pymatgen suggests none above {suggest_threshold}"
            notes.append(f"prototype {name!r} ({prototype.composition.reduced_formula}): {why}")
        kept, refused = _substituted(name, prototype, changes_list, charge_balanced, volume_scaling)
        candidates += kept
        rejected += refused
    if deduplicate:
        candidates, duplicates = _unique(candidates)
        rejected += duplicates
    generation = Generation(candidates, rejected, notes)
    if not candidates:
        logger.warning("%s", generation.why_empty())
    return generation


def _checked_inputs(
    prototypes: Mapping[str, Structure],
    substitutions: Mapping[str, Sequence[str]] | None,
    suggest_threshold: float | None,
    volume_scaling: str,
) -> tuple[dict[str, Structure], dict[str, Sequence[str]]]:
    """The prototypes and substitutions of :func:`generate`, checked (see its Raises)."""
    if volume_scaling not in VOLUME_SCALINGS:
        raise GPTFFInputError(
            f"volume_scaling must be one of {VOLUME_SCALINGS}, not {volume_scaling!r}"
        )
    prototypes = check_prototypes(prototypes)
    substitutions = dict(substitutions or {})
    check_substitutions(substitutions)
    if not substitutions and suggest_threshold is None:
        raise GPTFFInputError("no substitutions given and no suggestions asked for")
    check_matches(prototypes, substitutions)
    return prototypes, substitutions


def _substituted(
    name: str,
    prototype: Structure,
    changes_list: Sequence[Mapping[str, str]],
    charge_balanced: bool,
    volume_scaling: str,
) -> tuple[list[Candidate], list[tuple[str, str]]]:
    """``(candidates, rejected)`` of one prototype: each substitution applied, filtered for
    charge balance if asked, its volume (Å³) scaled by ``volume_scaling``."""
    candidates, rejected = [], []
    for changes in changes_list:
        structure = substitute(prototype, changes)
        label = Candidate(structure, name, changes, "none").label
        if charge_balanced and not is_charge_balanced(structure.composition):
            rejected.append((label, "not charge balanced"))
            continue
        scaled, used, note = scale_volume(structure, prototype, volume_scaling)
        candidates.append(Candidate(scaled, name, changes, used, (note,) if note else ()))
    return candidates, rejected


def _changes(
    prototype: Structure,
    substitutions: Mapping[str, Sequence[str]],
    keep_original: bool,
    suggest_threshold: float | None,
) -> list[dict[str, str]]:
    """The substitutions (old → new) to apply to one prototype: the combinations, then
    pymatgen's suggestions (if asked) not already among them."""
    symbols = [e.symbol for e in prototype.composition.elements]
    changes_list = combinations(substitutions, symbols, keep_original)
    if suggest_threshold is not None:
        changes_list += [
            c
            for c in suggested_substitutions(prototype, suggest_threshold)
            if c not in changes_list
        ]
    return changes_list


def _unique(candidates: list[Candidate]) -> tuple[list[Candidate], list[tuple[str, str]]]:
    from pymatgen.analysis.structure_matcher import StructureMatcher

    matcher = StructureMatcher()
    kept: list[Candidate] = []
    duplicates = []
    by_formula: dict[str, list[Candidate]] = {}
    for candidate in candidates:
        same_formula = by_formula.setdefault(candidate.formula, [])
        twin = next(
            (k for k in same_formula if matcher.fit(k.structure, candidate.structure)), None
        )
        if twin is None:
            same_formula.append(candidate)
            kept.append(candidate)
        else:
            duplicates.append((candidate.label, f"duplicate of {twin.label}"))
    return kept, duplicates


def structure_key(structure: Structure, settings: Mapping) -> str:
    """A stable hash of a structure (species, fractional coordinates and lattice rounded to
    1e-6) together with the model and settings that compute it: the key under which a
    candidate's result is stored, so that a rerun finds it."""
    payload = {
        "lattice": [[round(x, 6) for x in row] for row in structure.lattice.matrix.tolist()],
        "species": [site.species_string for site in structure],
        "frac": [[round(x, 6) % 1.0 for x in site.frac_coords] for site in structure],
        "settings": settings,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
