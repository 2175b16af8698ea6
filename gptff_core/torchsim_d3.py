"""D3(BJ) dispersion as a TorchSim model, and a sum of TorchSim models (GPTFF + D3).

TorchSim 0.3 has no D3 model of its own; this wraps :class:`gptff_core.dispersion.D3Dispersion`
(torch-dftd, the ``d3`` extra) with TorchSim's model interface. Units: Å, eV, eV/Å, eV/Å³, stress
with ASE's sign (positive = tensile), as :mod:`gptff_core.torchsim`.

Example::

    import torch_sim as ts
    from gptff_core.torchsim import GPTFFTorchSimModel
    from gptff_core.torchsim_d3 import D3TorchSimModel, SumTorchSimModel

    gptff = GPTFFTorchSimModel("gptff-v2", dtype="float64")
    model = SumTorchSimModel(gptff, D3TorchSimModel(dtype="float64"))
    relaxed = ts.optimize(structures, model, optimizer=ts.frechet_cell_fire)
"""

from __future__ import annotations

import torch
import torch_sim as ts
from torch_sim.models.interface import ModelInterface
from torch_sim.typing import StateDict

from gptff_core.devices import resolve_device, resolve_dtype
from gptff_core.dispersion import D3_CN_CUTOFF, D3_CUTOFF, D3Dispersion
from gptff_core.errors import GPTFFInputError


def _as_state(state: ts.SimState | StateDict) -> ts.SimState:
    if isinstance(state, dict):
        masses = torch.ones_like(state["positions"][:, 0])
        return ts.SimState(**state, masses=masses)
    return state


class D3TorchSimModel(ModelInterface):
    """D3 dispersion energies, forces and stresses of every system of a TorchSim state.

    Args:
        functional: functional whose D3(BJ) parameters are used (``"pbe"``).
        device: ``"cpu"``, ``"cuda"``, ``"auto"`` or a torch device.
        dtype: ``"float64"`` (default) or ``"float32"``: the D3 sum and the outputs.
        compute_forces: return ``forces``.
        compute_stress: return ``stress`` (zero for a system without a periodic cell).
        cutoff: Å, pair cutoff; cn_cutoff: Å, coordination-number cutoff (see
            :mod:`gptff_core.dispersion`).
    """

    def __init__(
        self,
        functional: str = "pbe",
        *,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "float64",
        compute_forces: bool = True,
        compute_stress: bool = True,
        cutoff: float = D3_CUTOFF,
        cn_cutoff: float = D3_CN_CUTOFF,
    ) -> None:
        super().__init__()
        self._device, self._dtype = resolve_device(device), resolve_dtype(dtype)
        self._compute_forces, self._compute_stress = compute_forces, compute_stress
        self.d3 = D3Dispersion(
            functional, cutoff=cutoff, cn_cutoff=cn_cutoff, dtype=self._dtype, device=self._device
        )

    def forward(self, state: ts.SimState | StateDict, **_) -> dict[str, torch.Tensor]:
        """``energy`` (B,) eV, ``forces`` (N, 3) eV/Å, ``stress`` (B, 3, 3) eV/Å³."""
        atoms = ts.io.state_to_atoms(_as_state(state))
        result = self.d3(atoms, forces=self._compute_forces, stress=self._compute_stress)
        output = {"energy": result.energy}
        if self._compute_forces:
            output["forces"] = result.forces.detach()
        if self._compute_stress:
            output["stress"] = result.stress.detach()
        return output


class SumTorchSimModel(ModelInterface):
    """The sum of TorchSim models of one device and dtype (e.g. GPTFF + D3): energies, forces
    and stresses added; forces and stress are returned when every model returns them."""

    def __init__(self, *models: ModelInterface) -> None:
        super().__init__()
        if not models:
            raise GPTFFInputError("SumTorchSimModel needs at least one model")
        first = models[0]
        for model in models[1:]:
            if model.device != first.device or model.dtype != first.dtype:
                raise GPTFFInputError(
                    "the models of a SumTorchSimModel must share device and dtype; got "
                    f"{first.device}/{first.dtype} and {model.device}/{model.dtype}"
                )
        self.models = torch.nn.ModuleList(models)
        self._device, self._dtype = first.device, first.dtype
        self._compute_forces = all(m.compute_forces for m in models)
        self._compute_stress = all(m.compute_stress for m in models)

    def forward(self, state: ts.SimState | StateDict, **kwargs) -> dict[str, torch.Tensor]:
        """The summed ``energy`` (B,) eV, ``forces`` (N, 3) eV/Å, ``stress`` (B, 3, 3) eV/Å³."""
        state = _as_state(state)
        outputs = [model(state, **kwargs) for model in self.models]
        keys = ["energy"] + [
            key
            for key, wanted in (("forces", self._compute_forces), ("stress", self._compute_stress))
            if wanted
        ]
        return {key: sum(output[key] for output in outputs) for key in keys}
