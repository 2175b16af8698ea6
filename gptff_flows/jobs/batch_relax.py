"""Relaxing the structures of a screening chunk in batches, never failing for a bad one.

:func:`relax_items` relaxes a chunk of structures in TorchSim batches
(:func:`gptff_core.torchsim.relax_batch`, FIRE on a Frechet cell filter; positions only for
molecules in a box), takes each final energy on a supercell of at least ``min_atoms`` atoms (the
cell policy of :mod:`gptff_flows.analysis.energetics`) and returns one
:class:`~gptff_flows.schemas.screening.CandidateDocument` per structure. It never raises for a
bad structure: one GPTFF cannot take at all (an element beyond Pu, overlapping atoms, a degenerate
cell) is found before the batch and stored as ``failed``; when a batch stops on a structure that
breaks during its relaxation (atoms collapsing closer than 0.5 Å), the chunk is relaxed again one
structure at a time with ASE's FIRE (the same algorithm) so that only the culprit fails.

The job around it is :func:`gptff_flows.jobs.screening.relax_chunk`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from types import SimpleNamespace

import numpy as np
from pymatgen.core import Structure
from pymatgen.io.ase import AseAtomsAdaptor

from gptff_flows.analysis.energetics import supercell, supercell_repeats
from gptff_flows.analysis.hull import error_text
from gptff_flows.schemas.base import GPTFFProvenance
from gptff_flows.schemas.screening import CandidateDocument, CellPolicy, ScreeningSettings

logger = logging.getLogger(__name__)

_NETWORKS: dict[tuple, object] = {}


def torchsim_model(
    model: str, dtype: str, smooth: bool | None, device: str = "cpu", dispersion: bool = False
):
    """A :class:`~gptff_core.torchsim.GPTFFTorchSimModel`, loaded once per process; with
    ``dispersion``, the sum of it and D3(BJ) for PBE in its dtype and on its device (a
    :class:`~gptff_core.torchsim_d3.SumTorchSimModel` whose first model is GPTFF's)."""
    key = (model, dtype, smooth, device, dispersion)
    if key not in _NETWORKS:
        from gptff_core.torchsim import GPTFFTorchSimModel

        network = GPTFFTorchSimModel(model, dtype=dtype, smooth=smooth, device=device)
        if dispersion:
            from gptff_core.torchsim_d3 import D3TorchSimModel, SumTorchSimModel

            d3 = D3TorchSimModel(device=network.device, dtype=network.dtype)
            network = SumTorchSimModel(network, d3)
        _NETWORKS[key] = network
    return _NETWORKS[key]


def gptff_network(model):
    """The GPTFF network (:class:`~gptff_core.model.GPTFF`) of a :func:`torchsim_model`."""
    return model.models[0].model if hasattr(model, "models") else model.model


def d3_of(model):
    """The :class:`~gptff_core.dispersion.D3Dispersion` of a :func:`torchsim_model` (None
    without dispersion)."""
    return model.models[1].d3 if hasattr(model, "models") else None


def precheck(structure: Structure, label: str):
    """``(atoms, None)`` for a structure GPTFF can evaluate, else ``(None, error message)``."""
    from gptff_core.graph import BOND_CUTOFF, THREE_BODY_CUTOFF, structure_graph
    from gptff_core.validation import as_atoms, check_structure

    try:
        atoms = as_atoms(structure).copy()
        check_structure(atoms, label)
        structure_graph(atoms, BOND_CUTOFF, THREE_BODY_CUTOFF, label)
    except Exception as error:  # any refusal makes this item fail, never the chunk
        return None, error_text(error)
    return atoms, None


def relax_group(atoms_list, network, fmax: float, steps: int, relax_cell: bool):
    """RelaxResults (or exceptions) of structures relaxed together, then alone if needed;
    the second item says whether they were relaxed one by one. ``fmax`` in eV/Å."""
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

    calculator = GPTFFCalculator(gptff_network(network), dispersion=d3_of(network) is not None)
    results = []
    for atoms in atoms_list:
        try:
            results.append(relax(atoms, calculator, fmax=fmax, steps=steps, relax_cell=relax_cell))
        except Exception as error:  # this structure fails, the others go on
            results.append(error)
    return results, True


def final_energies(structures, network, min_atoms: int) -> list[float | Exception]:
    """Energy per atom (eV/atom) of each structure's ≥ ``min_atoms`` supercell, or the
    exception that refused it (a non-finite energy included)."""
    from gptff_core import predict

    cells = [supercell(atoms, min_atoms) for atoms in structures]
    if not cells:
        return []
    options = dict(forces=False, stress=False, progress=False)
    options["dispersion"] = d3_of(network) is not None
    try:
        energies = predict(cells, gptff_network(network), **options)
        values = [float(e) / len(c) for e, c in zip(energies.energies, cells, strict=True)]
    except Exception:  # evaluate one by one so only the culprit fails
        values = []
        for cell in cells:
            try:
                one = predict([cell], gptff_network(network), **options)
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
    network = torchsim_model(
        settings.model, settings.dtype, settings.smooth, device, settings.dispersion
    )
    provenance = GPTFFProvenance.from_calculator(
        SimpleNamespace(model=gptff_network(network), d3=d3_of(network)), "relax", settings.model
    )
    policy = CellPolicy(min_atoms=settings.min_atoms)
    fields = [item_fields(item, campaign_id, settings, policy, provenance) for item in items]
    prepared = [precheck(f["initial_structure"], f["label"]) for f in fields]
    outcomes = _relax_prepared(fields, prepared, network, settings)
    final = _final_by_index(outcomes, network, settings.min_atoms)
    documents = [
        _finish(f, prepared[i][1], outcomes.get(i), final.get(i), settings.min_atoms)
        for i, f in enumerate(fields)
    ]
    share = (time.perf_counter() - start) / max(len(documents), 1)
    return [CandidateDocument(**f, wall_time=share) for f in documents]


def item_fields(item: dict, campaign_id: str, settings, policy, provenance) -> dict:
    """The fields of an item's document known before it is relaxed (structures in Å)."""
    structure = item["structure"]
    if isinstance(structure, dict):
        structure = Structure.from_dict(structure)
    composition = structure.composition
    return dict(
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


def _relax_prepared(fields: list[dict], prepared: list, network, settings) -> dict[int, object]:
    """``{index: RelaxResult or exception}`` of the items that passed :func:`precheck`,
    relaxed in two groups (cell relaxed, positions only); sets each one's
    ``relaxed_one_by_one`` in ``fields``."""
    outcomes: dict[int, object] = {}
    for relax_cell in (True, False):
        indices = [
            i for i, f in enumerate(fields) if f["relax_cell"] == relax_cell and prepared[i][0]
        ]
        results, alone = relax_group(
            [prepared[i][0] for i in indices], network, settings.fmax, settings.steps, relax_cell
        )
        for i, result in zip(indices, results, strict=True):
            outcomes[i] = result
            fields[i]["relaxed_one_by_one"] = alone
    return outcomes


def _final_by_index(outcomes: dict[int, object], network, min_atoms: int) -> dict[int, object]:
    """``{index: final energy (eV/atom) or exception}`` of the relaxations that ended with a
    finite energy (see :func:`final_energies`)."""
    finished = [
        i for i, r in outcomes.items() if not isinstance(r, Exception) and math.isfinite(r.energy)
    ]
    energies = final_energies([outcomes[i].atoms for i in finished], network, min_atoms)
    return dict(zip(finished, energies, strict=True))


def _finish(fields: dict, error: str | None, result, final, min_atoms: int) -> dict:
    """``fields`` completed with the outcome: relaxed or not converged with the energies
    (eV/atom) and relaxed structure, else failed with its error (``error``: the precheck's,
    ``result``: RelaxResult or exception, ``final``: final energy, exception or None)."""
    if error is None:
        error = _outcome_error(result, final)
    if error is None:
        return fields | _relaxed_fields(result, final, min_atoms)
    if not isinstance(result, Exception) and result is not None:
        fields = fields | dict(n_steps=int(result.n_steps), converged=bool(result.converged))
    return fields | dict(status="failed", error=error)


def _outcome_error(result, final) -> str | None:
    """Why a relaxation that started gave no result (None: it did)."""
    if isinstance(result, Exception):
        return error_text(result)
    if final is None:
        return "ValueError: the relaxation ended with a non-finite energy"
    if isinstance(final, Exception):
        return f"final energy on the supercell failed: {error_text(final)}"
    return None


def _relaxed_fields(result, final: float, min_atoms: int) -> dict:
    """The fields of a relaxed structure: energies in eV/atom, largest force in eV/Å."""
    atoms = result.atoms
    return dict(
        relaxed_structure=AseAtomsAdaptor.get_structure(atoms),
        energy_per_atom=final,
        energy_per_atom_relaxed_cell=float(result.energy) / len(atoms),
        supercell_atoms=len(atoms) * int(np.prod(_repeats(atoms, min_atoms))),
        n_steps=int(result.n_steps),
        converged=bool(result.converged),
        max_force=float(result.max_force),
        status="relaxed" if result.converged else "not_converged",
    )


def _repeats(atoms, min_atoms: int) -> tuple[int, int, int]:
    """Repeats of the final-energy supercell ((1, 1, 1) for a molecule in a box)."""
    if not all(atoms.pbc):
        return (1, 1, 1)
    return supercell_repeats(atoms.cell.array, len(atoms), min_atoms)
