"""Bad input gets one clear error family (``GPTFFInputError``, a ``ValueError``; ``StructureError``
for structures, ``CheckpointError`` for files), never a NaN, a hang or a crash, through every entry
point: ``build_graph``, ``predict`` and the ASE calculator.
"""

import re

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, fcc111, molecule
from pymatgen.core import Lattice, Structure

from gptff_core import GPTFFCalculator, load_model, predict, save_checkpoint
from gptff_core.devices import resolve_device, resolve_dtype
from gptff_core.errors import CheckpointError, GPTFFInputError, StructureError
from gptff_core.evaluate import evaluate
from gptff_core.graph import build_graph
from gptff_core.pretrained import resolve_checkpoint
from gptff_core.validation import MIN_INTERATOMIC_DISTANCE, as_atoms


def test_error_family():
    assert issubclass(StructureError, GPTFFInputError)
    assert issubclass(CheckpointError, GPTFFInputError)
    assert issubclass(GPTFFInputError, ValueError)


# ------------------------------------------------------------------------------ structures
def cu_cell(**changes) -> Atoms:
    atoms = Atoms("Cu2", positions=[[0, 0, 0], [1.8, 1.8, 0]], cell=np.eye(3) * 3.6, pbc=True)
    for name, value in changes.items():
        setattr(atoms, name, value)
    return atoms


def with_position(value: float) -> Atoms:
    atoms = cu_cell()
    atoms.positions[1, 2] = value
    return atoms


BAD_STRUCTURES = {
    "Z=0": (lambda: cu_cell(numbers=[0, 29]), r"atomic number\(s\) \[0\]"),
    "Z=95": (lambda: cu_cell(numbers=[29, 95]), r"atomic number\(s\) \[95\]"),
    "Z=118": (lambda: cu_cell(numbers=[118, 118]), r"atomic number\(s\) \[118\]"),
    "NaN position": (lambda: with_position(np.nan), "positions contain NaN or infinity"),
    "inf position": (lambda: with_position(np.inf), "positions contain NaN or infinity"),
    "NaN cell": (lambda: cu_cell(cell=np.full((3, 3), np.nan)), "cell contains NaN"),
    "close pair": (lambda: close_pair(), "0.300 Å apart"),
    "own image": (lambda: Atoms("Cu", cell=np.eye(3) * 0.4, pbc=True), "own periodic image"),
    "tiny lattice vector": (
        lambda: Atoms("Cu", cell=[4.0, 4.0, 1e-7], pbc=True),
        "own periodic image",
    ),
    "short vector in a skewed basis": (  # b − 2a = (0, 0, 1e-6 Å): all three vectors are long
        lambda: Atoms("Cu", cell=[[4.2, 0.1, 0], [8.4, 0.2, 1e-6], [0, 1, 4]], pbc=True),
        "own periodic image",
    ),
    "zero periodic vector": (
        lambda: Atoms("Cu", cell=[[4, 0, 0], [0, 4, 0], [0, 0, 0]], pbc=True),
        "direction\\(s\\) c have a zero cell vector",
    ),
    "degenerate cell": (
        lambda: Atoms("Cu", cell=[[4, 0, 0], [8, 0.0, 0], [0, 0, 4]], pbc=True),
        "linearly dependent",
    ),
    "empty": (lambda: Atoms(), "has no atoms"),
    "lopsided box": (
        lambda: Atoms("Cu", cell=[4000.0, 4000.0, 10.1], pbc=True),
        "too lopsided for the neighbour search",
    ),
}


def close_pair() -> Atoms:
    return Atoms("CuO", positions=[[0, 0, 0], [0.3, 0, 0]])


@pytest.mark.parametrize("name", list(BAD_STRUCTURES))
def test_bad_structure_through_build_graph(name):
    factory, message = BAD_STRUCTURES[name]
    with pytest.raises(StructureError, match=message):
        build_graph([factory()])


