"""The last job of the EOS flow: fit every EOS form to the relaxed points, judge the fit, plot.

:func:`summarize_eos` turns atomate2's EOS flow output into a per-atom
:class:`~gptff_flows.schemas.eos.GPTFFEosDocument` with the fit's verdict (``ok``, ``flagged`` or
``refused``: :mod:`gptff_flows.analysis.eos_fit`) and, with a plot directory, a PNG
(:func:`~gptff_flows.analysis.plotting.plot_eos`).

Units: volumes Å³/atom, energies eV/atom, B0 GPa.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
from jobflow import CURRENT_JOB, job
from pymatgen.analysis.eos import EOS
from pymatgen.core import Structure
from pymatgen.io.ase import AseAtomsAdaptor

from gptff_core.errors import GPTFFInputError
from gptff_flows.analysis.eos_fit import EosRefused, fit_eos
from gptff_flows.analysis.eos_geometry import cutoff_crossings
from gptff_flows.analysis.plotting import plot_eos
from gptff_flows.schemas.base import GPTFFProvenance, formula_fields
from gptff_flows.schemas.eos import GPTFFEosDocument

logger = logging.getLogger(__name__)

EOS_FORMS = ("birch_murnaghan", "murnaghan", "birch", "pourier_tarantola", "vinet")
"""pymatgen EOS names this flow can report."""

CURVE_POINTS = 60
"""Volumes on which the fitted curve is stored."""


def _fitted_curve(
    form: str, volumes: np.ndarray, energies: np.ndarray
) -> tuple[list[float], list[float]]:
    """The fitted E(V) (eV/atom) of ``form`` on a grid spanning ``volumes`` (Å³/atom)."""
    grid = np.linspace(volumes.min(), volumes.max(), CURVE_POINTS)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        fitted = EOS(eos_name=form).fit(volumes.tolist(), energies.tolist())
    return grid.tolist(), np.asarray(fitted.func(grid), dtype=float).tolist()


def _fits(volumes: np.ndarray, energies: np.ndarray, eos: str, crossings: list) -> dict:
    """The selected fit with its verdict, or its refusal, and the other forms that fit."""
    others = []
    for form in EOS_FORMS:
        if form != eos:
            try:
                others.append(fit_eos(volumes, energies, form, crossings))
            except GPTFFInputError as exc:
                logger.info("%s", exc)
    try:
        fit = fit_eos(volumes, energies, eos, crossings)
    except EosRefused as exc:
        logger.info("EOS refused: %s", exc)
        return dict(fit=None, other_fits=others, verdict="refused", flags=[exc.flag],
                    flag_reasons=[str(exc)])  # fmt: skip
    curve_v, curve_e = _fitted_curve(eos, volumes, energies)
    for reason in fit.flag_reasons:
        logger.info("EOS fit flagged: %s", reason)
    return dict(fit=fit, other_fits=others, verdict="flagged" if fit.flags else "ok",
                flags=fit.flags, flag_reasons=fit.flag_reasons,
                fitted_volumes_per_atom=curve_v, fitted_energies_per_atom=curve_e)  # fmt: skip


@job
def summarize_eos(
    eos_output: dict,
    provenance: GPTFFProvenance | dict,
    eos: str = "birch_murnaghan",
    plot_dir: str | None = None,
) -> GPTFFEosDocument:
    """Per-atom EOS document from atomate2's EOS flow output (``eos_output["relax"]``): the fit
    and its verdict (``ok``, ``flagged`` or ``refused``, see :mod:`gptff_flows.analysis.eos_fit`).
    A refused fit still gives a document (the computed points, no fit) rather than a failed job."""
    relax = eos_output["relax"]
    structures = [
        s if isinstance(s, Structure) else Structure.from_dict(s) for s in relax["structure"]
    ]
    n_atoms = len(structures[0])
    volumes = np.asarray(relax["volume"], dtype=float) / n_atoms
    energies = np.asarray(relax["energy"], dtype=float) / n_atoms
    order = np.argsort(volumes)
    volumes, energies = volumes[order], energies[order]
    crossings = cutoff_crossings([AseAtomsAdaptor.get_atoms(structures[k]) for k in order])
    provenance = GPTFFProvenance.model_validate(provenance)
    # with smooth envelopes the energy is continuous at the cutoffs: a crossing is no reason to
    # expect a jump there (the points are still judged by energy_jump and the fit quality)
    judged = [] if provenance.smooth else crossings
    reference = structures[0]
    doc = GPTFFEosDocument(
        **formula_fields(reference, nsites=n_atoms),
        structure=reference,
        cutoff_crossings=crossings,
        volumes_per_atom=volumes.tolist(),
        energies_per_atom=energies.tolist(),
        gptff=provenance.model_copy(update={"job_type": "eos"}),
        **_fits(volumes, energies, eos, judged),
    )
    if plot_dir is not None:
        uuid = CURRENT_JOB.job.uuid if CURRENT_JOB.job is not None else "local"
        path = Path(plot_dir) / f"eos_{doc.formula_pretty}_{uuid[:8]}.png"
        try:
            doc.plot_path = str(plot_eos(doc, path))
        except OSError as exc:  # the fit is kept: a plot is never worth losing the result
            logger.warning("EOS plot not written to %s: %s", path, exc)
    return doc
