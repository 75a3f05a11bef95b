"""The record that flows through r3fast: one reflection of one failed task, and what came of it.

Generation fills it, the verifier scores it, advantages are set per group, and the loss
reads `input_ids` / `reflection_mask` / `advantage` / `reflection_logprobs` from it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class Episode:
    instance_id: str                   # stable id of the task instance
    group_id: int                      # episodes sampled for the same failed attempt share it
    context_ids: list[int]             # chat-templated task + failed attempt + reflection request
    reflection_ids: list[int]          # the sampled self-reflection: the only tokens that get the loss
    reflection_logprobs: list[float]   # sampling-policy log-probs of reflection_ids (old_logp)
    reflection_text: str
    first_attempt_text: str
    first_verdict: bool                # always False for a trained episode: only failures reflect
    retry_context_ids: list[int] = field(default_factory=list)  # the retry request after the reflection
    retry_ids: list[list[int]] = field(default_factory=list)    # the k retries sampled from that context
    retry_texts: list[str] = field(default_factory=list)
    retry_verdicts: list[bool] = field(default_factory=list)    # one verdict per retry
    reward: float = 0.0                # the fraction of retries that pass (k = 1: 1.0 when the retry passes)
    advantage: float = 0.0             # group-normalised reward

    @property
    def rescued(self) -> bool:
        """Whether any retry after this reflection passed."""
        return any(self.retry_verdicts)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> Episode:
        """The inverse of to_dict (JSON turns tuples into lists; every field here is a list already)."""
        return cls(**values)

    @property
    def input_ids(self) -> list[int]:
        # The retry comes after the reflection and gets no loss; under a causal model it
        # cannot change the reflection's log-probs, so the training sequence stops here.
        return self.context_ids + self.reflection_ids

    @property
    def reflection_mask(self) -> list[int]:
        return [0] * len(self.context_ids) + [1] * len(self.reflection_ids)

    @property
    def target_mask(self) -> list[int]:
        """Mask aligned with next-token targets: position t predicts input_ids[t + 1]."""
        return self.reflection_mask[1:]
