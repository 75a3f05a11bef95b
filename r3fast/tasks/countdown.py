"""Countdown: reach a target with + - * / over given numbers, each used exactly once.

Generated instances are solvable by construction: the generator builds a random expression over
all the sampled numbers (a random binary tree, exact rational arithmetic) and takes its value as
the target when that value is an integer in the preset's range. The expression is kept as
`data["solution"]`; it is never shown to the model. Files in the TinyZero layout (`nums`,
`target`) load too, without solutions: their solvability is the file's business.
"""

from __future__ import annotations

import hashlib
import json
import operator
import os
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

from r3fast.prompts import PromptConfig, chat_messages, countdown_demo_turns, countdown_user_turn, fill
from r3fast.tasks.base import Instance, Prompt, check_pairs
from r3fast.tasks.files import read_rows, require_mapping
from r3fast.verify import Verdict, explain_countdown_batch

INT64_MAX = 2**63 - 1
OPERATORS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}


@dataclass(frozen=True)
class CountdownConfig:
    min_numbers: int = 3               # fewest numbers in an instance
    max_numbers: int = 4               # most numbers in an instance
    number_min: int = 1                # smallest number drawn
    number_max: int = 99               # largest number drawn
    target_min: int = 1                # smallest target kept
    target_max: int = 100              # largest target kept

    def __post_init__(self) -> None:
        if not 1 <= self.min_numbers <= self.max_numbers:
            raise ValueError(f"need 1 <= min_numbers <= max_numbers, got {self.min_numbers}, {self.max_numbers}")
        if not 0 <= self.number_min <= self.number_max:
            raise ValueError(f"need 0 <= number_min <= number_max, got {self.number_min}, {self.number_max}")
        if self.target_min > self.target_max:
            raise ValueError(f"need target_min <= target_max, got {self.target_min}, {self.target_max}")


PRESETS: dict[str, CountdownConfig] = {
    # TinyZero-like: 3-4 numbers in 1-99, targets up to 100.
    "countdown": CountdownConfig(),
    # Small enough that a 135M model gets a learning signal on CPU.
    "countdown-easy": CountdownConfig(min_numbers=2, max_numbers=3, number_min=1, number_max=10, target_min=1, target_max=30),
}


def countdown_id(numbers: Sequence[int], target: int) -> str:
    """Stable id from the content alone: the same task gets the same id from a generator or a file."""
    content = json.dumps({"numbers": list(numbers), "target": target}, sort_keys=True, separators=(",", ":"))
    return "cd-" + hashlib.sha1(content.encode()).hexdigest()[:16]


def countdown_instance(numbers: Sequence[int], target: int, solution: str | None = None) -> Instance:
    data: dict = {"numbers": list(numbers), "target": target}
    if solution is not None:
        data["solution"] = solution
    return Instance(id=countdown_id(numbers, target), data=data)


def _random_expression(rng: random.Random, numbers: Sequence[int]) -> tuple[Fraction, str] | None:
    """Combine all numbers in a random binary tree; None on division by zero."""
    # (value, text, is_leaf): leaves print bare, inner nodes get parentheses when nested.
    items = [(Fraction(n), str(n), True) for n in numbers]
    rng.shuffle(items)
    while len(items) > 1:
        i, j = rng.sample(range(len(items)), 2)
        (a, a_text, a_leaf), (b, b_text, b_leaf) = items[i], items[j]
        op = rng.choice(tuple(OPERATORS))
        if op == "/" and b == 0:
            return None
        value = OPERATORS[op](a, b)
        text = f"{a_text if a_leaf else f'({a_text})'} {op} {b_text if b_leaf else f'({b_text})'}"
        items = [item for k, item in enumerate(items) if k not in (i, j)] + [(value, text, False)]
    value, text, _ = items[0]
    return value, text