@pytest.mark.parametrize("name", list(BAD_STRUCTURES))
def test_bad_structure_through_calculator(models, name):
    factory, message = BAD_STRUCTURES[name]
    atoms = factory()
    atoms.calc = GPTFFCalculator(models("gptff-v1", "float64"), dtype="float64")
    with pytest.raises(StructureError, match=message):
        atoms.get_potential_energy()


@pytest.mark.parametrize("name", list(BAD_STRUCTURES))
def test_bad_structure_through_predict_names_it(models, name):
    factory, message = BAD_STRUCTURES[name]
    good = bulk("Al")
    with pytest.raises(StructureError, match=message) as error:
        predict([good, factory(), good], models("gptff-v1", "float64"), dtype="float64")
    assert re.match(r"structure 1\b", str(error.value))  # names the one at fault


def test_minimum_distance_is_the_boundary(models):
    limit = MIN_INTERATOMIC_DISTANCE
    allowed = Atoms("H2", positions=[[0, 0, 0], [limit, 0, 0]])
    result = evaluate(models("gptff-v2", "float64"), build_graph([allowed], dtype=torch.float64))
    assert torch.isfinite(result.energy).all() and torch.isfinite(result.forces).all()
    refused = Atoms("H2", positions=[[0, 0, 0], [limit * (1 - 1e-6), 0, 0]])
    with pytest.raises(StructureError, match="overlapping atoms"):
        build_graph([refused])


def test_far_away_atoms_neither_crash_nor_hang(models):
    """vesin kills the process (SIGFPE) or takes minutes for atoms ~1e5–1e6 Å apart along a
    non-periodic direction; the graph narrows such empty gaps first (bonds are unchanged)."""
    model = models("gptff-v1", "float64")
    water = molecule("H2O")
    flung = water + Atoms("O", positions=[[6e5, 0, 0]])  # an atom that left an exploded run
    plane = Atoms("Cu3", positions=[[0, 0, 0], [1700, 0, 0], [0, 1700, 0]])
    surface = fcc111("Pt", size=(2, 2, 2), vacuum=5.0)
    sputtered = surface + Atoms("Pt", positions=[[0, 0, 1e5]])
    graphs = {a.get_chemical_formula(): build_graph([a]) for a in (flung, plane, sputtered)}
    assert graphs[flung.get_chemical_formula()].n_bonds == build_graph([water]).n_bonds
    assert graphs["Cu3"].n_bonds == 0
    alone = build_graph([sputtered[-1:]]).n_bonds  # the adatom with its in-plane images
    assert (
        graphs[sputtered.get_chemical_formula()].n_bonds == build_graph([surface]).n_bonds + alone
    )
    result = evaluate(model, build_graph([flung], dtype=torch.float64))
    assert torch.isfinite(result.energy).all()
    assert result.forces[-1].abs().max() == 0.0  # nothing within 5 Å of the far atom


# ------------------------------------------------------------------- pymatgen and types
def test_pymatgen_dummy_species_and_disorder(models):
    lattice = Lattice.cubic(3.6)
    dummy = Structure(lattice, ["X"], [[0, 0, 0]])
    disordered = Structure(lattice, [{"Cu": 0.5, "Au": 0.5}], [[0, 0, 0]])
    model = models("gptff-v1", "float64")
    for structure, message in [(dummy, "dummy species"), (disordered, "partial occupancy")]:
        with pytest.raises(StructureError, match=message):
            as_atoms(structure)
        with pytest.raises(StructureError, match=message):
            build_graph([structure])
        with pytest.raises(StructureError, match=message):
            predict([structure], model, dtype="float64")


