"""Berkeley Function Calling Leaderboard (BFCL) single-turn data, as xLAM function-calling instances.

The data ships in the `bfcl-eval` package (`pip install --no-deps bfcl-eval`): questions in
`bfcl_eval/data/BFCL_v<N>_<category>.json`, answers in `bfcl_eval/data/possible_answer/` under the
same name, both JSON lines. The package is located with `importlib.util.find_spec`, never imported
(importing it pulls in its whole evaluation stack).

BFCL lists, per argument, every acceptable value ("" meaning "may be left out"), and its checker
also normalises strings. r3fast's verifier compares calls exactly against one gold answer, so an
instance is converted only when each argument has exactly one acceptable outcome:
    [v]              -> the argument is v
    [v, w, ...]      -> kept if all are equal as JSON values (5 and 5.0), else SKIPPED
    [""]             -> the argument is left out
    ["", v, ...]     -> SKIPPED: leaving it out and setting it would both be right
Dict-valued arguments hold such lists per key and follow the same rule, recursively. Questions
that are not exactly one user message (some live entries add a system turn) are skipped too.
`import_bfcl` returns the instances with the count skipped for each reason. `bfcl_held_out` collects
every function name and user request of the raw questions, converted or not, for
r3fast.tasks.heldout.check_disjoint: training data must share none of them. On bfcl-eval
2026.3.23 this converts 137 of 400 simple_python questions (34%), 64/200 multiple, 78/200
parallel, 49/200 parallel_multiple, and 881 of 2351 (37%) over all eight categories.
"""

from __future__ import annotations

import importlib.util
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from r3fast.tasks.base import Instance
from r3fast.tasks.files import MissingDependencyError, read_rows, require_mapping
from r3fast.tasks.function_calling import function_calling_instance
from r3fast.tasks.heldout import HeldOut, normalise_query

# Single-turn categories whose answers are function calls (not Java/JavaScript source, not multi-turn).
BFCL_CATEGORIES = (
    "simple_python", "multiple", "parallel", "parallel_multiple",
    "live_simple", "live_multiple", "live_parallel", "live_parallel_multiple",
)

SKIP_OPTIONAL = "an optional argument may be left out or set"
SKIP_SEVERAL = "an argument has several acceptable values"
SKIP_NOT_ONE_USER_TURN = "the question is not one user message"
SKIP_NO_ANSWER = "no possible answer"
SKIP_MALFORMED = "malformed possible answer"


@dataclass
class BfclImport:
    instances: list[Instance]          # converted instances, in file order
    total: int                         # questions read
    skipped: dict[str, int] = field(default_factory=dict)  # skip reason -> count

    @property
    def converted_fraction(self) -> float:
        return len(self.instances) / self.total if self.total else 0.0


def bfcl_data_dir() -> Path:
    spec = importlib.util.find_spec("bfcl_eval")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError("BFCL data needs the bfcl-eval package: pip install --no-deps bfcl-eval")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def bfcl_files(category: str, data_dir: Path) -> tuple[Path, Path]:
    """(questions, possible answers) of the newest BFCL version present for `category`."""
    if category not in BFCL_CATEGORIES:
        raise ValueError(f"unknown BFCL category {category!r}; expected one of {BFCL_CATEGORIES}")
    pattern = re.compile(rf"BFCL_v(\d+)_{re.escape(category)}\.json")
    found = sorted(
        (int(m.group(1)), p) for p in data_dir.glob("BFCL_v*.json") if (m := pattern.fullmatch(p.name))
    )
    if not found:
        raise FileNotFoundError(f"no BFCL_v<N>_{category}.json under {data_dir}")
    questions = found[-1][1]
    answers = data_dir / "possible_answer" / questions.name
    if not answers.is_file():
        raise FileNotFoundError(f"BFCL answers not found: {answers}")
    return questions, answers


class _Skip(Exception):
    """The instance cannot be given one gold answer; the message is the reason counted."""


_LEFT_OUT = object()


