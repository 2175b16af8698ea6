"""Damaged checkpoints are refused on load, never evaluated: a flipped bit (zip CRC-32 of the
member), non-finite weights (the tensor named), and for the project's own checkpoints weights
that no longer match the sha256 stored by ``save_checkpoint``. Files are damaged in copies under
``tmp_path``; ``../shared/models`` is only read."""

from __future__ import annotations

import logging
import shutil
import struct
import zipfile
from pathlib import Path

import pytest
import torch
from ase.build import bulk

from gptff_core import load_model, save_checkpoint
from gptff_core.checkpoint import weights_sha256
from gptff_core.cli import main
from gptff_core.errors import CheckpointError
from gptff_core.model import GPTFFConfig
from gptff_core.pretrained import resolve_checkpoint
from gptff_core.training import new_network

SMALL = GPTFFConfig(atom_feature_len=8, bond_feature_len=8, n_layers=1, transformer=False)


def flip_exponent_bit(path: Path) -> str:
    """Flip the top exponent bit of the first float32 of the largest tensor member of the torch
    zip file ``path`` (the value is multiplied or divided by 2**128); returns the member."""
    with zipfile.ZipFile(path) as archive:
        info = max(
            (i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size
        )
    raw = bytearray(path.read_bytes())
    name_length, extra_length = struct.unpack("<HH", raw[info.header_offset + 26 :][:4])
    start = info.header_offset + 30 + name_length + extra_length  # torch stores, uncompressed
    raw[start + 3] ^= 0x40
    path.write_bytes(bytes(raw))
    return info.filename


@pytest.fixture
def v2_copy(tmp_path) -> Path:
    return Path(shutil.copyfile(resolve_checkpoint("gptff-v2"), tmp_path / "my_v2.pth"))


def _energy(model) -> float:
    atoms = bulk("NaCl", "rocksalt", a=5.64)
    from gptff_core import GPTFFCalculator

    atoms.calc = GPTFFCalculator(model=model)
    return atoms.get_potential_energy()


def test_published_copy_with_a_flipped_bit_is_refused(v2_copy, tmp_path, capsys):
    assert _energy(v2_copy) == pytest.approx(_energy("gptff-v2"), abs=1e-6)  # intact copy
    member = flip_exponent_bit(v2_copy)
    with pytest.raises(CheckpointError, match=f"member '{member}'.*CRC-32"):
        load_model(v2_copy)
    structure = tmp_path / "NaCl.cif"
    bulk("NaCl", "rocksalt", a=5.64).write(structure)
    assert main(["predict", str(structure), "--model", str(v2_copy)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "is damaged" in captured.err and member in captured.err


def test_own_checkpoint_with_a_flipped_bit_is_refused(tmp_path):
    path = save_checkpoint(new_network(SMALL, seed=0), tmp_path / "own.pt")
    load_model(path)  # intact
    member = flip_exponent_bit(path)
    with pytest.raises(CheckpointError, match=f"member '{member}'"):
        load_model(path)


def test_non_finite_weights_are_refused_with_the_tensor_named(v2_copy, tmp_path):
    payload = torch.load(v2_copy, map_location="cpu", weights_only=True)
    payload["state_dict"]["fc_out.weight"][0, 3] = float("nan")
    torch.save(payload, v2_copy)  # a fresh file: its CRCs are right
    with pytest.raises(CheckpointError, match=r"non-finite weights.*fc_out\.weight \(1 of 64"):
        load_model(v2_copy)

    own = save_checkpoint(new_network(SMALL, seed=0), tmp_path / "own.pt")
    payload = torch.load(own, map_location="cpu", weights_only=True)
    payload["state_dict"]["readout.4.bias"][0] = float("inf")
    torch.save(payload, own)
    with pytest.raises(CheckpointError, match=r"readout\.4\.bias"):
        load_model(own)


def test_save_checkpoint_refuses_non_finite_weights(tmp_path):
    network = new_network(SMALL, seed=0)
    with torch.no_grad():
        network.readout[0].weight[1, 2] = float("nan")
    with pytest.raises(CheckpointError, match=r"readout\.0\.weight"):
        save_checkpoint(network, tmp_path / "nan.pt")
    assert not any(tmp_path.iterdir())


def test_own_checkpoint_weights_are_checked_against_their_sha256(tmp_path, caplog):
    network = new_network(SMALL, seed=0)
    path = save_checkpoint(network, tmp_path / "own.pt")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    assert payload["format_version"] == 2
    assert payload["weights_sha256"] == weights_sha256(network.state_dict())
    payload["state_dict"]["readout.4.bias"] += 1e-3  # finite, re-saved: the CRCs are right
    torch.save(payload, tmp_path / "edited.pt")
    with pytest.raises(CheckpointError, match="do not match the sha256 stored"):
        load_model(tmp_path / "edited.pt")

    # a checkpoint from before the digest (format version 1) still loads, with a log line
    del payload["weights_sha256"]
    payload["format_version"] = 1
    torch.save(payload, tmp_path / "old.pt")
    with caplog.at_level(logging.WARNING, logger="gptff_core.checkpoint"):
        old = load_model(tmp_path / "old.pt")
    assert "before checkpoints stored a sha256" in caplog.text
    expected = float(network.readout[4].bias[0].detach()) + 1e-3
    assert float(old.readout[4].bias[0].detach()) == pytest.approx(expected)


def test_weights_sha256_depends_on_names_dtypes_shapes_and_values():
    state = new_network(SMALL, seed=0).state_dict()
    digest = weights_sha256(state)
    assert weights_sha256(dict(reversed(list(state.items())))) == digest  # order-free
    changed = dict(state)
    changed["readout.4.bias"] = state["readout.4.bias"].clone()
    changed["readout.4.bias"].view(torch.int32)[0] ^= 1  # one bit
    assert weights_sha256(changed) != digest
    assert weights_sha256({**state, "readout.4.bias": state["readout.4.bias"].double()}) != digest
    reshaped = {**state, "readout.4.bias": state["readout.4.bias"].reshape(1, -1)}
    assert weights_sha256(reshaped) != digest
