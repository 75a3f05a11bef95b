"""Checkpoint files: atomic rename, checksum manifest, corruption detected and skipped, keep-last-K."""

from __future__ import annotations

import json
import os
import random

import numpy as np
import pytest
import torch

from r3fast.train import checkpoint as ckpt


def write(run_dir, step, keep_last=3, payload=None):
    def save_model(folder):
        folder.mkdir()
        torch.save({"w": torch.full((4,), float(step))}, folder / "weights.pt")

    return ckpt.write_checkpoint(
        run_dir, step, save_model=save_model, optimizer_state={"optimizer": payload or {"step": step}},
        rng_states=[ckpt.capture_rng()], trainer_state={"step": step, "pools": [{}], "world_size": 1},
        config_yaml="seed: 0\n", keep_last=keep_last,
    )


def test_checkpoint_is_complete_and_verifies(tmp_path):
    folder = write(tmp_path, 5)
    assert folder.name == "step-00000005"
    manifest = json.loads((folder / ckpt.MANIFEST).read_text())
    assert set(manifest["files"]) == {"model/weights.pt", "optimizer.pt", "rng.pt", "trainer_state.json", "config.yaml"}
    for name, digest in manifest["files"].items():
        assert ckpt.sha256_file(folder / name) == digest
    assert ckpt.verify_checkpoint(folder) is None
    assert ckpt.latest_valid_checkpoint(tmp_path) == folder
    assert ckpt.read_checkpoint(folder)["trainer_state"]["step"] == 5
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))


@pytest.mark.parametrize("damage", ["flip_byte", "truncate", "delete_file", "delete_manifest"])
def test_corrupt_checkpoint_is_skipped_with_a_warning_naming_it(tmp_path, damage):
    good = write(tmp_path, 1)
    bad = write(tmp_path, 2)
    target = bad / "optimizer.pt"
    if damage == "flip_byte":
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0xFF
        target.write_bytes(bytes(data))
    elif damage == "truncate":
        target.write_bytes(target.read_bytes()[:10])
    elif damage == "delete_file":
        target.unlink()
    else:
        (bad / ckpt.MANIFEST).unlink()
    assert ckpt.verify_checkpoint(bad) is not None
    with pytest.warns(UserWarning, match="step-00000002"):
        assert ckpt.latest_valid_checkpoint(tmp_path) == good


def test_a_write_killed_midway_leaves_no_checkpoint(tmp_path, monkeypatch):
    write(tmp_path, 1)

    def dies(folder):
        folder.mkdir()
        (folder / "weights.pt").write_bytes(b"partial")
        raise KeyboardInterrupt  # stands for the process dying inside the write

    with pytest.raises(KeyboardInterrupt):
        ckpt.write_checkpoint(tmp_path, 2, save_model=dies, optimizer_state={}, rng_states=[], trainer_state={},
                              config_yaml="", keep_last=3)
    assert [s for s, _ in ckpt.checkpoints(tmp_path)] == [1]
    # a temp folder a SIGKILL left behind is never taken for a checkpoint, and the next write clears it
    (tmp_path / "checkpoints" / ".tmp-step-00000002-x").mkdir()
    assert ckpt.latest_valid_checkpoint(tmp_path).name == "step-00000001"
    write(tmp_path, 2)
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))


def test_keep_last_k_valid_checkpoints(tmp_path):
    for step in range(1, 6):
        write(tmp_path, step, keep_last=2)
    assert [s for s, _ in ckpt.checkpoints(tmp_path)] == [4, 5]
    # a corrupt newest one does not count towards K: the older valid ones stay
    (tmp_path / "checkpoints" / "step-00000005" / "rng.pt").write_bytes(b"x")
    write(tmp_path, 6, keep_last=2)
    assert [s for s, _ in ckpt.checkpoints(tmp_path)] == [4, 5, 6]


def test_rng_states_round_trip():
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    state = ckpt.capture_rng()
    expected = (random.random(), np.random.rand(), torch.rand(3))
    random.seed(2), np.random.seed(2), torch.manual_seed(2)
    ckpt.restore_rng(state)
    got = (random.random(), np.random.rand(), torch.rand(3))
    assert expected[0] == got[0] and expected[1] == got[1] and torch.equal(expected[2], got[2])
    assert os.environ.get(ckpt.SLEEP_ENV) is None
