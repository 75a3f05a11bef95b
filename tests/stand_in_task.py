"""The base of the tests' stand-in tasks: a rule in `verify` decides each verdict.

The loop verifies through `Task.judge_batch` only; a stand-in says pass or fail with `verify` and,
when a test needs a reason, words it in `explain`.
"""

from __future__ import annotations

from r3fast.verify import Verdict


class StandInTask:
    """Subclasses define `verify(instance, text) -> bool` and `name`/`prompt`, as a Task has."""

    failure_code = "WRONG"

    def explain(self, instance, text: str) -> Verdict:
        return Verdict("PASS", "") if self.verify(instance, text) else Verdict(self.failure_code, "")

    def judge_batch(self, instances, texts) -> list[Verdict]:
        if len(instances) != len(texts):
            raise ValueError(f"judge_batch: {len(instances)} instances for {len(texts)} texts")
        return [self.explain(i, t) for i, t in zip(instances, texts, strict=True)]
