"""What a task is to the rest of r3fast: instances with stable ids, a chat prompt, a batch verifier."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from r3fast.verify.verdict import Verdict


@dataclass(frozen=True)
class Instance:
    id: str                            # stable across runs: derived from the content, not from an index
    data: dict[str, Any]               # task fields (countdown: numbers, target; function calling: query, tools, answers)


@dataclass
class Prompt:
    messages: list[dict[str, str]]     # chat turns, few-shot demonstrations included, ending with the task's user turn
    tools: list[dict] | None = None    # tool schemas for chat templates that take `tools=`
    task_text: str = ""                # the bare task statement, restated by the retry turn
    tools_text: str = ""               # `tools` written out as text, leading the last user turn (see r3fast.prompts)


@runtime_checkable
class Task(Protocol):
    name: str

    def prompt(self, instance: Instance) -> Prompt: ...

    def judge_batch(self, instances: Sequence[Instance], texts: Sequence[str | bytes]) -> list[Verdict]:
        """The verdict of texts[i] as an answer to instances[i], for every i, in one native call.

        This is how r3fast verifies: a training step judges all its texts at once. A failed verdict's reason is
        the feedback a reflection prompt shows the model.
        """
        ...


def check_pairs(instances: Sequence[Instance], texts: Sequence[str | bytes]) -> None:
    """Raises unless there is one text per instance."""
    if len(instances) != len(texts):
        raise ValueError(
            f"texts has {len(texts)} entries but instances has {len(instances)}; expected one text per instance"
        )
