"""A screening campaign's hulls: candidates ranked by energy above the hull, and hull plots.

Energies are in eV/atom. Each chemical system of the candidates gets its own hull
(:func:`gptff_flows.analysis.energetics.stabilities`, pymatgen's ``PhaseDiagram``), built from
the elemental references and competing phases whose elements all belong to that system, never
from the candidates themselves. :func:`rank` returns plain dicts with the fields of
:class:`~gptff_flows.schemas.screening.RankedCandidate` (the jobs turn them into documents);
:func:`plot_hulls` draws each binary or ternary hull on a :class:`matplotlib.figure.Figure`
(the user's matplotlib backend is left alone) and writes it as a PNG.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

from pymatgen.core import Composition

from gptff_flows.analysis.energetics import stabilities

logger = logging.getLogger(__name__)

STATUS_ORDER = {"relaxed": 0, "not_converged": 1, "failed": 2}
"""Candidate statuses, in the order they rank at equal energy above hull."""


def error_text(error: BaseException) -> str:
    """``"Type: message"`` on one line, at most 1000 characters (as stored in documents)."""
    text = " ".join(str(error).split()) or type(error).__name__
    return f"{type(error).__name__}: {text}"[:1000]


def hull_phases(records: Sequence[dict], entries: Sequence[dict]) -> list[dict]:
    """Hull phases: relaxed references and competing phases (not-converged ones too, flagged),
    and the user's computed entries; each ``formula``, ``energy_per_atom`` (eV/atom), ``role``,
    ``source`` and ``status``.

    Args:
        records: slim candidate records (``formula_pretty``, ``energy_per_atom`` in eV/atom,
            ``role``, ``label``, ``status``).
        entries: computed entries, ``{"composition", "energy" (total, eV), "name"}``.
    """
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


def rank(records: Sequence[dict], phases: Sequence[dict], stored_keys: set[str]) -> list[dict]:
    """The candidate ``records`` ranked against ``phases`` (one hull per chemical system):
    dicts with the fields of :class:`~gptff_flows.schemas.screening.RankedCandidate`
    (energies in eV/atom), sorted by energy above hull; those without one (failed) last."""
    ranked = []
    by_chemsys: dict[str, list[dict]] = {}
    for record in records:
        if record["role"] != "candidate":
            continue
        base = _ranking_fields(record, record["key"] in stored_keys)
        if record["status"] == "failed":
            ranked.append(base)
        else:
            by_chemsys.setdefault(record["chemsys"], []).append(base)
    for chemsys, group in by_chemsys.items():
        ranked += _rank_system(group, _phases_inside(phases, chemsys))
    ranked.sort(key=_ranking_order)
    return ranked


def _ranking_fields(record: dict, stored_before: bool) -> dict:
    """The fields a ranked candidate takes over from its slim record."""
    return dict(
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
        stored_before=stored_before,
    )


def _ranking_order(ranked: dict) -> tuple:
    """Sort key: energy above hull (eV/atom; none last), then status, then label."""
    e_hull = ranked.get("e_above_hull")
    return (e_hull is None, e_hull if e_hull is not None else 0.0,
            STATUS_ORDER[ranked["status"]], ranked["label"])  # fmt: skip


def _phases_inside(phases: Sequence[dict], chemsys: str) -> list[dict]:
    """The phases whose elements all belong to ``chemsys`` (``"Cl-K"``)."""
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


def _rank_system(group: Sequence[dict], inside: Sequence[dict]) -> list[dict]:
    """The candidates of one chemical system with their energetics (eV/atom) against its hull
    phases ``inside``; when the hull cannot be built, each says why in ``error``."""
    entries = [(Composition(p["formula"]), p["energy_per_atom"]) for p in inside]
    candidates = [
        (Composition(b["formula"]), b["energy_per_atom"] * _atoms(b["formula"])) for b in group
    ]
    try:
        results = stabilities(candidates, [(c, e * c.num_atoms) for c, e in entries])
    except Exception as error:  # e.g. a reference failed: these candidates get no energetics
        return [b | {"error": f"no energetics: {error_text(error)}"} for b in group]
    ranked = []
    for b, s in zip(group, results, strict=True):
        references, flags = hull_verdict(b, inside)
        ranked.append(
            b
            | dict(
                e_form_per_atom=s.formation_energy_per_atom,
                e_above_hull=s.e_above_hull,
                decomposition=s.decomposition,
                hull_references=references,
                flags=flags,
            )
        )
    return ranked


def _atoms(formula: str) -> float:
    """Atoms in the formula unit of ``formula``."""
    return Composition(formula).num_atoms


def plot_hulls(
    ranked: Sequence[dict], phases: Sequence[dict], plot_dir: str | Path, campaign_id: str
) -> list[str]:
    """A PNG per binary or ternary chemical system of the ranked candidates,
    ``<plot_dir>/<campaign_id>_<chemsys>.png``: the hull of references and competing phases,
    candidates marked as red crosses labelled with their energy above the hull (eV/atom).
    A hull that cannot be drawn is logged and left out, never raised. Returns the paths."""
    directory = Path(plot_dir)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for chemsys in sorted({r["chemsys"] for r in ranked if r.get("e_above_hull") is not None}):
        if len(chemsys.split("-")) not in (2, 3):
            continue
        try:
            diagram, figure = _hull_figure(_phases_inside(phases, chemsys))
        except Exception as error:  # a plot never fails the campaign
            logger.warning("no hull plot for %s: %s", chemsys, error)
            continue
        _mark_candidates(figure.axes[0], diagram, [r for r in ranked if r["chemsys"] == chemsys])
        figure.axes[0].set_title(f"{campaign_id}: {chemsys} (×: candidates, E above hull in "
                                 "eV/atom)", fontsize=9)  # fmt: skip
        path = directory / f"{_safe(campaign_id)}_{chemsys}.png"
        figure.savefig(path, dpi=120, bbox_inches="tight")
        paths.append(str(path))
    return paths


def _hull_figure(inside: Sequence[dict]):
    """``(PhaseDiagram, Figure)``: the hull of the phases ``inside`` one binary or ternary
    system, stable phases as labelled green dots; binary: atom fraction against formation
    energy (eV/atom), ternary: the Gibbs triangle."""
    from matplotlib.figure import Figure
    from pymatgen.analysis.phase_diagram import PDEntry, PDPlotter, PhaseDiagram
    from pymatgen.util.string import latexify

    entries = [
        PDEntry(Composition(p["formula"]), p["energy_per_atom"] * _atoms(p["formula"]))
        for p in inside
    ]
    diagram = PhaseDiagram(entries)
    lines, stable, _ = PDPlotter(diagram, backend="matplotlib", show_unstable=0).pd_plot_data
    figure = Figure(figsize=(8, 6))
    axes = figure.add_subplot()
    for x, y in lines:
        axes.plot(x, y, "ko-", linewidth=3, markersize=10, markerfacecolor="#4daf4a")
    ternary = len(diagram.elements) == 3
    if ternary:
        center = (0.5, math.sqrt(3) / 6)
        axes.set_aspect("equal")
        axes.set(xlim=(-0.1, 1.2), ylim=(-0.1, 1.0))
        axes.axis("off")
    else:
        low = min(y for _, y in stable)
        center = (0.5, low / 2)
        axes.set(xlim=(-0.1, 1.1), ylim=(low - max(abs(low) * 0.1, 0.1), max(abs(low) * 0.1, 0.1)))
        axes.set_xlabel(f"atom fraction of {diagram.elements[1].symbol}")
        axes.set_ylabel("Formation energy (eV/atom)")
    for (x, y), entry in stable.items():
        dx, dy = x - center[0], y - center[1]
        axes.annotate(latexify(entry.name), (x, y), textcoords="offset points", fontsize=11,
                      xytext=(10 * math.copysign(1, dx) if abs(dx) > 0.01 else 0,
                              10 * math.copysign(1, dy)),
                      ha="left" if dx > 0.01 else "right" if dx < -0.01 else "center",
                      va="bottom" if dy > 0 else "top")  # fmt: skip
    return diagram, figure


def _mark_candidates(axes, diagram, ranked: Sequence[dict]) -> None:
    """Red crosses at the candidates of one system, labelled ``formula ±E_hull`` (eV/atom);
    a binary plot's energy range grows to show them all."""
    from pymatgen.analysis.phase_diagram import triangular_coord

    binary = len(diagram.elements) == 2
    heights = []
    for r in (r for r in ranked if r.get("e_form_per_atom") is not None):
        coords = diagram.pd_coords(Composition(r["formula"]))
        if binary:
            x, y = coords[0], r["e_form_per_atom"]
            heights.append(y)
        else:
            x, y = triangular_coord(coords[0:2])
        axes.plot(x, y, "x", color="red", markersize=9, mew=2)
        text = f"{r['formula']} {r['e_above_hull']:+.3f}"
        axes.annotate(text, (x, y), textcoords="offset points", xytext=(4, -12), fontsize=8,
                      color="red")  # fmt: skip
    if heights:  # the hull's limits fit the hull only
        low, high = axes.get_ylim()
        axes.set_ylim(min(low, min(heights) - 0.1), max(high, max(heights) + 0.1))


def _safe(text: str) -> str:
    """``text`` with every character but letters, digits and ``-_.`` replaced by ``_``."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)
