"""Function calling in the xLAM/APIGen layout: a `query`, the `tools` it may call, and the gold
`answers` (a list of {"name", "arguments"} calls; tools and answers are JSON strings in the files).

Tools are kept in one form, JSON-schema parameters (`{"type": "object", "properties", "required"}`),
which is what chat templates render and what the BFCL importer produces. xLAM's flat parameter
maps (`{"city": {"type": "str, optional", "description": ...}}`) are converted on load.

Generated instances (task `fncall-synthetic`) come from r3fast.tasks.fncall_generator.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from r3fast.prompts import (
    PromptConfig,
    chat_messages,
    function_calling_demo_turns,
    function_calling_user_turn,
    openai_tools,
    render_calls,
    render_tools_text,
    tools_then_task,
)
from r3fast.tasks.base import Instance, Prompt, check_pairs
from r3fast.tasks.files import read_rows, require_mapping
from r3fast.verify import FunctionCallGold, Verdict, explain_function_calls_batch, prepare_gold
from r3fast.verify.feedback import function_call_feedback

# xLAM writes Python type names; JSON schema wants its own.
_PYTHON_TO_JSON_TYPES = {
    "str": "string", "int": "integer", "float": "number", "bool": "boolean",
    "list": "array", "tuple": "array", "dict": "object", "set": "array",
}


def _json_type(python_type: str) -> str:
    """'List[int]' -> 'array', 'str' -> 'string'; names it does not know stay as written."""
    base = re.split(r"[\[,\s]", python_type.strip(), maxsplit=1)[0]
    return _PYTHON_TO_JSON_TYPES.get(base.lower(), python_type.strip())


def _schema_types(schema: Any) -> Any:
    """A JSON schema with Python type names ('dict', 'float', as BFCL writes them) renamed, recursively."""
    if not isinstance(schema, Mapping):
        return schema
    out = dict(schema)
    if isinstance(out.get("type"), str):
        out["type"] = _json_type(out["type"])
    if isinstance(out.get("properties"), Mapping):
        out["properties"] = {k: _schema_types(v) for k, v in out["properties"].items()}
    if "items" in out:
        out["items"] = [_schema_types(v) for v in out["items"]] if isinstance(out["items"], list) else _schema_types(out["items"])
    return out


def _flat_parameters_to_schema(params: Mapping, where: str) -> dict:
    properties: dict[str, dict] = {}
    required: list[str] = []
    for pname, spec in params.items():
        if not isinstance(spec, Mapping):
            raise ValueError(f"{where}: parameter {pname!r} must be an object, got {spec!r}")
        prop = {k: v for k, v in spec.items() if k != "type"}
        type_text = spec.get("type", "")
        optional = isinstance(type_text, str) and type_text.replace(" ", "").endswith(",optional")
        if isinstance(type_text, str) and type_text:
            prop = {"type": _json_type(type_text.rsplit(",", 1)[0] if optional else type_text), **prop}
        properties[pname] = prop
        if not optional:
            required.append(pname)
    return {"type": "object", "properties": properties, "required": required}


def normalize_tool(tool: Any, where: str) -> dict:
    """A tool as {"name", "description", "parameters": JSON schema}, from xLAM or JSON-schema form."""
    if isinstance(tool, Mapping) and isinstance(tool.get("function"), Mapping):
        tool = tool["function"]  # the OpenAI wrapper {"type": "function", "function": {...}}
    if not isinstance(tool, Mapping) or not isinstance(tool.get("name"), str) or not tool["name"]:
        raise ValueError(f"{where}: each tool must be an object with a non-empty 'name', got {tool!r}")
    params = tool.get("parameters", {})
    if not isinstance(params, Mapping):
        raise ValueError(f"{where}: tool {tool['name']!r} parameters must be an object, got {params!r}")
    # A JSON schema says {"type": "object", ...}; a flat xLAM map's values are all objects.
    schema = _schema_types(params) if isinstance(params.get("type"), str) else _flat_parameters_to_schema(params, where)
    return {"name": tool["name"], "description": str(tool.get("description", "")), "parameters": schema}


def _parse_json_field(row: Mapping, key: str, where: str) -> Any:
    if key not in row:
        raise ValueError(f"{where}: missing field {key!r} (an xLAM row has 'query', 'tools', 'answers')")
    value = row[key]
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}: field {key!r} is not valid JSON ({exc.msg} at column {exc.colno})") from None
    return value


def _check_calls(calls: Any, tool_names: set[str], where: str) -> list[dict]:
    if not isinstance(calls, list) or not calls:
        raise ValueError(f"{where}: 'answers' must be a non-empty list of calls, got {calls!r}")
    checked = []
    for call in calls:
        if not (isinstance(call, Mapping) and set(call) == {"name", "arguments"}
                and isinstance(call["name"], str) and isinstance(call["arguments"], Mapping)):
            raise ValueError(f"{where}: each answer must be {{\"name\": str, \"arguments\": object}}, got {call!r}")
        if call["name"] not in tool_names:
            raise ValueError(f"{where}: answer calls {call['name']!r}, which is not among the tools {sorted(tool_names)}")
        checked.append({"name": call["name"], "arguments": dict(call["arguments"])})
    return checked


def function_calling_id(query: str, tools: Sequence[Mapping], answers: Sequence[Mapping]) -> str:
    content = json.dumps({"query": query, "tools": list(tools), "answers": list(answers)},
                         sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "fc-" + hashlib.sha1(content.encode()).hexdigest()[:16]


def function_calling_instance(query: str, tools: Sequence[Any], answers: Sequence[Any],
                              where: str = "instance", **extra: Any) -> Instance:
    """Validated instance; `extra` (e.g. source_id) is kept in data but not in the id."""
    if not isinstance(query, str) or not query.strip():
        raise ValueError(f"{where}: 'query' must be a non-empty string, got {query!r}")
    if not isinstance(tools, (list, tuple)) or not tools:
        raise ValueError(f"{where}: 'tools' must be a non-empty list, got {tools!r}")
    tools = [normalize_tool(t, where) for t in tools]
    answers = _check_calls(list(answers) if isinstance(answers, tuple) else answers, {t["name"] for t in tools}, where)
    data = {"query": query, "tools": tools, "answers": answers, **extra}
    return Instance(id=function_calling_id(query, tools, answers), data=data)


def function_calling_from_row(row: Any, where: str) -> Instance:
    row = require_mapping(row, where)
    if "query" not in row:
        raise ValueError(f"{where}: missing field 'query' (an xLAM row has 'query', 'tools', 'answers')")
    tools = _parse_json_field(row, "tools", where)
    answers = _parse_json_field(row, "answers", where)
    extra = {"source_id": row["id"]} if "id" in row else {}
    return function_calling_instance(row["query"], tools, answers, where, **extra)


def load_function_calling(source: str | os.PathLike | Iterable[Mapping]) -> list[Instance]:
    """Instances from an xLAM file (JSON array, JSONL, parquet) or a `datasets.Dataset`, in order."""
    return [function_calling_from_row(row, where) for where, row in read_rows(source)]


def to_xlam_row(instance: Instance) -> dict:
    """The instance in the file layout (tools and answers as JSON strings), e.g. for a failure dataset."""
    return {
        "id": instance.id,
        "query": instance.data["query"],
        "tools": json.dumps(instance.data["tools"], ensure_ascii=False),
        "answers": json.dumps(instance.data["answers"], ensure_ascii=False),
    }


def function_calling_prompt(instance: Instance, config: PromptConfig) -> Prompt:
    """Tools written into the last user turn and given as `tools` too (r3fast.prompts says which is used)."""
    task_text = function_calling_user_turn(instance.data["query"], config)
    tools_text = render_tools_text(instance.data["tools"], config)
    turns = function_calling_demo_turns(instance.id, config)
    return Prompt(
        messages=chat_messages(config, turns, tools_then_task(tools_text, task_text)),
        tools=openai_tools(instance.data["tools"]),
        task_text=task_text,
        tools_text=tools_text,
    )


# Parsed golds a task keeps: far more than the instances of a few training steps or an evaluation chunk.
PREPARED_GOLDS = 4096


@dataclass
class FunctionCallingTask:
    name: str = "function_calling"
    prompt_config: PromptConfig = field(default_factory=PromptConfig)
    # Each instance's gold, parsed once and reused by every batch that checks it (its attempts, reflections'
    # retries, the control). Keyed by instance id, which is derived from the content (answers included).
    # Bounded: a generated task streams fresh instances for the whole run, and a gold is reused only within
    # the few steps its instance lives in; the oldest entries go first.
    _golds: dict[str, FunctionCallGold] = field(default_factory=dict, init=False, repr=False, compare=False)

    def prompt(self, instance: Instance) -> Prompt:
        return function_calling_prompt(instance, self.prompt_config)

    def _gold(self, instance: Instance) -> FunctionCallGold:
        gold = self._golds.get(instance.id)
        if gold is None:
            if len(self._golds) >= PREPARED_GOLDS:
                del self._golds[next(iter(self._golds))]  # dicts keep insertion order: the oldest
            gold = self._golds[instance.id] = prepare_gold(instance.data["answers"])
        return gold

    def judge_batch(self, instances: Sequence[Instance], texts: Sequence[str | bytes]) -> list[Verdict]:
        """The verifier's verdicts; a failure's reason is worded from the tool schemas (r3fast.verify.feedback)."""
        check_pairs(instances, texts)
        verdicts = explain_function_calls_batch(texts, [self._gold(instance) for instance in instances])
        fmt = self.prompt_config.tool_call_format
        return [
            v if v.passed else Verdict(v.code, function_call_feedback(
                text, v.code, instance.data["answers"], instance.data["tools"], fmt))
            for v, instance, text in zip(verdicts, instances, texts, strict=True)
        ]

    def gold_answer(self, instance: Instance) -> str:
        """The gold calls written as the prompt asks for them (the first acceptable answer's)."""
        return render_calls(instance.data["answers"], self.prompt_config.tool_call_format)

    def explain(self, instance: Instance, text: str | bytes) -> Verdict:
        """judge_batch for one text."""
        return self.judge_batch([instance], [text])[0]

    def verify(self, instance: Instance, text: str | bytes) -> bool:
        return self.explain(instance, text).passed

    def __getstate__(self) -> dict[str, Any]:
        # Parsed golds are native objects that do not pickle; a copy of the task parses its own again.
        return {**self.__dict__, "_golds": {}}
