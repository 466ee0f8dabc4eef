"""A damaged checkpoint is refused, never resumed from: bytes flipped anywhere in the file or the file cut
short raise DamagedCheckpoint. Saving keeps the checkpoint it replaces, and a resume takes the newest sound
one; a save that fails part way (a full disk) leaves both as they were."""

import errno
import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from analysis import checkpoint
from analysis.checkpoint import DamagedCheckpoint
from analysis.recorder import last_checkpoint

TREE = {"adapter": torch.arange(64, dtype=torch.float32), "charge": np.linspace(0, 1, 16), "journal": "[]",
        "mask": torch.tensor([True, False]), "versions": {3: torch.ones(2, 2)}}


def saved(path, tag: int = 0):
    checkpoint.save(path, {**TREE, "rounds": tag})
    return path


def header_size(path) -> int:
    return 8 + int.from_bytes(path.read_bytes()[:8], "little")


def flip(path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("where", ["first data byte", "last data byte", "a digit of the tree", "the length"])
def test_a_flipped_bit_is_refused(tmp_path, where):
    path = saved(tmp_path / "c.safetensors")
    raw = path.read_bytes()
    at = {"first data byte": header_size(path), "last data byte": len(raw) - 1,
          # a value in the tree's JSON, which the header holds escaped
          "a digit of the tree": raw.index(b'{\\"value\\": 0}'), "the length": 0}[where]
    flip(path, at)
    with pytest.raises(DamagedCheckpoint, match="c.safetensors"):
        checkpoint.load(path)


@pytest.mark.parametrize("keep", [0, 5, "header", "half"])
def test_a_file_cut_short_is_refused(tmp_path, keep):
    path = saved(tmp_path / "c.safetensors")
    raw = path.read_bytes()
    cut = {"header": header_size(path) - 3, "half": len(raw) // 2}.get(keep, keep)
    path.write_bytes(raw[:cut])
    with pytest.raises(DamagedCheckpoint):
        checkpoint.load(path)


def test_a_checkpoint_written_before_checksums_still_loads(tmp_path):
    """The format is unchanged; only the metadata gained a key."""
    path = tmp_path / "c.safetensors"
    tree = {"items": [["x", {"tensor": "t0"}]]}
    save_file({"t0": torch.ones(3)}, path, metadata={"format": checkpoint.FORMAT, "tree": json.dumps(tree)})
    assert torch.equal(checkpoint.load(path)["x"], torch.ones(3))


def test_the_replaced_checkpoint_is_kept_and_a_resume_takes_the_newest_sound_one(tmp_path, caplog):
    path = tmp_path / "checkpoint.safetensors"
    saved(path, 1), saved(path, 2)
    assert checkpoint.load(checkpoint.previous(path))["rounds"] == 1
    assert last_checkpoint(tmp_path)["rounds"] == 2
    flip(path, len(path.read_bytes()) - 1)
    assert last_checkpoint(tmp_path)["rounds"] == 1
    assert "SHA-256" in caplog.text and "checkpoint.previous.safetensors" in caplog.text
    flip(checkpoint.previous(path), len(checkpoint.previous(path).read_bytes()) - 1)
    with pytest.raises(DamagedCheckpoint, match="no sound checkpoint.*checkpoint.safetensors.*previous"):
        last_checkpoint(tmp_path)
    assert last_checkpoint(tmp_path / "nothing-yet") is None


def test_a_save_cut_short_by_a_full_disk_leaves_the_checkpoints_as_they_were(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.safetensors"
    saved(path, 1), saved(path, 2)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def full_disk(tensors, file, metadata):
        file.write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device", str(file))

    monkeypatch.setattr(checkpoint, "save_file", full_disk)
    with pytest.raises(OSError):
        saved(path, 3)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
