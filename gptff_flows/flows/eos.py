"""Equation of state with GPTFF: relax, strain, fit (Birch–Murnaghan by default), plot.

:class:`GPTFFEosMaker` is atomate2's ``ForceFieldEosMaker`` with GPTFF relaxations: the input
structure (it need not be relaxed) is relaxed with its cell free, strained isotropically
``number_of_frames`` times over ``linear_strain``, each strained cell is relaxed at fixed cell,
and a last job fits every EOS form pymatgen knows and writes a
:class:`~gptff_flows.schemas.GPTFFEosDocument` for the chosen form: V0 (Å³/atom), E0 (eV/atom),
B0 (GPa), B′ and the fitted curve, the fit's verdict (``ok``, ``flagged`` with its flags and
reasons, or ``refused`` when the points show no minimum: see :mod:`gptff_flows.analysis.eos_fit`)
and the provenance of the relaxations. A structure that is not a 3D bulk is refused by
:meth:`GPTFFEosMaker.make`, before any job is made. atomate2's own
fitting job (``postprocessor``) is off by default — the last job does its work — which saves one
job per flow (a process start under jobflow-remote); pass one to have its output too.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from atomate2.common.jobs.eos import EOSPostProcessor
from atomate2.forcefields.flows.eos import ForceFieldEosMaker
from jobflow import CURRENT_JOB, Flow, Maker, job
from pymatgen.analysis.eos import EOS
from pymatgen.core import Structure
from pymatgen.io.ase import AseAtomsAdaptor

from gptff_core.errors import ComputationError, GPTFFInputError
from gptff_flows.analysis.eos_fit import MIN_POINTS, EosRefused, fit_eos
from gptff_flows.analysis.eos_geometry import check_bulk, cutoff_crossings
from gptff_flows.jobs import GPTFFRelaxMaker
from gptff_flows.options import GPTFFOptions, absolute_dir, require_int, require_number
from gptff_flows.schemas.base import GPTFFProvenance
from gptff_flows.schemas.eos import GPTFFEosDocument

logger = logging.getLogger(__name__)

EOS_FORMS = ("birch_murnaghan", "murnaghan", "birch", "pourier_tarantola", "vinet")
"""pymatgen EOS names this flow can report."""

CURVE_POINTS = 60
"""Volumes on which the fitted curve is stored."""


@dataclass
class GPTFFEosMaker(GPTFFOptions, ForceFieldEosMaker):
    """Energy–volume curve and EOS fit of a structure with GPTFF.

    ``model``, ``dtype``, ``smooth``, ``device`` and ``calculator_kwargs`` are
    :class:`~gptff_flows.options.GPTFFOptions`' (passed to both relaxation Makers).

    Args:
        name: flow name.
        eos: the EOS form reported (one of :data:`EOS_FORMS`); all are fitted.
        linear_strain: (min, max) linear strain of the deformations (dimensionless; volume
            changes by about three times as much).
        number_of_frames: strained cells; with the relaxed cell they make the fitted points.
        relax_fmax: eV/Å, force threshold of the relaxations.
        initial_relax_maker, eos_relax_maker: default to GPTFF relaxations with the fields above
            (cell free, then cell fixed); pass your own :class:`GPTFFRelaxMaker` to change more.
        postprocessor: atomate2's EOS fitting job, run before the last job (default none).
        plot_dir: directory for a PNG of the fit written by the last job (``None``: no plot);
            a relative path is resolved against the working directory when the Maker is built.
    """

    name: str = "GPTFF EOS"
    eos: str = "birch_murnaghan"
    relax_fmax: float = 0.05
    initial_relax_maker: Maker | None = None
    eos_relax_maker: Maker | None = None
    postprocessor: EOSPostProcessor | None = None
    plot_dir: str | None = None

    def __post_init__(self) -> None:
        self._check_fields()
        self.plot_dir = absolute_dir(self.plot_dir)  # jobs run elsewhere (run_flow's temp dir)
        self._default_relax_makers()

    def _check_fields(self) -> None:
        """Refuse a bad GPTFF option, EOS form, ``relax_fmax`` (eV/Å), ``number_of_frames``
        (at least :data:`~gptff_flows.analysis.eos_fit.MIN_POINTS` points with the relaxed
        cell, for a 4-parameter fit) or ``socket=True``."""
        self.check_options()
        if self.eos not in EOS_FORMS:
            raise GPTFFInputError(f"eos must be one of {', '.join(EOS_FORMS)}, got {self.eos!r}")
        require_number("relax_fmax", self.relax_fmax, "eV/Å")
        require_int("number_of_frames", self.number_of_frames, minimum=MIN_POINTS - 1)
        if self.socket:
            raise GPTFFInputError("socket=True is not supported by GPTFFEosMaker; leave it False")

    def _default_relax_makers(self) -> None:
        """GPTFF relaxations with this Maker's options where none were given (cell free first,
        then cell fixed); refuse relaxation Makers that are not GPTFF's."""
        options = dict(model=self.model, dtype=self.dtype, smooth=self.smooth, device=self.device)
        options |= dict(calculator_kwargs=dict(self.calculator_kwargs))
        relax_kwargs = {"fmax": self.relax_fmax}
        if self.initial_relax_maker is None:
            self.initial_relax_maker = GPTFFRelaxMaker(**options, relax_kwargs=relax_kwargs)
        if self.eos_relax_maker is None:
            self.eos_relax_maker = GPTFFRelaxMaker(
                **options, relax_cell=False, relax_kwargs=relax_kwargs
            )
        for field_name in ("initial_relax_maker", "eos_relax_maker"):
            if not isinstance(getattr(self, field_name), GPTFFRelaxMaker):
                raise GPTFFInputError(
                    f"{field_name} must be a GPTFFRelaxMaker (its documents carry the provenance)"
                )

    def make(self, structure: Structure, prev_dir: str | Path | None = None) -> Flow:
        """The EOS flow of ``structure``; its output is a ``GPTFFEosDocument``.

        Raises:
            StructureError: ``structure`` is not a 3D bulk (see
                :func:`~gptff_flows.analysis.eos_geometry.check_bulk`), before any job is made.
        """
        check_bulk(AseAtomsAdaptor.get_atoms(structure), label=structure.composition.formula)
        flow = super().make(structure, prev_dir=prev_dir)
        relaxations = [j for j in flow.jobs if j.name.startswith(self.eos_relax_maker.name)]
        flow.jobs[0].update_metadata({"gptff_role": "eos_initial_relax"})
        for relaxation in relaxations:
            relaxation.update_metadata({"gptff_role": "eos_point"})
        summary = summarize_eos(
            flow.output,
            provenance=flow.jobs[0].output.gptff,
            eos=self.eos,
            plot_dir=self.plot_dir,
        )
        summary.name = f"{self.name} fit"
        summary.update_metadata({"gptff_role": "eos_fit"})
        flow.add_jobs(summary)
        flow.output = summary.output
        flow.update_metadata({"flow_name": self.name})
        return flow


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
        formula_pretty=reference.composition.reduced_formula,
        chemsys=reference.composition.chemical_system,
        nsites=n_atoms,
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


