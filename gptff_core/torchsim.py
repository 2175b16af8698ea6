"""GPTFF as a TorchSim model, for batched relaxations and molecular dynamics.

TorchSim (``pip install "gptff[torchsim]"``, import name ``torch_sim``) is an optional extra:
this module imports it, :mod:`gptff_core` does not import this module.

Conventions (checked against torch-sim-atomistic 0.3.0):

* ``SimState.cell`` holds the lattice vectors as **columns**, (B, 3, 3); GPTFF's graphs hold them
  as rows, so the model reads ``state.row_vector_cell``.
* Stress has ASE's sign in both (positive = tensile, ``σ = (1/V) ∂E/∂ε``): TorchSim's cell
  optimizers and barostats form the cell force ``−V·(σ + P_ext)``, and its own models (MACE,
  Lennard-Jones) return that sign. GPTFF's stress is therefore returned unchanged.
* Units are TorchSim's "metal" units: Å, eV, eV/Å, eV/Å³.

Example::

    import torch_sim as ts
    from gptff_core.torchsim import GPTFFTorchSimModel

    model = GPTFFTorchSimModel("gptff-v2", dtype="float64")
    relaxed = ts.optimize(structures, model, optimizer=ts.frechet_cell_fire)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace

import torch
import torch_sim as ts
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.stress import full_3x3_to_voigt_6_stress
from torch_sim.models.interface import ModelInterface
from torch_sim.typing import StateDict

from gptff_core.checkpoint import load_model
from gptff_core.devices import builds_on_device
from gptff_core.errors import GPTFFInputError
from gptff_core.evaluate import evaluate, require_finite
from gptff_core.graph import Graph, build_graph
from gptff_core.model import GPTFF
from gptff_core.pretrained import DEFAULT_MODEL
from gptff_core.relax import RelaxResult, check_options, has_volume
from gptff_core.state_graph import PeriodicGraphBuilder
from gptff_core.validation import as_atoms


class GPTFFTorchSimModel(ModelInterface):
    """GPTFF energies, forces and stresses of every system of a TorchSim state at once.

    Args:
        model: registry name (``"gptff-v1"``, ``"gptff-v2"``), checkpoint path, or a loaded
            :class:`~gptff_core.model.GPTFF` (copied, then moved and cast).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"auto"`` or a torch device; ``None``:
            the CPU, or the device of a loaded network passed as ``model``.
        dtype: ``"float32"`` or ``"float64"`` (or the torch dtype); states are evaluated in it.
            ``None``: float32, or the dtype of a loaded network passed as ``model``.
        compute_forces: return ``forces`` (TorchSim's optimizers and integrators need them).
        compute_stress: return ``stress`` (cell filters and barostats need it).
        smooth: multiply messages by C² envelopes at the cutoffs, which MD and relaxations
            benefit from (``None``: the checkpoint's setting, off for the published networks).

    On the CPU each system's graph is built in numpy through ASE Atoms; on any other device a
    periodic state's graph is built there from its tensors
    (:class:`~gptff_core.state_graph.PeriodicGraphBuilder`, no host copy of the positions), and a
    non-periodic one through Atoms with the torch builder. The energy is evaluated at the state's
    positions (moved into the cell by lattice vectors) and cell on the model's device.
    """

    def __init__(
        self,
        model: str | os.PathLike | GPTFF = DEFAULT_MODEL,
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        compute_forces: bool = True,
        compute_stress: bool = True,
        smooth: bool | None = None,
    ) -> None:
        super().__init__()
        self.model = load_model(model, device=device, dtype=dtype, smooth=smooth)
        self.model.requires_grad_(False)  # inference: gradients only for positions and strain
        parameter = next(self.model.parameters())
        self._device = parameter.device
        self._dtype = parameter.dtype
        self._compute_forces = compute_forces
        self._compute_stress = compute_stress
        self._periodic = PeriodicGraphBuilder()

    def forward(self, state: ts.SimState | StateDict, **_) -> dict[str, torch.Tensor]:
        """Evaluate every system of ``state`` in one batched pass.

        Args:
            state: a :class:`torch_sim.SimState`, or a dict of its fields (``positions``,
                ``cell`` with column vectors, ``pbc``, ``atomic_numbers``, ``system_idx``).

        Returns:
            ``energy`` (B,) eV; ``forces`` (N, 3) eV/Å if ``compute_forces``; ``stress``
            (B, 3, 3) eV/Å³, positive = tensile, if ``compute_stress`` (zero for a system whose
            cell has no volume). Tensors are detached, in the model's dtype and on its device.

        Raises:
            StructureError: a system GPTFF cannot evaluate (atoms too close, unknown element...).
        """
        if isinstance(state, dict):
            masses = torch.ones_like(state["positions"][:, 0])
            state = ts.SimState(**state, masses=masses)
        graph = self._graph(state)
        result = evaluate(
            self.model, graph, forces=self._compute_forces, stress=self._compute_stress
        )
        require_finite(result, graph, [f"system {i}" for i in range(state.n_systems)])
        output = {"energy": result.energy}
        if self._compute_forces:
            output["forces"] = result.forces
        if self._compute_stress:
            output["stress"] = result.stress
        return output

    def _graph(self, state: ts.SimState) -> Graph:
        """The state's graph on the model's device: built there from the state's tensors when
        graphs are built on the device and every direction is periodic, else through Atoms."""
        labels = [f"system {i}" for i in range(state.n_systems)]
        if builds_on_device(self._device) and state.pbc:
            return self._periodic.build(
                state.positions.to(self._device),
                state.row_vector_cell.to(self._device),
                state.atomic_numbers.to(self._device),
                state.n_atoms_per_system.tolist(),
                dtype=self._dtype,
                labels=labels,
            )
        atoms = ts.io.state_to_atoms(state)
        graph = build_graph(atoms, dtype=self._dtype, device=self._device, labels=labels)
        # the graph's positions are the state's moved into the cell (see home_positions)
        return replace(
            graph, cells=state.row_vector_cell.detach().to(device=self._device, dtype=self._dtype)
        )


def relax_batch(
    structures: Sequence,
    model: GPTFFTorchSimModel | str | os.PathLike | GPTFF = DEFAULT_MODEL,
    *,
    fmax: float = 0.05,
    steps: int = 500,
    relax_cell: bool = True,
) -> list[RelaxResult]:
    """Relax many structures at once with TorchSim's FIRE, every step one batched evaluation.

    With ``relax_cell`` the cell relaxes too (``frechet_cell_fire``, the batched counterpart of
    ASE's FrechetCellFilter: its cell forces are the virial divided by the number of atoms, so
    ``fmax`` means what it means in :func:`gptff_core.relax.relax`). Each structure leaves the
    batch at the first step where its largest atomic force (and cell force) is below ``fmax``
    (eV/Å), so its ``n_steps`` and results are its own, and the batch shrinks as it converges.

    Args:
        structures: ASE Atoms or pymatgen Structures (positions and cell in Å; not modified).
        model: the TorchSim model (its device and dtype are used; any TorchSim model with
            forces and stress, e.g. GPTFF + D3 as a
            :class:`~gptff_core.torchsim_d3.SumTorchSimModel`), or what
            :class:`GPTFFTorchSimModel` takes (a registry name, a checkpoint path, a network),
            evaluated in float32 on the CPU then.
        fmax: eV/Å, convergence threshold.
        steps: maximum FIRE steps per structure (0: evaluate only).
        relax_cell: also relax the cells (3D periodic structures).

    Returns:
        One :class:`~gptff_core.relax.RelaxResult` per structure, in order.

    Raises:
        GPTFFInputError: bad options, or a structure GPTFF cannot evaluate at some step (atoms
            closer than 0.5 Å...): the whole batch stops; relax such a batch one by one to find
            the culprit.
    """
    model, atoms_list = _checked_batch(structures, model, fmax, steps, relax_cell)
    if not atoms_list:
        return []
    optimizer = ts.frechet_cell_fire if relax_cell else ts.optimizers.fire
    init_fn, update_fn = optimizer(model)
    state = init_fn(ts.initialize_state(atoms_list, model.device, model.dtype))
    return _run_fire(state, update_fn, model, fmax, steps, relax_cell)


def _checked_batch(
    structures: Sequence,
    model: GPTFFTorchSimModel | str | os.PathLike | GPTFF,
    fmax: float,
    steps: int,
    relax_cell: bool,
) -> tuple[GPTFFTorchSimModel, list[Atoms]]:
    """The options of :func:`relax_batch` checked (``fmax`` eV/Å), ``model`` as a TorchSim model
    and ``structures`` as ASE Atoms.

    Raises:
        GPTFFInputError: bad options, or ``relax_cell`` with a structure without a volume.
    """
    check_options(fmax, steps, "FIRE")
    if not isinstance(model, ModelInterface):  # a GPTFFTorchSimModel, or GPTFF + D3...
        model = GPTFFTorchSimModel(model)
    atoms_list = [as_atoms(s) for s in structures]
    if atoms_list and relax_cell and not all(has_volume(a) for a in atoms_list):
        raise GPTFFInputError("relax_cell needs 3D periodic structures with a volume")
    return model, atoms_list


def _run_fire(
    state, update_fn, model: GPTFFTorchSimModel, fmax: float, steps: int, relax_cell: bool
) -> list[RelaxResult]:
    """FIRE steps from the initialised ``state`` until every system's largest force (and cell
    force) is below ``fmax`` (eV/Å) or ``steps`` were taken; each system leaves the batch when
    it finishes. One :class:`RelaxResult` per system, in order."""
    initial_energy = state.energy.tolist()
    active = list(range(len(initial_energy)))
    n_steps = [0] * len(active)
    results: list[RelaxResult | None] = [None] * len(active)
    for step in range(steps + 1):
        converged = (_largest_forces(state, relax_cell) < fmax).tolist()  # one sync per step
        finished = [done or step == steps for done in converged]
        for local in (k for k, done in enumerate(finished) if done):
            index = active[local]
            results[index] = _result(state[local], model, initial_energy[index], n_steps[index],
                                     converged[local], relax_cell)  # fmt: skip
        remaining = [k for k, done in enumerate(finished) if not done]
        if not remaining:
            break
        if len(remaining) < len(active):
            state = state[remaining]
            active = [active[i] for i in remaining]
        state = update_fn(state)
        for index in active:
            n_steps[index] += 1
    return results


def _largest_forces(state, with_cell: bool) -> torch.Tensor:
    """Per system: the largest atomic force norm, and cell force norm with the cell (eV/Å)."""
    norms = state.forces.norm(dim=-1)
    largest = torch.zeros(state.n_systems, dtype=norms.dtype, device=norms.device)
    largest = largest.scatter_reduce(0, state.system_idx, norms, reduce="amax")
    if with_cell:
        largest = torch.maximum(largest, state.cell_forces.norm(dim=-1).amax(dim=-1))
    return largest


def _result(
    state, model, initial_energy: float, n_steps: int, converged: bool, cell: bool
) -> RelaxResult:
    """The RelaxResult of a one-system state (its stress evaluated if the optimizer kept none)."""
    atoms = ts.io.state_to_atoms(state)[0]
    energy = float(state.energy[0])
    forces = state.forces.detach().cpu().double().numpy()
    stress = None
    if has_volume(atoms):
        stress_tensor = getattr(state, "stress", None)
        if stress_tensor is None:
            stress_tensor = model(state)["stress"]
        stress = stress_tensor[0].detach().cpu().double().numpy()
    atoms.calc = SinglePointCalculator(
        atoms,
        energy=energy,
        forces=forces,
        stress=None if stress is None else full_3x3_to_voigt_6_stress(stress),
    )
    return RelaxResult(atoms, initial_energy, energy, forces, stress, n_steps, converged, cell)
