"""What a task is to the rest of r3fast: instances with stable ids, a chat prompt, a verifier."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


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

    def verify(self, instance: Instance, text: str) -> bool: ...

    def explain(self, instance: Instance, text: str) -> Any:
        """A verdict with `.code` and `.reason` (r3fast.verify.Verdict)."""
        ...