def test_ordered_pymatgen_structure_is_accepted(models):
    structure = Structure(
        Lattice.cubic(3.6), ["Cu"] * 4, bulk("Cu", cubic=True).get_scaled_positions()
    )
    same = bulk("Cu", a=3.6, cubic=True)
    expected = predict([same], models("gptff-v1", "float64"), dtype="float64")
    assert build_graph([structure]).n_bonds == build_graph([same]).n_bonds
    got = predict([structure], models("gptff-v1", "float64"), dtype="float64")
    assert abs(got.energies[0] - expected.energies[0]) < 1e-10


def test_predict_accepts_a_single_pymatgen_structure(models):
    structure = Structure(Lattice.cubic(3.6), ["Cu"], [[0, 0, 0]])
    result = predict(structure, models("gptff-v1", "float64"), dtype="float64")
    assert len(result.energies) == 1


@pytest.mark.parametrize("bad", [42, "POSCAR", {"numbers": [29]}, None])
def test_wrong_types(models, bad):
    with pytest.raises(StructureError, match=r"expected ase\.Atoms or a pymatgen"):
        build_graph([bad])
    with pytest.raises(GPTFFInputError):
        predict([bad], models("gptff-v1", "float64"), dtype="float64")


def test_build_graph_wants_a_non_empty_list():
    with pytest.raises(GPTFFInputError, match="list of structures"):
        build_graph([])
    with pytest.raises(GPTFFInputError, match="list of structures"):
        build_graph(bulk("Cu"))  # a bare Atoms, not [atoms]


def test_predict_refuses_an_empty_list(models):
    with pytest.raises(GPTFFInputError):
        predict([], models("gptff-v1", "float64"), dtype="float64")


def test_predict_names_the_bad_structure_across_batches(models):
    good, bad = bulk("Cu"), close_pair()
    with pytest.raises(StructureError, match=r"^structure 2: "):
        predict(
            [good, good, bad], models("gptff-v1", "float64"), dtype="float64", max_atoms_per_batch=1
        )


# -------------------------------------------------------------------------- dtype, device
@pytest.mark.parametrize("dtype", ["float16", "double", "bfloat16", torch.float16, None, 64])
def test_bad_dtype(dtype):
    with pytest.raises(GPTFFInputError, match="dtype must be 'float32' or 'float64'"):
        resolve_dtype(dtype)


