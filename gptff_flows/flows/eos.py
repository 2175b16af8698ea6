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
from typing import ClassVar

from atomate2.common.jobs.eos import EOSPostProcessor
from atomate2.forcefields.flows.eos import ForceFieldEosMaker
from jobflow import Flow, Maker
from pymatgen.core import Structure
from pymatgen.io.ase import AseAtomsAdaptor

from gptff_core.errors import ComputationError, GPTFFInputError
from gptff_flows.analysis.eos_fit import MIN_POINTS
from gptff_flows.analysis.eos_geometry import check_bulk
from gptff_flows.jobs.eos import EOS_FORMS, summarize_eos
from gptff_flows.jobs.force_field import GPTFFRelaxMaker
from gptff_flows.options import GPTFFOptions, absolute_dir, require_int, require_number
from gptff_flows.schemas.eos import GPTFFEosDocument

logger = logging.getLogger(__name__)


@dataclass
class GPTFFEosMaker(GPTFFOptions, ForceFieldEosMaker):
    """Energy–volume curve and EOS fit of a structure with GPTFF.

    ``model``, ``dtype``, ``smooth``, ``device``, ``dispersion`` (D3(BJ) added to every
    relaxation, hence to the fitted energies and B0) and ``calculator_kwargs`` are
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

    supports_dispersion: ClassVar[bool] = True

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
        options |= dict(dispersion=self.dispersion, calculator_kwargs=dict(self.calculator_kwargs))
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
            if getattr(self, field_name).dispersion != self.dispersion:
                raise GPTFFInputError(
                    f"{field_name}.dispersion must equal dispersion={self.dispersion}: the fitted "
                    "points would mix energies with and without D3"
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
