"""ASE calculator for GPTFF.

``GPTFFCalculator`` computes energy, free energy, forces and stress in one autograd pass whatever
property ASE asks for first, so cell filters (``FrechetCellFilter``) and NPT dynamics always see a
stress consistent with the energy. Units: eV, eV/Å, eV/Å³ (ASE sign: positive = tensile).
With ``skin > 0`` successive calls reuse the neighbour search (:mod:`gptff_core.neighbours`) and
give the same numbers as a fresh graph every call.
"""

from __future__ import annotations

import os

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from gptff_core.checkpoint import load_model
from gptff_core.errors import GPTFFInputError
from gptff_core.evaluate import evaluate, require_finite
from gptff_core.graph import Graph, build_graph
from gptff_core.model import GPTFF
from gptff_core.neighbours import VerletGraphBuilder
from gptff_core.pretrained import DEFAULT_MODEL


class GPTFFCalculator(Calculator):
    """GPTFF as an ASE calculator.

    Stress is reported only for structures whose cell has a volume; a molecule without a box
    gives energy and forces, and asking for its stress raises ``PropertyNotImplementedError``.

    Args:
        model: registry name (``"gptff-v1"``, ``"gptff-v2"``), checkpoint path, or a loaded
            :class:`~gptff_core.model.GPTFF`.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (CUDA when available);
            ``None`` (default): the CPU, or the device of a loaded network passed as ``model``.
        dtype: ``"float32"`` or ``"float64"``; ``None`` (default): float32, or the dtype of a
            loaded network passed as ``model``.
        smooth: multiply messages by C² envelopes so energy and forces are continuous at the
            cutoffs (``None``: the checkpoint's setting, off for the published networks).
        bond_window: Å, envelope width below the 5 Å bond cutoff when smooth.
        three_body_window: Å, envelope width below the 3.5 Å triplet cutoff when smooth.
        skin: Å; 0 (default) searches for neighbours on every call, a positive skin keeps the
            pairs within 5 Å + skin and searches again only when atoms or the cell have moved
            enough that a bond could be missing (1.0 Å is recommended for MD and relaxations).
            Bonds, triplets and results are the same either way.
        dispersion: add Grimme's D3(BJ) dispersion for PBE to energy, forces and stress (needs
            torch-dftd, the ``d3`` extra; parameters and cutoffs in :mod:`gptff_core.dispersion`).

    Attributes:
        graph_builder: the :class:`~gptff_core.neighbours.VerletGraphBuilder` used when
            ``skin > 0`` (its ``n_rebuilds`` counts neighbour searches), else ``None``.
    """

    implemented_properties = ("energy", "free_energy", "forces", "stress")

    def __init__(
        self,
        model: str | os.PathLike | GPTFF = DEFAULT_MODEL,
        device: str | None = None,
        dtype: str | None = None,
        smooth: bool | None = None,
        bond_window: float | None = None,
        three_body_window: float | None = None,
        skin: float = 0.0,
        dispersion: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.model = load_model(
            model,
            device=device,
            dtype=dtype,
            smooth=smooth,
            bond_window=bond_window,
            three_body_window=three_body_window,
        ).requires_grad_(False)  # inference: gradients only with respect to positions and strain
        parameter = next(self.model.parameters())
        self._dtype, self._device = parameter.dtype, parameter.device
        self.graph_builder = VerletGraphBuilder(skin) if skin != 0 else None
        self.parameters.update(calculator_parameters(model, self.model, skin, dispersion))
        self.d3 = None
        if dispersion:
            from gptff_core.dispersion import D3Dispersion

            self.d3 = D3Dispersion("pbe", device=self._device)

    def set(self, **kwargs) -> dict:
        """ASE's ``set``, refusing the recorded settings (``model``, ``dtype``, ...): they are
        fixed when the network is loaded; build another calculator to change them."""
        fixed = sorted(set(kwargs) & set(self.parameters or {}))
        if fixed:
            raise GPTFFInputError(
                f"{', '.join(fixed)} cannot be changed on a GPTFFCalculator once built; "
                "make a new GPTFFCalculator with the settings wanted"
            )
        return super().set(**kwargs)

    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: list[str] | None = None,
        system_changes: list[str] = all_changes,
    ) -> None:
        super().calculate(atoms, properties, system_changes)
        self.results = self.results_for(self.graph_of(self.atoms), self.atoms)

    def graph_of(self, atoms: Atoms) -> Graph:
        """The graph of ``atoms`` in this calculator's dtype and on its device (with ``skin``,
        the neighbour list is reused while no atom moved more than half of it)."""
        if self.graph_builder is None:
            return build_graph([atoms], dtype=self._dtype, device=self._device)
        return self.graph_builder.build(atoms, dtype=self._dtype, device=self._device)

    def results_for(self, graph: Graph, atoms: Atoms) -> dict:
        """ASE results of this network on ``graph`` (of ``atoms``), D3 included when the
        calculator adds it: energy (eV), forces (eV/Å) and, for a cell with a volume, stress
        (Voigt, eV/Å³, ASE sign)."""
        has_volume = bool(graph.volumes[0] > 0)
        result = evaluate(self.model, graph, forces=True, stress=has_volume)
        require_finite(result, graph, [atoms.get_chemical_formula()])
        energy = float(result.energy[0])
        results = {
            "energy": energy,
            "free_energy": energy,
            "forces": result.forces.cpu().numpy().astype(np.float64),
        }
        if result.stress is not None:
            stress = result.stress[0].cpu().numpy().astype(np.float64)
            results["stress"] = full_3x3_to_voigt_6_stress(stress)
        if self.d3 is not None:
            from gptff_core.dispersion import add_results, dispersion_results

            extra = dispersion_results(self.d3, atoms, stress="stress" in results)
            results = add_results(results, extra)
        return results


def calculator_parameters(model, network: GPTFF, skin: float, dispersion: bool = False) -> dict:
    """What a :class:`GPTFFCalculator` records as ``parameters`` (and ``todict()``): the model as
    requested (registry name or checkpoint path; the checkpoint's name for a loaded network),
    ``model_name``, ``checkpoint_sha256`` (of the file, as :func:`~gptff_core.checkpoint.
    load_model` computed it; None for a network never loaded from a file), ``model_version``
    (``"v2"`` with transformer blocks, else ``"v1"``), ``dtype``, ``smooth``, the envelope
    widths (Å), ``skin`` (Å), ``device`` and ``dispersion`` (D3 added or not)."""
    source = getattr(network, "source", None)
    parameter = next(network.parameters())
    if isinstance(model, GPTFF):
        model = source.name if source is not None else "in-memory GPTFF network"
    return dict(
        model=str(model),
        model_name=source.name if source is not None else None,
        checkpoint_sha256=source.sha256 if source is not None else None,
        model_version="v2" if network.config.transformer else "v1",
        dtype=str(parameter.dtype).removeprefix("torch."),
        smooth=bool(network.config.smooth),
        bond_window=float(network.config.bond_window),
        three_body_window=float(network.config.three_body_window),
        skin=float(skin),
        device=str(parameter.device),
        dispersion=bool(dispersion),
    )