@pytest.mark.parametrize("device", ["tpu", "gpu", "cuda:x", "", None])
def test_bad_device(device):
    with pytest.raises(GPTFFInputError, match="unknown device"):
        resolve_device(device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_cuda():
    with pytest.raises(GPTFFInputError, match="CUDA is not available"):
        resolve_device("cuda")


def test_bad_dtype_and_device_through_entry_points():
    with pytest.raises(GPTFFInputError, match="dtype"):
        GPTFFCalculator("gptff-v1", dtype="half")
    with pytest.raises(GPTFFInputError, match="unknown device"):
        GPTFFCalculator("gptff-v1", device="tpu")
    with pytest.raises(GPTFFInputError, match="unknown device"):
        predict([bulk("Cu")], "gptff-v1", device="gpu")
    with pytest.raises(GPTFFInputError, match="dtype"):
        load_model("gptff-v1", dtype="float16")


# ------------------------------------------------------------------------------ checkpoints
@pytest.fixture(scope="module")
def published_v2() -> dict:
    path = resolve_checkpoint("gptff-v2", download=False)
    return torch.load(path, map_location="cpu", weights_only=True)


def write(path, state_dict, cfg) -> str:
    torch.save({"state_dict": state_dict, "cfg": cfg}, path)
    return str(path)


def edited(published: dict, remove=(), reshape=(), add=()) -> dict:
    state = dict(published["state_dict"])
    for key in remove:
        del state[key]
    for key in reshape:
        state[key] = state[key][..., :-1].clone()
    for key in add:
        state[key] = torch.zeros(3)
    return state


@pytest.mark.parametrize(
    "change,message",
    [
        ({"remove": ["three.1.W_2.bias"]}, r"missing keys \['three.1.W_2.bias'\]"),
        ({"add": ["extra.weight"]}, r"unexpected keys \['extra.weight'\]"),
        ({"reshape": ["three.0.W_fea.weight"]}, r"shape \(64, 319\) in the file"),
    ],
    ids=["removed", "extra", "reshaped"],
)
def test_mismatched_published_checkpoint(tmp_path, published_v2, change, message):
    path = write(tmp_path / "bad.pth", edited(published_v2, **change), published_v2["cfg"])
    with pytest.raises(CheckpointError, match=message):
        load_model(path)
    with pytest.raises(CheckpointError, match=message):
        GPTFFCalculator(path)
    with pytest.raises(CheckpointError, match=message):
        predict([bulk("Cu")], path)


def test_reshaped_tensor_is_named_by_its_key_in_the_file(tmp_path, published_v2):
    state = edited(published_v2, reshape=["three.0.W_fea.weight"])
    with pytest.raises(CheckpointError, match=re.escape("three.0.W_fea.weight")):
        load_model(write(tmp_path / "bad.pth", state, published_v2["cfg"]))


def test_reshaped_unused_tensor_is_refused(tmp_path, published_v2):
    state = edited(published_v2, reshape=["convs.0.fc_core.weight"])
    with pytest.raises(CheckpointError, match="fc_core"):
        load_model(write(tmp_path / "bad.pth", state, published_v2["cfg"]))


@pytest.mark.parametrize(
    "cfg_change,message",
    [
        ({"transformer_activate": False}, r"transformer=False.*unexpected keys \['norms1"),
        ({"n_layers": 2}, r"n_layers=2.*unexpected keys \['convs.2"),
        ({"node_feature_len": 32}, "shape"),
        ({"n_layers": None}, "not a published GPTFF config"),
    ],
)
def test_published_checkpoint_with_a_wrong_cfg(tmp_path, published_v2, cfg_change, message):
    cfg = {**published_v2["cfg"], **cfg_change}
    if cfg_change.get("n_layers", 0) is None:
        del cfg["n_layers"]
    path = write(tmp_path / "bad.pth", published_v2["state_dict"], cfg)
    with pytest.raises(CheckpointError, match=message):
        load_model(path)


def test_corrupted_files(tmp_path):
    source = resolve_checkpoint("gptff-v1", download=False).read_bytes()
    files = {
        "random.pth": np.random.default_rng(0).bytes(4096),
        "truncated.pth": source[: len(source) // 2],
        "empty.pth": b"",
    }
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(CheckpointError, match="corrupted or not a torch checkpoint"):
            load_model(tmp_path / name)
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="holds a list, not a dict"):
        load_model(tmp_path / "list.pth")
    torch.save({"weights": {}}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="neither a published GPTFF checkpoint"):
        GPTFFCalculator(str(tmp_path / "other.pth"))
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "missing.pth")


def test_save_then_load_gives_identical_results(tmp_path, models):
    original = models("gptff-v2", "float64")
    path = save_checkpoint(original, tmp_path / "copy.pth", metadata={"note": "round trip"})
    copy = load_model(path, dtype="float64")
    assert copy.source.format == "gptff-toolkit" and copy.source.metadata == {"note": "round trip"}
    structures = [bulk("NaCl", "rocksalt", a=5.6), molecule("CH4")]
    graph = build_graph(structures, dtype=torch.float64)
    before, after = evaluate(original, graph), evaluate(copy, graph)
    assert torch.equal(before.energy, after.energy)
    assert torch.equal(before.forces, after.forces)
    assert torch.equal(before.stress, after.stress)


def test_project_checkpoint_with_unknown_config_key(tmp_path, models):
    path = save_checkpoint(models("gptff-v1", "float64"), tmp_path / "good.pth")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    payload["config"]["attention_heads_v3"] = 4
    torch.save(payload, tmp_path / "bad.pth")
    with pytest.raises(
        CheckpointError, match=r"unknown GPTFF config keys \['attention_heads_v3'\]"
    ):
        load_model(tmp_path / "bad.pth")