def _json_key(value: Any) -> Any:
    """Equal keys iff the verifier finds the values equal: numbers by value, booleans apart from numbers."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return (type(value).__name__, value)
    if isinstance(value, (int, float)):
        return ("number", Fraction(value))
    if isinstance(value, list):
        return ("array", tuple(_json_key(v) for v in value))
    if isinstance(value, dict):
        return ("object", frozenset((k, _json_key(v)) for k, v in value.items()))
    raise _Skip(f"unexpected value type {type(value).__name__}")


def _one_value(acceptable: Any) -> Any:
    """The single gold value of an argument, `_LEFT_OUT`, or _Skip."""
    if not isinstance(acceptable, list) or not acceptable:  # [] admits nothing, not even leaving out
        raise _Skip(SKIP_MALFORMED)
    values = [_one_dict(v) if isinstance(v, dict) else v for v in acceptable if v != ""]
    may_be_left_out = len(values) < len(acceptable)
    distinct = {_json_key(v): v for v in values}
    if not distinct:
        return _LEFT_OUT
    if may_be_left_out:
        raise _Skip(SKIP_OPTIONAL)
    if len(distinct) > 1:
        raise _Skip(SKIP_SEVERAL)
    return values[0]


def _one_dict(acceptable_by_key: dict) -> dict:
    chosen = {k: _one_value(v) for k, v in acceptable_by_key.items()}
    return {k: v for k, v in chosen.items() if v is not _LEFT_OUT}


def _gold_calls(ground_truth: Any) -> list[dict]:
    if not isinstance(ground_truth, list) or not ground_truth:
        raise _Skip(SKIP_NO_ANSWER)
    calls = []
    for entry in ground_truth:
        if not isinstance(entry, dict) or len(entry) != 1:
            raise _Skip(SKIP_MALFORMED)
        ((name, arguments),) = entry.items()
        if not isinstance(arguments, dict):
            raise _Skip(SKIP_MALFORMED)
        calls.append({"name": name, "arguments": _one_dict(arguments)})
    return calls


def _user_query(question: Any) -> str:
    # Single-turn: [[{"role": "user", "content": ...}]]
    if (isinstance(question, list) and len(question) == 1 and isinstance(question[0], list)
            and len(question[0]) == 1 and isinstance(question[0][0], dict)
            and question[0][0].get("role") == "user" and isinstance(question[0][0].get("content"), str)):
        return question[0][0]["content"]
    raise _Skip(SKIP_NOT_ONE_USER_TURN)


def import_bfcl(categories: str | Sequence[str] = ("simple_python",), data_dir: str | Path | None = None) -> BfclImport:
    """Convert the BFCL questions of `categories` that have one gold answer (see the module doc)."""
    if isinstance(categories, str):
        categories = (categories,)
    root = Path(data_dir) if data_dir is not None else bfcl_data_dir()
    instances: list[Instance] = []
    skipped: Counter[str] = Counter()
    total = 0
    for category in categories:
        questions_path, answers_path = bfcl_files(category, root)
        answers = {}
        for where, row in read_rows(answers_path):
            row = require_mapping(row, where)
            if "id" not in row or "ground_truth" not in row:
                raise ValueError(f"{where}: a BFCL answer needs 'id' and 'ground_truth', got keys {sorted(row)}")
            answers[row["id"]] = row["ground_truth"]
        for where, row in read_rows(questions_path):
            row = require_mapping(row, where)
            if "id" not in row or "question" not in row or "function" not in row:
                raise ValueError(f"{where}: a BFCL question needs 'id', 'question', 'function', got keys {sorted(row)}")
            total += 1
            try:
                query = _user_query(row["question"])
                calls = _gold_calls(answers.get(row["id"]))
            except _Skip as skip:
                skipped[str(skip)] += 1
                continue
            functions = row["function"] if isinstance(row["function"], list) else [row["function"]]
            instances.append(function_calling_instance(
                query, functions, calls, where, source_id=row["id"], category=category,
            ))
    return BfclImport(instances=instances, total=total, skipped=dict(skipped))


def load_bfcl(categories: str | Sequence[str] = ("simple_python",), data_dir: str | Path | None = None) -> list[Instance]:
    return import_bfcl(categories, data_dir).instances


def _user_turns(question: Any) -> list[str]:
    """Every user message of a question, however many turns it has."""
    turns = question if isinstance(question, list) else [question]
    messages = [m for t in turns for m in (t if isinstance(t, list) else [t])]
    return [m["content"] for m in messages
            if isinstance(m, dict) and m.get("role") == "user" and isinstance(m.get("content"), str)]


def bfcl_held_out(categories: str | Sequence[str] = BFCL_CATEGORIES, data_dir: str | Path | None = None) -> HeldOut:
    """The function names and user requests of every BFCL question in `categories`, converted or not."""
    if isinstance(categories, str):
        categories = (categories,)
    root = Path(data_dir) if data_dir is not None else bfcl_data_dir()
    names: set[str] = set()
    queries: set[str] = set()
    for category in categories:
        questions_path, _ = bfcl_files(category, root)
        for where, row in read_rows(questions_path):
            row = require_mapping(row, where)
            functions = row.get("function", [])
            for function in functions if isinstance(functions, list) else [functions]:
                if isinstance(function, dict) and isinstance(function.get("name"), str):
                    names.add(function["name"])
            queries.update(normalise_query(q) for q in _user_turns(row.get("question")))
    return HeldOut(function_names=frozenset(names), queries=frozenset(queries))
