"""Failure datasets: the task instances a model fails, which is where R3 trains.

Offline (as the paper does): `r3fast failures` attempts instances and writes the failures to JSONL,
one object per line:

    {"task": "countdown", "id": "cd-...", "data": {"numbers": [...], "target": 24},
     "attempt": "<the failed answer>", "verdict": "WRONG_VALUE"}

`read_failures` loads such a file for the trainer. Online: `mine_failures` attempts fresh
instances with the current policy and keeps those it fails, so the pool follows the model.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from r3fast.prompts import task_chat
from r3fast.reflect import Attempt, first_attempts, judge
from r3fast.rollout.base import Completion, GenerationStats, RolloutEngine, SamplingParams
from r3fast.tasks.base import Instance, Task

FIELDS = ("task", "id", "data", "attempt", "verdict")


@dataclass(frozen=True)
class Failure:
    task: str                          # task name the instance belongs to (r3fast.tasks.get_task)
    instance: Instance                 # what was asked
    attempt: str                       # the answer that failed
    verdict: str                       # its verdict code


def failure_row(task_name: str, attempt: Attempt) -> dict:
    return {
        "task": task_name,
        "id": attempt.instance.id,
        "data": attempt.instance.data,
        "attempt": attempt.completion.text,
        "verdict": attempt.code,
    }


def write_failures(path: str | os.PathLike, task_name: str, attempts: Iterable[Attempt]) -> int:
    """Write the failed ones of `attempts` as JSONL (atomically); returns how many were written."""
    path = Path(path)
    rows = [failure_row(task_name, a) for a in attempts if not a.passed]
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return len(rows)


def read_failures(path: str | os.PathLike, task: str | None = None) -> list[Failure]:
    """Load a failure dataset; with `task`, every row must belong to that task.

    Errors name the file and the 1-based line of the first bad row.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"failure dataset {str(path)!r} does not exist")
    failures = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where}: not valid JSON ({exc.msg})") from None
            failures.append(_parse_row(row, where, task))
    return failures


def _parse_row(row, where: str, task: str | None) -> Failure:
    if not isinstance(row, dict):
        raise ValueError(f"{where}: expected a JSON object with keys {list(FIELDS)}, got {type(row).__name__}")
    missing = [k for k in FIELDS if k not in row]
    if missing:
        raise ValueError(f"{where}: missing key(s) {missing}; a failure row has {list(FIELDS)}")
    for key in ("task", "id", "attempt", "verdict"):
        if not isinstance(row[key], str):
            raise ValueError(f"{where}: {key!r} must be a string, got {type(row[key]).__name__}")
    if not isinstance(row["data"], dict):
        raise ValueError(f"{where}: 'data' must be an object of task fields, got {type(row['data']).__name__}")
    if task is not None and row["task"] != task:
        raise ValueError(f"{where}: row is from task {row['task']!r}, expected {task!r}")
    return Failure(row["task"], Instance(row["id"], row["data"]), row["attempt"], row["verdict"])


def mine_failures(
    engine: RolloutEngine,
    tokenizer,
    task: Task,
    instances: Sequence[Instance],
    params: SamplingParams,
    stats: GenerationStats | None = None,
) -> list[Attempt]:
    """Online mining: attempt `instances` with the current policy and keep the failed attempts.

    The returned attempts feed `r3fast.reflect.reflect_retry(..., attempts=...)` directly.
    """
    return [a for a in first_attempts(engine, tokenizer, task, instances, params, stats) if not a.passed]


def failures_as_attempts(failures: Sequence[Failure], task: Task, tokenizer) -> list[Attempt]:
    """Stored failures as first attempts, ready for `reflect_retry(..., attempts=...)`.

    The stored answer is re-tokenised: it only appears in the context of the reflection, which
    is templated from text anyway. Its verdict's reason (the feedback a reflection request may
    quote) is judged again, in one batch.
    """
    for failure in failures:
        if failure.task != task.name:
            raise ValueError(f"failure {failure.instance.id!r} is from task {failure.task!r}, not {task.name!r}")
    instances = [f.instance for f in failures]
    verdicts = judge(task, instances, [f.attempt for f in failures])
    attempts = []
    for failure, verdict in zip(failures, verdicts, strict=True):
        prompt = task.prompt(failure.instance)
        messages, tools, ids = task_chat(tokenizer, prompt)
        completion = Completion(tokenizer.encode(failure.attempt, add_special_tokens=False), [], failure.attempt, "stop")
        attempts.append(Attempt(failure.instance, messages, tools, prompt.task_text, ids, completion, False,
                                failure.verdict, verdict.reason))
    return attempts