def plot_eos(doc: GPTFFEosDocument | dict, path: str | Path) -> Path:
    """Write a PNG of the computed points and the fitted curve (eV/atom vs Å³/atom) to ``path``;
    the title carries the verdict (the flags, or why the fit was refused)."""
    from matplotlib.figure import Figure

    doc = GPTFFEosDocument.model_validate(doc) if isinstance(doc, dict) else doc
    fit = doc.fit
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure = Figure(figsize=(5, 4), dpi=120)
    axes = figure.subplots()
    axes.plot(doc.volumes_per_atom, doc.energies_per_atom, "o", label="GPTFF")
    title = f"{doc.formula_pretty} ({doc.gptff.model_name})"
    if fit is not None:
        axes.plot(doc.fitted_volumes_per_atom, doc.fitted_energies_per_atom, "-", label=fit.eos)
        title += f": V0 {fit.v0_per_atom:.3f} Å³/atom, B0 {fit.b0:.1f} GPa"
    if doc.flags:
        word = "FLAGGED" if fit is not None else "NO FIT"
        title += f"\n{word}: {', '.join(doc.flags)}"
    axes.set_xlabel("volume (Å³/atom)")
    axes.set_ylabel("energy (eV/atom)")
    axes.set_title(title, fontsize=9, color="firebrick" if doc.flags else "black")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    return path


def run_eos_flow(flow: Flow, store, **options) -> GPTFFEosDocument:
    """Run an EOS ``flow`` (from :meth:`GPTFFEosMaker.make`) with
    :func:`~gptff_flows.run.run_flow` into ``store``; its document (the verdict included).

    Raises:
        ComputationError: a job failed (run_flow names the job and its cause); completed jobs
            stay stored.
    """
    from gptff_flows.run import run_flow

    try:
        with warnings.catch_warnings():  # jobflow's own FutureWarnings are not the user's
            warnings.filterwarnings("ignore", category=FutureWarning, module="jobflow")
            responses = run_flow(flow, store, **options)
    except ComputationError:
        raise
    except RuntimeError as exc:  # jobflow's bare "Flow did not finish running successfully"
        raise ComputationError(f"{flow.name}: {exc}") from exc
    return responses[flow.output.uuid][1].output
