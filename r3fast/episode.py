"""The one record of a trained sequence, from rollout to loss.

`TrainingSample` is what both stages produce and what the loss reads: a context, the sampled
completion that gets the loss (a self-reflection in R3, an attempt in the first-try stage), the
engine's log-probs of it, its reward and its group's advantage. `Episode` is an R3 sample that
also remembers the failed attempt and the retries that earned its reward.
The loss mask is built in one place, `r3fast.train.update.collate`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class TrainingSample:
    context_ids: list[int]                 # tokens the completion is conditioned on; no loss
    completion_ids: list[int]              # the trained span: the tokens the engine sampled (supervised stage: the gold answer)
    advantage: float = 0.0                 # group-normalised reward, shared by every completion token (0: flat group)
    sampling_logprobs: list[float] | None = None  # the engine's log-probs of completion_ids, as it sampled them
    reward: float = 0.0                    # what the verifier gave this sample
    group_id: int = 0                      # samples of one prompt share it: one GRPO group


@dataclass(kw_only=True)
class Episode(TrainingSample):
    """One reflection of one failed task (completion_ids), and the retries after it."""

    instance_id: str                       # stable id of the task instance
    reflection_text: str
    first_attempt_text: str
    first_verdict: bool                    # always False: only failures reflect
    retry_context_ids: list[int] = field(default_factory=list)  # the retry request after the reflection
    retry_ids: list[list[int]] = field(default_factory=list)    # the k retries sampled from that context
    retry_texts: list[str] = field(default_factory=list)
    retry_verdicts: list[bool] = field(default_factory=list)    # one verdict per retry; reward = the fraction passed

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
