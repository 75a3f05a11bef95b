"""Rollout engines: HFEngine (transformers, the embedded default) and VLLMEngine (colocated vLLM)."""

from __future__ import annotations

import importlib.util

from r3fast.rollout.base import Completion, GenerationStats, RolloutEngine, SamplingParams

ENGINES = ("auto", "hf", "vllm")


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def resolve_engine(engine: str = "auto") -> str:
    """The one place that picks the rollout engine: "auto" is vllm when importable, else hf."""
    if engine not in ENGINES:
        raise ValueError(f"rollout engine must be one of {ENGINES}, got {engine!r}")
    if engine == "auto":
        return "vllm" if vllm_available() else "hf"
    if engine == "vllm" and not vllm_available():
        raise ValueError("rollout engine 'vllm' needs vllm (pip install 'r3fast[gpu]' or 'r3fast[cpu-vllm]')")
    return engine


def make_engine(engine: str = "auto", model=None, *, policy=None, tokenizer=None, batch_size: int = 16,
                **vllm_options) -> tuple[RolloutEngine, object]:
    """(engine, tokenizer): the one engine factory, used by `r3fast eval`, `r3fast train` and the tests.

    `model` is an r3fast model name or a Hugging Face folder. hf decodes with `policy` and `tokenizer`
    when given (the trainer's policy itself: no copy of its weights), else loads `model` on every core.
    vllm runs a VLLMEngine over `model`'s folder (options as VLLMEngine's); given `policy`, it re-reads
    the policy's weights after sleep() unless `weights_source` says otherwise."""
    kind = resolve_engine(engine)
    if kind == "hf":
        if policy is None:
            if model is None:
                raise ValueError("rollout engine 'hf' needs a model name or folder, or the policy and its tokenizer")
            from r3fast.models import load, set_thread_count

            set_thread_count()
            policy, tokenizer = load(model)
        elif tokenizer is None:
            raise ValueError("rollout engine 'hf' over the policy needs its tokenizer too")
        from r3fast.rollout.hf import HFEngine

        return HFEngine(policy, tokenizer, batch_size=batch_size), tokenizer
    if model is None:
        raise ValueError("rollout engine 'vllm' needs model: a model name or a Hugging Face folder with the policy's "
                         "weights")
    from r3fast.models import materialize
    from r3fast.rollout.vllm import VLLMEngine

    path = materialize(model)
    if policy is not None:
        vllm_options.setdefault("weights_source", lambda: policy.state_dict().items())
    if tokenizer is None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(path)
    return VLLMEngine(path, **vllm_options), tokenizer


__all__ = ["ENGINES", "Completion", "GenerationStats", "RolloutEngine", "SamplingParams", "make_engine",
           "resolve_engine"]
