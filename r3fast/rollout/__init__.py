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


def make_engine(engine: str = "auto", model_path=None, model=None, tokenizer=None, *, batch_size: int = 16,
                **vllm_options) -> RolloutEngine:
    """The engine `resolve_engine(engine)` picks. hf: decodes with `model` and `tokenizer` themselves.
    vllm: a VLLMEngine over the folder `model_path` (options as VLLMEngine's); given `model`, the
    engine re-reads its weights after sleep() unless `weights_source` says otherwise."""
    kind = resolve_engine(engine)
    if kind == "hf":
        if model is None or tokenizer is None:
            raise ValueError("rollout engine 'hf' needs the policy model and its tokenizer")
        from r3fast.rollout.hf import HFEngine

        return HFEngine(model, tokenizer, batch_size=batch_size)
    if model_path is None:
        raise ValueError("rollout engine 'vllm' needs model_path: a Hugging Face folder with the policy's weights")
    from r3fast.rollout.vllm import VLLMEngine

    if model is not None:
        vllm_options.setdefault("weights_source", model.named_parameters)
    return VLLMEngine(model_path, **vllm_options)


__all__ = ["ENGINES", "Completion", "GenerationStats", "RolloutEngine", "SamplingParams", "make_engine",
           "resolve_engine"]
