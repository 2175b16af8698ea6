"""Local crystal structure of every atom by adaptive common-neighbour analysis (a-CNA).

a-CNA (Stukowski, Modelling Simul. Mater. Sci. Eng. 20 (2012) 045021) needs no fixed cutoff, so
strained or hot crystals are still recognised:

* fcc/hcp test — the 12 nearest neighbours of an atom, local cutoff
  ``r_cut = (1 + √2)/2 · mean(d₁…d₁₂)`` (Å) for the bonds between them; for each neighbour the
  signature (n common neighbours, n bonds among them, longest chain of those bonds):
  12 × (421) → fcc, 6 × (421) + 6 × (422) → hcp.
* bcc test — the 14 nearest, ``r_cut = (1 + √2)/2 · [(2/√3)·mean(d₁…d₈) + mean(d₉…d₁₄)]/2``:
  8 × (666) + 6 × (444) → bcc.
* anything else → ``"other"``.

Neighbours are vectors from the central atom (periodic images included), so cells smaller than
twice the neighbour distance work. The neighbour list comes from ``vesin``; the analysis is
vectorised over atoms with numpy (1,000 atoms: a few tens of ms).
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from pymatgen.core import Structure
from pymatgen.io.ase import AseAtomsAdaptor
from vesin import NeighborList

from gptff_core.errors import GPTFFInputError

LABELS = ("fcc", "hcp", "bcc", "other")
_FACTOR = (1 + np.sqrt(2)) / 2


def _nearest(atoms: Atoms, count: int) -> np.ndarray:
    """Vectors (Å) from each atom to its ``count`` nearest neighbours, nearest first:
    shape (atoms, count, 3). The search radius grows until every atom has ``count``."""
    if not all(atoms.pbc):
        raise GPTFFInputError("a-CNA needs a periodic cell (pbc along a, b and c)")
    n_atoms = len(atoms)
    volume = abs(atoms.cell.volume)
    # radius of a sphere holding ~1.5 × count atoms at the mean density (Å)
    cutoff = (3 * 1.5 * count * volume / (4 * np.pi * n_atoms)) ** (1 / 3)
    positions, box = atoms.get_positions(), atoms.cell.array
    for _ in range(10):
        i, d, vectors = NeighborList(cutoff=cutoff, full_list=True).compute(
            positions, box, periodic=True, quantities="idD"
        )
        counts = np.bincount(i, minlength=n_atoms)
        if counts.min() >= count:
            order = np.lexsort((d, i))
            starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
            take = starts[:, None] + np.arange(count)[None, :]
            return vectors[order][take]
        cutoff *= 1.3
    raise GPTFFInputError(f"could not find {count} neighbours per atom; is the cell sane?")


def _signatures(vectors: np.ndarray, cutoff: np.ndarray) -> np.ndarray:
    """CNA signatures (n common, n bonds, longest chain) per atom and neighbour:
    shape (atoms, M, 3) for neighbour vectors (atoms, M, 3) Å and local cutoffs (atoms,) Å."""
    m = vectors.shape[1]
    distance = np.linalg.norm(vectors[:, :, None, :] - vectors[:, None, :, :], axis=-1)
    bonded = (distance < cutoff[:, None, None]) & ~np.eye(m, dtype=bool)  # (N, M, M)
    common = bonded  # common[n, k, l]: l is a common neighbour of the centre and neighbour k
    # bonds among the common neighbours of pair (centre, k): (N, M, M, M)
    sub = bonded[:, None, :, :] & common[:, :, :, None] & common[:, :, None, :]
    n_common = common.sum(-1)
    n_bonds = sub.sum((-1, -2)) // 2
    # connected clusters of the bond graph: transitive closure by repeated squaring
    reach = (sub | np.eye(m, dtype=bool)).astype(np.float32)
    for _ in range(int(np.ceil(np.log2(m)))):
        reach = np.minimum(reach @ reach, 1.0)
    bonds_in_cluster = (reach @ sub.astype(np.float32)).sum(-1) / 2  # per node of each cluster
    chain = bonds_in_cluster.max(-1).round().astype(int)
    return np.stack([n_common, n_bonds, chain], axis=-1)


def _count(signatures: np.ndarray, signature: tuple[int, int, int]) -> np.ndarray:
    return np.all(signatures == np.array(signature), axis=-1).sum(-1)


def classify(atoms: Atoms | Structure) -> np.ndarray:
    """Label each atom ``"fcc"``, ``"hcp"``, ``"bcc"`` or ``"other"`` by a-CNA.

    Args:
        atoms: a periodic ASE ``Atoms`` or pymatgen ``Structure`` (positions in Å).

    Returns:
        array of labels, one per atom, in the order of ``atoms``.
    """
    if isinstance(atoms, Structure):
        atoms = AseAtomsAdaptor.get_atoms(atoms)
    if len(atoms) == 0:
        raise GPTFFInputError("classify needs at least one atom")
    labels = np.full(len(atoms), "other", dtype=object)
    vectors = _nearest(atoms, 14)
    distances = np.linalg.norm(vectors, axis=-1)

    twelve = _signatures(vectors[:, :12], _FACTOR * distances[:, :12].mean(1))
    n421, n422 = _count(twelve, (4, 2, 1)), _count(twelve, (4, 2, 2))
    labels[n421 == 12] = "fcc"
    labels[(n421 == 6) & (n422 == 6)] = "hcp"

    bcc_cutoff = (
        _FACTOR * (2 / np.sqrt(3) * distances[:, :8].mean(1) + distances[:, 8:14].mean(1)) / 2
    )
    fourteen = _signatures(vectors, bcc_cutoff)
    is_bcc = (_count(fourteen, (6, 6, 6)) == 8) & (_count(fourteen, (4, 4, 4)) == 6)
    labels[is_bcc & (labels == "other")] = "bcc"
    return labels.astype(str)


def fractions(labels: np.ndarray) -> dict[str, float]:
    """Fraction of atoms per label: keys ``fcc``, ``hcp``, ``bcc``, ``other`` (sum 1)."""
    labels = np.asarray(labels)
    if labels.size == 0:
        raise GPTFFInputError("fractions of an empty label array are undefined")
    return {label: float(np.mean(labels == label)) for label in LABELS}
