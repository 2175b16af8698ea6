"""Oxidation states of a substitution campaign, from pymatgen: charge balance and suggestions.

:func:`is_charge_balanced` asks pymatgen's oxidation-state guesses (its common states) whether a
composition can be neutral; :func:`suggested_substitutions` lists the substitutions pymatgen's
data-mined substitution model (Hautier et al. 2011) rates above a probability for a prototype.
Both serve :func:`gptff_flows.analysis.substitution.generate`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from pymatgen.core import Composition, Structure

logger = logging.getLogger(__name__)


def suggested_substitutions(structure: Structure, threshold: float) -> list[dict[str, str]]:
    """Substitutions pymatgen's data-mined substitution model (Hautier et al. 2011) rates above
    ``threshold`` for the prototype's (oxidation-state-decorated) composition."""
    from pymatgen.analysis.structure_prediction.substitution_probability import (
        SubstitutionPredictor,
    )

    guesses = structure.composition.oxi_state_guesses(max_sites=-50)
    if not guesses:
        logger.info("no oxidation states for %s: no suggestions", structure.formula)
        return []
    decorated = Composition(
        {f"{el}{_charge(q)}": n for el, n, q in _with_charges(structure, guesses[0])}
    )
    predictor = SubstitutionPredictor(threshold=threshold)
    result = []
    for prediction in predictor.composition_prediction(decorated, to_this_composition=False):
        # "substitutions" maps each species of this composition to its replacement
        changes = {
            old.symbol: new.symbol
            for old, new in prediction["substitutions"].items()
            if old.symbol != new.symbol
        }
        if changes and changes not in result:
            result.append(changes)
    return result


def _charge(q: float) -> str:
    """An oxidation state as pymatgen writes it on a species: ``3+``, ``1-``, ``2.5+``."""
    magnitude = abs(q)
    text = str(int(magnitude)) if magnitude == int(magnitude) else f"{magnitude:g}"
    return f"{text}{'+' if q >= 0 else '-'}"


def _with_charges(structure: Structure, guess: Mapping[str, float]):
    """``(symbol, amount, oxidation state)`` of each element of the structure."""
    for element, amount in structure.composition.element_composition.items():
        yield element.symbol, amount, guess[element.symbol]


def is_charge_balanced(composition: Composition) -> bool:
    """Whether pymatgen finds oxidation states (from its common ones) summing to zero;
    metals and alloys with all-zero states count as balanced."""
    if all(element.is_metal for element in composition.elements):
        return True
    return bool(composition.oxi_state_guesses(max_sites=-50))
