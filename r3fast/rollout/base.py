"""The contract every rollout engine implements, and the plain data it passes around.

Engines take token ids, not text: the reflect-retry loop owns templating, so the same
prompt tokens reach the transformers engine and the vLLM engine and their episodes can
be compared token for token.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from r3fast.timing import PhaseTimer, timed

if TYPE_CHECKING:  # torch stays out of `import r3fast`, so the CLI starts instantly
    import torch


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 256          # completion budget per sample
    temperature: float = 1.0           # 0 means greedy
    top_p: float = 1.0                 # nucleus sampling mass
    n: int = 1                         # samples per prompt
    stop: tuple[str, ...] = ()         # generation ends after the first of these strings
    seed: int | None = None            # same seed, same prompts -> same samples
    bad_words: tuple[str, ...] = ()    # strings the sample may not contain (their last token is banned after the rest)

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if isinstance(self.stop, str):
            raise ValueError("stop must be a sequence of strings, not a single string")
        if isinstance(self.bad_words, str) or not all(isinstance(w, str) and w for w in self.bad_words):
            raise ValueError(f"bad_words must be a sequence of non-empty strings, got {self.bad_words!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass
class Completion:
    token_ids: list[int]               # generated tokens, stop string included, no padding
    logprobs: list[float]              # log-prob of each generated token under the sampling policy
    text: str                          # decoded token_ids
    finish_reason: str = "length"      # "stop" (eos or stop string) or "length"
    prompt_index: int = 0              # which prompt of the batch this sample answers


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    generated_tokens: int = 0
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def tokens_per_second(self) -> float:
        return self.generated_tokens / self.seconds if self.seconds > 0 else 0.0


def prompt_lists(prompt_token_ids: Sequence[Sequence[int]]) -> list[list[int]]:
    """The engines' shared input check: every prompt a non-empty list of int token ids."""
    prompts = [list(p) for p in prompt_token_ids]
    for i, p in enumerate(prompts):
        if not p or not all(isinstance(t, int) for t in p):
            raise ValueError(f"prompt_token_ids[{i}] must be a non-empty list of token ids (ints)")
    return prompts


@runtime_checkable
class RolloutEngine(Protocol):
    """generate() returns, per prompt, a list of `params.n` completions."""

    def generate(
        self, prompt_token_ids: Sequence[Sequence[int]], params: SamplingParams
    ) -> list[list[Completion]]: ...

    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None: ...

    def sleep(self, level: int = 1) -> None: ...

    def wake_up(self, tags: Sequence[str] | None = None) -> None: ...


def generate_counted(engine: RolloutEngine, prompts: list[list[int]], params: SamplingParams,
                     stats: GenerationStats | None = None, timer: PhaseTimer | None = None) -> list[list[Completion]]:
    """engine.generate, its tokens and seconds added to `stats` and its time to `timer`'s "generation":
    the one place rollout work is counted."""
    if not prompts:
        return []
    start = time.perf_counter()
    with timed(timer, "generation"):
        out = engine.generate(prompts, params)
    if stats is not None:
        stats.seconds += time.perf_counter() - start
        stats.prompt_tokens += sum(len(p) for p in prompts)
        stats.generated_tokens += sum(len(c.token_ids) for cs in out for c in cs)
    return out