def generate_countdown(n: int, seed: int = 0, config: CountdownConfig = PRESETS["countdown"]) -> list[Instance]:
    """`n` distinct solvable instances; the same seed and config give the same list."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(seed)
    instances: list[Instance] = []
    seen: set[str] = set()
    # Draw the size first and stay with it until an instance comes out: bigger sizes are rejected
    # more often, and redrawing the size on every rejection would skew towards small ones. A size
    # that yields nothing new in `patience` draws is spent (small sizes have few distinct tasks).
    sizes = list(range(config.min_numbers, config.max_numbers + 1))
    patience = 2000
    while len(instances) < n and sizes:
        count = rng.choice(sizes)
        for _ in range(patience):
            numbers = [rng.randint(config.number_min, config.number_max) for _ in range(count)]
            result = _random_expression(rng, numbers)
            if result is None:
                continue
            value, solution = result
            if value.denominator != 1 or not config.target_min <= value <= config.target_max:
                continue
            instance = countdown_instance(numbers, int(value), solution)
            if instance.id not in seen:
                seen.add(instance.id)
                instances.append(instance)
                break
        else:
            sizes.remove(count)
    if len(instances) < n:
        raise ValueError(f"countdown config {config} gave only {len(instances)} distinct solvable instances of the {n} asked for")
    return instances


def _check_int(value: object, name: str, where: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{where}: {name} must be an integer, got {value!r}")
    if not minimum <= value <= INT64_MAX:
        raise ValueError(f"{where}: {name} must be in [{minimum}, 2**63 - 1], got {value}")
    return value


def countdown_from_row(row: Mapping, where: str) -> Instance:
    """One TinyZero-layout row (`nums` or `numbers`, and `target`) as an Instance."""
    row = require_mapping(row, where)
    key = "nums" if "nums" in row else "numbers"
    if key not in row or "target" not in row:
        raise ValueError(f"{where}: a Countdown row needs 'nums' (or 'numbers') and 'target', got keys {sorted(row)}")
    numbers = row[key]
    if not isinstance(numbers, (list, tuple)) or not numbers:
        raise ValueError(f"{where}: {key} must be a non-empty list of integers, got {numbers!r}")
    # Literals in an answer are unsigned, so a negative number could never be used.
    numbers = [_check_int(x, key, where, minimum=0) for x in numbers]
    target = _check_int(row["target"], "target", where, minimum=-INT64_MAX)
    return countdown_instance(numbers, target)


def load_countdown(source: str | os.PathLike | Iterable[Mapping]) -> list[Instance]:
    """Instances from a TinyZero-style JSONL/JSON/parquet file or dataset, in file order (duplicates kept)."""
    return [countdown_from_row(row, where) for where, row in read_rows(source)]


def countdown_prompt(instance: Instance, config: PromptConfig) -> Prompt:
    task_text = countdown_user_turn(instance.data["numbers"], instance.data["target"], config)
    turns = countdown_demo_turns(instance.id, len(instance.data["numbers"]), config)
    return Prompt(messages=chat_messages(config, turns, task_text), tools=None, task_text=task_text)


@dataclass
class CountdownTask:
    name: str = "countdown"
    prompt_config: PromptConfig = field(default_factory=PromptConfig)

    def prompt(self, instance: Instance) -> Prompt:
        return countdown_prompt(instance, self.prompt_config)

    def judge_batch(self, instances: Sequence[Instance], texts: Sequence[str | bytes]) -> list[Verdict]:
        check_pairs(instances, texts)
        numbers = [instance.data["numbers"] for instance in instances]
        targets = [instance.data["target"] for instance in instances]
        return explain_countdown_batch(texts, numbers, targets)

    def gold_answer(self, instance: Instance) -> str:
        """The answer a demonstration would give: the generator's solution in the answer format."""
        solution = instance.data.get("solution")
        if solution is None:
            raise ValueError(f"Countdown instance {instance.id} has no solution: only generated instances carry one "
                             f"(files in the TinyZero layout do not)")
        return fill(self.prompt_config.countdown_answer, expression=solution)

    def explain(self, instance: Instance, text: str | bytes) -> Verdict:
        """judge_batch for one text."""
        return self.judge_batch([instance], [text])[0]

    def verify(self, instance: Instance, text: str | bytes) -> bool:
        return self.explain(instance, text).passed
