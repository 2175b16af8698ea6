"""DFT-D3 dispersion with Becke–Johnson damping, D3(BJ), added to GPTFF on request.

GPTFF was trained on PBE labels, which miss van der Waals attraction; ``dispersion=True`` on
:class:`~gptff_core.calculator.GPTFFCalculator` and :func:`~gptff_core.predict.predict` (and
:mod:`gptff_core.torchsim_d3` for TorchSim) adds Grimme's D3(BJ) correction for PBE,

    E = −Σ_{pairs} [ s6·C6/(r⁶ + R⁶) + s8·C8/(r⁸ + R⁸) ],   R = a1·√(C8/C6) + a2,

with coordination-number-dependent C6 (Grimme et al., J. Chem. Phys. 132, 154104 (2010); BJ
damping: J. Comput. Chem. 32, 1456 (2011)). The D3 terms are those of torch-dftd (the optional
extra ``d3``, ``pip install torch-dftd``; the library MACE uses), evaluated here on our own
periodic pair list (every image within the cutoff, each pair once; the C6 of two atoms computed
once for all their images, which makes a 500-atom cell several times cheaper than torch-dftd's own
calculator) with forces and stress by autograd through a strain, several structures in one batch.
Units: eV, eV/Å, eV/Å³ (ASE sign: positive = tensile).

Parameters for PBE (``functional="pbe"``): s6 = 1.0, s8 = 0.7875, a1 = 0.4289, a2 = 4.4407 bohr
= 2.3499 Å. Pairs are summed up to ``cutoff`` = 40 bohr = 21.17 Å and coordination numbers counted
up to ``cn_cutoff`` = 40 bohr = 21.17 Å (as ``mace_mp(dispersion=True)``; the original DFT-D3
program sums pairs to 95 bohr = 50.3 Å: 14× the pairs for 1 meV/atom more in diamond Si). The
energy is cut sharply at the cutoff (no smoothing); the three-body (ATM) term is not included.
Other functionals: any name torch-dftd's BJ table knows (``"pbe0"``, ``"revpbe"``, ``"pbesol"``...).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import vesin
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.stress import full_3x3_to_voigt_6_stress
from ase.units import Bohr

from gptff_core.devices import resolve_device, resolve_dtype
from gptff_core.errors import GPTFFInputError

D3_BOHR = 0.52917726
"""Å per bohr, torch-dftd's (and the DFT-D3 program's) conversion."""

D3_HARTREE = 27.21138505
"""eV per hartree, torch-dftd's (and the DFT-D3 program's) conversion."""

D3_CUTOFF = 40.0 * Bohr
"""Å, pair cutoff of the dispersion sum (40 bohr, as MACE's ``mace_mp(dispersion=True)``)."""

D3_CN_CUTOFF = 40.0 * Bohr
"""Å, cutoff of the coordination numbers that pick the C6 coefficients (40 bohr, DFT-D3's own)."""

MAX_PAIRS_PER_BATCH = 2_000_000
"""Pairs (each once) evaluated together at most: about 1 KB per pair at the peak of a
float64 energy + forces + stress evaluation, so a batch stays near 4 GB."""


class D3NotInstalledError(GPTFFInputError, ImportError):
    """D3 was asked for without torch-dftd installed (an input error: the CLI exits 1)."""


def _import_torch_dftd():
    try:
        from torch_dftd.dftd3_xc_params import get_dftd3_default_params
        from torch_dftd.nn.dftd3_module import DFTD3Module
    except ImportError as error:
        raise D3NotInstalledError(
            "D3 dispersion needs torch-dftd: pip install 'gptff[d3]' (or torch-dftd)"
        ) from error
    return get_dftd3_default_params, DFTD3Module


@dataclass
class DispersionResult:
    """D3 results of a batch of structures.

    Attributes:
        energy: (B,) eV.
        forces: (N, 3) eV/Å, atoms of all structures in order (None if not computed).
        stress: (B, 3, 3) eV/Å³, ASE sign; zero for a structure without a cell volume (None
            if not computed).
        n_atoms: atoms of each structure.
    """

    energy: torch.Tensor
    forces: torch.Tensor | None
    stress: torch.Tensor | None
    n_atoms: list[int]


def find_pairs(
    positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float
) -> tuple[np.ndarray, np.ndarray]:
    """Every pair of one structure closer than ``cutoff`` (Å) once (periodic images
    included; a pair of an atom with its own image once per ±shift): ``(edges (2, E), integer
    image shifts (E, 3))``."""
    pbc = np.asarray(pbc, dtype=bool)
    box = np.asarray(cell, dtype=np.float64) if pbc.any() else np.eye(3)
    if pbc.any() and abs(np.linalg.det(box)) < 1e-9:
        raise GPTFFInputError("D3 dispersion needs three cell vectors for a periodic structure")
    search = vesin.NeighborList(cutoff=cutoff, full_list=False)
    i, j, shifts = search.compute(np.asarray(positions, np.float64), box, pbc.tolist(), "ijS")
    return np.stack([i, j]).astype(np.int64), shifts.astype(np.int64)


class D3Dispersion(torch.nn.Module):
    """D3 dispersion energies, forces and stresses of batches of structures.

    Args:
        functional: exchange–correlation functional whose BJ parameters are used (``"pbe"``).
        damping: ``"bj"`` (Becke–Johnson, default), or torch-dftd's ``"zero"``, ``"bjm"``,
            ``"zerom"``.
        cutoff: Å, pair cutoff (default :data:`D3_CUTOFF`).
        cn_cutoff: Å, coordination-number cutoff (default :data:`D3_CN_CUTOFF`; at most
            ``cutoff``).
        dtype: ``"float64"`` (default) or ``"float32"``: the D3 sum is computed in it whatever
            the network's dtype.
        device: ``"cpu"``, ``"cuda"``, ``"auto"``...
    """

    def __init__(
        self,
        functional: str = "pbe",
        *,
        damping: str = "bj",
        cutoff: float = D3_CUTOFF,
        cn_cutoff: float = D3_CN_CUTOFF,
        dtype: str | torch.dtype = "float64",
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__()
        get_params, module_class = _import_torch_dftd()
        if not cutoff > 0 or not 0 < cn_cutoff <= cutoff:
            raise GPTFFInputError(
                f"D3 cutoffs must satisfy 0 < cn_cutoff ≤ cutoff (Å); got {cn_cutoff}, {cutoff}"
            )
        try:
            self.params = get_params(damping, functional.lower())
        except (AssertionError, KeyError, ValueError, UnboundLocalError) as error:
            raise GPTFFInputError(
                f"no D3 parameters for functional {functional!r} with {damping!r} damping"
            ) from error
        self.functional, self.damping = functional.lower(), damping
        self.cutoff, self.cn_cutoff = float(cutoff), float(cn_cutoff)
        self._dtype, self._device = resolve_dtype(dtype), resolve_device(device)
        self.terms = module_class(
            self.params, cutoff=self.cutoff, cnthr=self.cn_cutoff, dtype=self._dtype,
            bidirectional=False,  # pairs listed once: half the work of a full list
        ).to(self._device)  # fmt: skip

    def settings(self) -> dict:
        """What a document should record: functional, damping, its parameters (a2 in bohr as
        torch-dftd lists it, under ``rs18``), and the cutoffs in Å."""
        return {
            "method": "D3",
            "functional": self.functional,
            "damping": self.damping,
            "parameters": dict(self.params),
            "cutoff": self.cutoff,
            "cn_cutoff": self.cn_cutoff,
        }

    def energy(
        self,
        positions: torch.Tensor,
        cells: torch.Tensor,
        numbers: torch.Tensor,
        system_idx: torch.Tensor,
        edges: torch.Tensor,
        shifts: torch.Tensor,
    ) -> torch.Tensor:
        """(B,) D3 energies (eV), differentiable in ``positions`` (N, 3) Å and ``cells``
        (B, 3, 3) Å, rows = lattice vectors; ``edges`` (2, E) and integer image ``shifts``
        (E, 3) from :func:`find_pairs`, offset to the batch's atom indices."""
        edge_system = system_idx[edges[0]]
        shift_vectors = torch.einsum("ei,eij->ej", shifts.to(cells.dtype), cells[edge_system])
        if self.damping not in ("bj", "bjm"):
            return self.terms.calc_energy_batch(
                numbers, positions, edges, cell=cells, shift_pos=shift_vectors,
                batch=system_idx, batch_edge=edge_system, damping=self.damping,
            ).to(positions.dtype)  # fmt: skip
        vectors = positions[edges[1]] + shift_vectors - positions[edges[0]]
        r = torch.sqrt((vectors**2).sum(dim=1) + 1e-20) / D3_BOHR  # bohr, as torch-dftd
        pair_energy = self._bj_pair_energies(numbers, edges, r)
        energy = pair_energy.new_zeros(cells.shape[0], dtype=torch.float64)
        return energy.index_add(0, edge_system, pair_energy.double()).to(positions.dtype)

    def _bj_pair_energies(self, numbers: torch.Tensor, edges: torch.Tensor, r: torch.Tensor):
        """Hartree, D3(BJ) energy of every listed pair (each once) at distances ``r`` (bohr):
        torch-dftd's terms, with the C6 of an atom pair computed once for all its images."""
        from torch_dftd.functions.dftd3 import _getc6, _ncoord

        terms, (i, j) = self.terms, edges
        cn = _ncoord(numbers, r, i, j, rcov=terms.rcov, cutoff=self.cn_cutoff / D3_BOHR)
        n_atoms = numbers.shape[0]
        key = torch.minimum(i, j) * n_atoms + torch.maximum(i, j)  # C6 is symmetric in i, j
        pairs, which = torch.unique(key, return_inverse=True)
        first, second = pairs // n_atoms, pairs % n_atoms
        c6 = _getc6(numbers[first], numbers[second], cn[first], cn[second], c6ab=terms.c6ab)
        c6 = c6[which]
        c8 = 3.0 * c6 * (terms.r2r4[numbers[i]] * terms.r2r4[numbers[j]]).to(c6.dtype)
        radius = self.params["rs6"] * torch.sqrt(c8 / c6) + self.params["rs18"]  # a1, a2
        r2 = r**2
        e6 = c6 / (r2**3 + radius**6)
        e8 = c8 / (r2**4 + radius**8)
        return -D3_HARTREE * (self.params["s6"] * e6 + self.params["s18"] * e8)

    def forward(
        self, structures: Sequence[Atoms] | Atoms, forces: bool = True, stress: bool = True
    ) -> DispersionResult:
        """D3 energies (eV), forces (eV/Å) and stresses (eV/Å³, ASE sign) of ``structures``
        (ASE Atoms, Å) in one batch; stresses are zero for structures without a volume."""
        if isinstance(structures, Atoms):
            structures = [structures]
        forces, stress = bool(forces), bool(stress)
        batch = self._batch(structures)
        positions, cells = batch["positions"], batch["cells"]
        strain = torch.zeros_like(cells, requires_grad=stress)
        positions.requires_grad_(forces)
        symmetric = 0.5 * (strain + strain.transpose(1, 2))
        deformation = torch.eye(3, dtype=cells.dtype, device=cells.device) + symmetric
        strained_positions = torch.einsum("ni,nij->nj", positions, deformation[batch["system"]])
        energy = self.energy(
            strained_positions, cells @ deformation, batch["numbers"], batch["system"],
            batch["edges"], batch["shifts"],
        )  # fmt: skip
        inputs = [x for x, wanted in ((positions, forces), (strain, stress)) if wanted]
        grads = torch.autograd.grad(energy.sum(), inputs) if inputs else []
        force = -grads[0] if forces else None
        stress_tensor = None
        if stress:
            volumes = torch.linalg.det(cells).abs()
            volumes = torch.where(batch["periodic"], volumes, torch.ones_like(volumes))
            stress_tensor = grads[-1] / volumes[:, None, None]
            stress_tensor = stress_tensor * batch["periodic"][:, None, None]
        return DispersionResult(energy.detach(), force, stress_tensor, batch["n_atoms"])

    def _batch(self, structures: Sequence[Atoms]) -> dict:
        """Tensors of a batch: positions, cells (rows), numbers, system index, pairs (offset
        to the batch's atom numbering) and their image shifts, which systems are periodic."""
        edges, shifts, offset = [], [], 0
        for atoms in structures:
            pair, shift = find_pairs(atoms.positions, atoms.cell.array, atoms.pbc, self.cutoff)
            edges.append(pair + offset)
            shifts.append(shift)
            offset += len(atoms)
        n_atoms = [len(atoms) for atoms in structures]
        as_tensor = lambda x, **kw: torch.as_tensor(x, device=self._device, **kw)  # noqa: E731
        real = {"dtype": self._dtype}
        return {
            "positions": as_tensor(np.concatenate([a.positions for a in structures]), **real),
            "cells": as_tensor(np.stack([a.cell.array for a in structures]), **real),
            "numbers": as_tensor(np.concatenate([a.numbers for a in structures])),
            "system": as_tensor(np.repeat(np.arange(len(structures)), n_atoms)),
            "edges": as_tensor(np.concatenate(edges, axis=1)),
            "shifts": as_tensor(np.concatenate(shifts)),
            "periodic": as_tensor([bool(a.pbc.any()) for a in structures]),
            "n_atoms": n_atoms,
        }


def dispersion_results(d3: D3Dispersion, atoms: Atoms, stress: bool) -> dict:
    """ASE results of D3 alone for ``atoms``: energy, free_energy (eV), forces (eV/Å) and,
    with ``stress``, stress (Voigt, eV/Å³, ASE sign)."""
    result = d3([atoms], forces=True, stress=stress)
    energy = float(result.energy[0])
    results = {
        "energy": energy,
        "free_energy": energy,
        "forces": result.forces.detach().cpu().numpy().astype(np.float64),
    }
    if stress:
        stress_3x3 = result.stress[0].detach().cpu().numpy().astype(np.float64)
        results["stress"] = full_3x3_to_voigt_6_stress(stress_3x3)
    return results


def add_results(results: dict, extra: dict) -> dict:
    """``results`` with the same-named entries of ``extra`` added (energies, forces, stress)."""
    return {key: value + extra[key] if key in extra else value for key, value in results.items()}


class D3Calculator(Calculator):
    """D3 dispersion alone as an ASE calculator (arguments as :class:`D3Dispersion`); stress
    only for a structure whose cell has a volume. Sum it with any calculator through ASE's
    ``SumCalculator``, or pass ``dispersion=True`` to ``GPTFFCalculator``."""

    implemented_properties = ("energy", "free_energy", "forces", "stress")

    def __init__(self, functional: str = "pbe", *, d3_kwargs: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        self.d3 = D3Dispersion(functional, **(d3_kwargs or {}))

    def calculate(self, atoms=None, properties=None, system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        has_volume = bool(self.atoms.pbc.any()) and self.atoms.cell.volume > 0
        self.results = dispersion_results(self.d3, self.atoms, stress=has_volume)


def add_dispersion(
    predictions, atoms_list: Sequence[Atoms], d3: D3Dispersion, max_pairs: int = MAX_PAIRS_PER_BATCH
) -> None:
    """Add D3 energies, forces and stresses to ``predictions`` (a
    :class:`~gptff_core.predict.Predictions` of ``atoms_list``, in place), evaluating
    consecutive structures together up to ``max_pairs`` pairs); returns ``predictions``."""
    group, pairs = [], 0
    for index, atoms in enumerate(atoms_list):
        size = _estimated_pairs(atoms, d3.cutoff)
        if group and pairs + size > max_pairs:
            _add_group(predictions, atoms_list, group, d3)
            group, pairs = [], 0
        group.append(index)
        pairs += size
    if group:
        _add_group(predictions, atoms_list, group, d3)
    return predictions


def _estimated_pairs(atoms: Atoms, cutoff: float) -> float:
    """Pairs (each once) within ``cutoff`` (Å) of a periodic structure from its density, N²/2
    for others."""
    if not atoms.pbc.all() or atoms.cell.volume <= 0:
        return 0.5 * len(atoms) ** 2
    return 0.5 * len(atoms) ** 2 * (4.0 / 3.0) * np.pi * cutoff**3 / atoms.cell.volume


def _add_group(predictions, atoms_list, group: list[int], d3: D3Dispersion) -> None:
    wants_forces, wants_stress = predictions.forces is not None, predictions.stresses is not None
    result = d3([atoms_list[i] for i in group], forces=wants_forces, stress=wants_stress)
    split = torch.split(result.forces, result.n_atoms) if wants_forces else None
    for slot, index in enumerate(group):
        predictions.energies[index] += float(result.energy[slot])
        if split is not None:
            predictions.forces[index] = predictions.forces[index] + split[slot].cpu().numpy()
        if wants_stress and predictions.stresses[index] is not None:
            stress = result.stress[slot].detach().cpu().numpy().astype(np.float64)
            predictions.stresses[index] = predictions.stresses[index] + stress