def test_bad_envelope_window():
    with pytest.raises(GPTFFInputError, match=r"bond_window must be between 0 and 5\.0"):
        load_model("gptff-v1", smooth=True, bond_window=6.0)


# ------------------------------------------------------------------- partial occupancy (ASE)
PARTIAL_CIF = """data_NaKCl
_symmetry_space_group_name_H-M   'F m -3 m'
_symmetry_Int_Tables_number   225
_cell_length_a   6.0
_cell_length_b   6.0
_cell_length_c   6.0
_cell_angle_alpha   90
_cell_angle_beta   90
_cell_angle_gamma   90
loop_
 _atom_site_label
 _atom_site_type_symbol
 _atom_site_fract_x
 _atom_site_fract_y
 _atom_site_fract_z
 _atom_site_occupancy
  Na1  Na  0.0  0.0  0.0  {na}
  K1   K   0.0  0.0  0.0  {k}
  Cl1  Cl  0.5  0.5  0.5  1.0
"""


def test_partially_occupied_cif_is_refused_through_ase(tmp_path, models):
    """ASE's CIF reader keeps one species of a mixed site (Na0.5K0.5 became K4Cl4) and records
    the occupancies only in ``atoms.info``; it was evaluated as ordered KCl."""
    import ase.io

    path = tmp_path / "NaKCl.cif"
    path.write_text(PARTIAL_CIF.format(na=0.5, k=0.5))
    atoms = ase.io.read(path)
    assert atoms.get_chemical_formula() == "Cl4K4"  # what ASE makes of it: looks ordered
    model = models("gptff-v1", "float64")
    for evaluate_it in (
        lambda: predict([atoms], model, dtype="float64"),
        lambda: build_graph([atoms]),
        lambda: GPTFFCalculator(model, dtype="float64").get_potential_energy(atoms),
    ):
        with pytest.raises(StructureError, match="site 0 is partially occupied"):
            evaluate_it()


def test_fully_occupied_cif_read_by_ase_is_accepted(tmp_path):
    import ase.io

    path = tmp_path / "NaCl.cif"
    path.write_text(PARTIAL_CIF.replace("  K1   K   0.0  0.0  0.0  {k}\n", "").format(na=1.0))
    atoms = ase.io.read(path)
    assert atoms.info["occupancy"]  # ASE records the occupancies of every site
    assert build_graph([atoms]).n_bonds > 0


# ------------------------------------------------------------------- non-finite results
def test_a_nan_result_is_refused_not_returned(models, monkeypatch):
    """One NaN weight gave NaN energies with exit 0; whatever makes a result non-finite, the
    inference entry points refuse it and name the structure."""
    import importlib

    from gptff_core.errors import ComputationError

    calculator_module = importlib.import_module("gptff_core.calculator")
    evaluate_module = importlib.import_module("gptff_core.evaluate")
    predict_module = importlib.import_module("gptff_core.predict")

    def poisoned(*args, **kwargs):
        result = evaluate_module.evaluate(*args, **kwargs)
        result.forces[-1, 0] = float("nan")  # the last atom: of the last structure of the batch
        return result

    monkeypatch.setattr(predict_module, "evaluate", poisoned)
    monkeypatch.setattr(calculator_module, "evaluate", poisoned)
    model = models("gptff-v1", "float64")
    structures = [bulk("Cu", cubic=True), bulk("NaCl", "rocksalt", a=5.7)]
    with pytest.raises(ComputationError, match=r"non-finite .* for structure 1"):
        predict(structures, model, dtype="float64")
    atoms = structures[1].copy()
    atoms.calc = GPTFFCalculator(model, dtype="float64")
    with pytest.raises(ComputationError, match=r"non-finite .* for ClNa"):
        atoms.get_potential_energy()
