"""ASE calculator for GPTFF.

``GPTFFCalculator`` computes energy, free energy, forces and stress in one autograd pass whatever
property ASE asks for first, so cell filters (``FrechetCellFilter``) and NPT dynamics always see a
stress consistent with the energy. Units: eV, eV/Å, eV/Å³ (ASE sign: positive = tensile).
"""

from __future__ import annotations

import os

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from gptff_core.checkpoint import load_model
from gptff_core.evaluate import evaluate
from gptff_core.graph import build_graph
from gptff_core.model import GPTFF
from gptff_core.pretrained import DEFAULT_MODEL


class GPTFFCalculator(Calculator):
    """GPTFF as an ASE calculator.

    Args:
        model: registry name (``"gptff-v1"``, ``"gptff-v2"``), checkpoint path, or a loaded
            :class:`~gptff_core.model.GPTFF`.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
        dtype: ``"float32"`` (default) or ``"float64"``.
        smooth: multiply messages by C² envelopes so energy and forces are continuous at the
            cutoffs (``None``: the checkpoint's setting, off for the published networks).
        bond_window: Å, envelope width below the 5 Å bond cutoff when smooth.
        three_body_window: Å, envelope width below the 3.5 Å triplet cutoff when smooth.

    Stress is reported only for structures whose cell has a volume; a molecule without a box
    gives energy and forces, and asking for its stress raises ``PropertyNotImplementedError``.
    """

    implemented_properties = ("energy", "free_energy", "forces", "stress")

    def __init__(
        self,
        model: str | os.PathLike | GPTFF = DEFAULT_MODEL,
        device: str = "cpu",
        dtype: str = "float32",
        smooth: bool | None = None,
        bond_window: float | None = None,
        three_body_window: float | None = None,
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
        )
        parameter = next(self.model.parameters())
        self._dtype, self._device = parameter.dtype, parameter.device

    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: list[str] | None = None,
        system_changes: list[str] = all_changes,
    ) -> None:
        super().calculate(atoms, properties, system_changes)
        graph = build_graph([self.atoms], dtype=self._dtype, device=self._device)
        has_volume = bool(graph.volumes[0] > 0)
        result = evaluate(self.model, graph, forces=True, stress=has_volume)
        energy = float(result.energy[0])
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "forces": result.forces.cpu().numpy().astype(np.float64),
        }
        if result.stress is not None:
            stress = result.stress[0].cpu().numpy().astype(np.float64)
            self.results["stress"] = full_3x3_to_voigt_6_stress(stress)
