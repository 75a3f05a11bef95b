"""Checkpoints that survive kill -9: written aside, renamed into place, verified before use.

    RUN_DIR/checkpoints/step-00000050/
        model/            Hugging Face folder (safetensors + config + tokenizer): transformers and vLLM load it
        optimizer.pt      optimizer and LR-scheduler state
        rng.pt            python / numpy / torch (CPU, CUDA) RNG states of every rank
        trainer_state.json  step, failure-pool position of every rank
        config.yaml       the resolved training config
        manifest.json     sha256 of every other file, written last

A checkpoint is built in a hidden temporary folder and renamed to its final name in one step, so
a reader never sees half of one. The manifest catches what a rename cannot: a file truncated or
altered afterwards, or a filesystem that reorders writes. A folder whose manifest is missing or
does not match is skipped on resume with a warning naming it.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

MANIFEST = "manifest.json"
STEP_DIR = re.compile(r"^step-(\d{8})$")
# Test hook: seconds to sleep in the middle of a checkpoint write, so a test can kill the process there.
SLEEP_ENV = "R3FAST_CHECKPOINT_WRITE_SLEEP"


def checkpoint_root(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    for path in sorted(p for p in folder.rglob("*") if p.is_dir()):
        _fsync_dir(path)
    _fsync_dir(folder)


def capture_rng() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def write_checkpoint(
    run_dir: str | Path,
    step: int,
    *,
    save_model,                            # callable(folder): writes the HF model folder
    optimizer_state: dict,                 # optimizer + scheduler state
    rng_states: list[dict],                # one per rank
    trainer_state: dict,                   # JSON-able: step, pool positions, ...
    config_yaml: str,
    keep_last: int,
) -> Path:
    """Write step `step` atomically, then delete all but the newest `keep_last` valid checkpoints."""
    root = checkpoint_root(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-step-{step:08d}-", dir=root))
    try:
        save_model(tmp / "model")
        torch.save(optimizer_state, tmp / "optimizer.pt")
        delay = float(os.environ.get(SLEEP_ENV, "0") or 0)
        if delay > 0:
            time.sleep(delay)
        torch.save(rng_states, tmp / "rng.pt")
        (tmp / "trainer_state.json").write_text(json.dumps(trainer_state, indent=1, sort_keys=True))
        (tmp / "config.yaml").write_text(config_yaml)
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        manifest = {p.relative_to(tmp).as_posix(): sha256_file(p) for p in files}
        (tmp / MANIFEST).write_text(json.dumps({"step": step, "files": manifest}, indent=1, sort_keys=True))
        _fsync_tree(tmp)
        if final.exists():  # a leftover of the same step (e.g. found corrupt): the new one replaces it
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync_dir(root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    prune(run_dir, keep_last)
    return final


def verify_checkpoint(folder: Path) -> str | None:
    """None when `folder` is complete and matches its manifest, else what is wrong with it."""
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        return "no manifest (partial write)"
    try:
        listed = json.loads(manifest_path.read_text())["files"]
    except (ValueError, KeyError, TypeError):
        return "unreadable manifest"
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} - {MANIFEST}
    missing = sorted(set(listed) - present)
    if missing:
        return f"missing files: {', '.join(missing)}"
    for name, digest in listed.items():
        if sha256_file(folder / name) != digest:
            return f"checksum mismatch in {name}"
    return None


def checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, folder) of every finished-looking checkpoint folder, oldest first (not verified)."""
    root = checkpoint_root(run_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := STEP_DIR.match(p.name))]
    return sorted(found)


def latest_valid_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest checkpoint that verifies; each newer invalid one is named in a warning and skipped."""
    for _step, folder in reversed(checkpoints(run_dir)):
        problem = verify_checkpoint(folder)
        if problem is None:
            return folder
        warnings.warn(f"skipping checkpoint {folder}: {problem}", stacklevel=2)
    return None


def prune(run_dir: str | Path, keep_last: int) -> None:
    """Keep the newest `keep_last` valid checkpoints; drop every older folder and stale temporary ones."""
    root = checkpoint_root(run_dir)
    for stale in root.glob(".tmp-step-*"):  # only the writing rank calls this, after its own rename
        shutil.rmtree(stale, ignore_errors=True)
    found = checkpoints(run_dir)
    valid = [step for step, folder in found if verify_checkpoint(folder) is None]
    if len(valid) <= keep_last:
        return
    oldest_kept = valid[-keep_last]
    for step, folder in found:
        if step < oldest_kept:
            shutil.rmtree(folder, ignore_errors=True)


def read_checkpoint(folder: Path) -> dict[str, Any]:
    """Everything but the model weights (load those from folder / 'model')."""
    return {
        "optimizer": torch.load(folder / "optimizer.pt", weights_only=False),
        "rng": torch.load(folder / "rng.pt", weights_only=False),
        "trainer_state": json.loads((folder / "trainer_state.json").read_text()),
        "config_yaml": (folder / "config.yaml").read_text(),
    }


def check_same_layout(trainer_state: dict, dist, checkpoint) -> None:
    """A checkpoint resumes only on the rank layout that wrote it: its pools and RNG streams are per rank,
    and split by data rank. Checkpoints from before tensor parallelism were written with 1."""
    written = {"world_size": trainer_state["world_size"],
               "tensor_parallel_size": trainer_state.get("tensor_parallel_size", 1)}
    if written["world_size"] != dist.world_size:
        raise ValueError(f"{checkpoint} was written by {written['world_size']} ranks; resume it with as many "
                         f"(got {dist.world_size})")
    if written["tensor_parallel_size"] != dist.tensor_parallel_size:
        raise ValueError(f"{checkpoint} was written with rollout.tensor_parallel_size="
                         f"{written['tensor_parallel_size']}; resume it with the same (got {dist.tensor_parallel_size})")
