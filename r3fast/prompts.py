"""Every prompt r3fast shows a model, in one place: task instructions, few-shot demonstrations,
and the turns that follow a failed attempt (reflection and retry, at the end of this file).

Templates are plain strings with `{name}` placeholders filled by `fill` (a single pass, so JSON
braces in a template need no escaping). `PromptConfig` gathers the choices a run can change.

Why demonstrations: SmolLM2-135M-Instruct never writes `<answer>` tags zero-shot (0% on two-number
Countdown, although 26% of its outputs hold a correct equation); one demonstration turn answering
in the exact format gives it the format. A single fixed demonstration gets its operator and even its
numbers copied, so demonstrations rotate per instance over a pool with varied operators, drawn from
those with as many numbers as the task (`rotate_demos`, `match_demo_size`; numbers at COUNTDOWN_INSTRUCTION).

Tools: function-calling prompts carry the tool schemas twice over. `Prompt.tools` holds them in the
OpenAI/transformers form for chat templates that take `tools=`; `Prompt.tools_text` is the same
schemas written out, and the last user turn of `Prompt.messages` starts with it, so the messages
alone work with any template. `chat_template_inputs` is the one place that picks between the two:
with a template that takes tools, it moves the schemas out of the user turn into `tools=`.
Demonstrations always keep their own tools in their user turn: they are self-contained examples.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any


def fill(template: str, **values: Any) -> str:
    """Replace each `{name}` in `template` by `values[name]`; every value must have a placeholder."""
    missing = [name for name in values if "{" + name + "}" not in template]
    if missing:
        raise ValueError(f"prompt template lacks the placeholder(s) {', '.join('{' + m + '}' for m in missing)}: {template!r}")
    return re.sub(r"\{(\w+)\}", lambda m: str(values[m.group(1)]) if m.group(1) in values else m.group(0), template)


# ---------------------------------------------------------------------------
# Task prompts: Countdown
# ---------------------------------------------------------------------------

# Measured on 64 `countdown-easy` tasks with SmolLM2-135M-Instruct, greedy, one demonstration:
# a long instruction ending in "for example <answer> (1 + 2) * 3 </answer>" (222 prompt tokens)
# scored 3%: the model copied the example's or the demonstration's numbers (59 of 64 answers).
# This terse layout (153 tokens, numbers and target on their own lines) with a demonstration
# of the same size scored 14%, and its failures are mostly the right numbers with the wrong value.
COUNTDOWN_INSTRUCTION = (
    "Numbers: {numbers}\nTarget: {target}\nWrite an equation that uses each number exactly once "
    "with +, -, * or / and equals the target. Put it between <answer> and </answer> tags."
)

# The assistant turn of a demonstration: exactly the format the verifier reads.
COUNTDOWN_ANSWER = "<answer> {expression} </answer>"


@dataclass(frozen=True)
class CountdownDemo:
    numbers: tuple[int, ...]           # the demonstration's numbers, in the order shown
    target: int                        # the value its expression reaches
    expression: str                    # the answer, each number used exactly once


# Four demonstrations per task size, each with its own operators, so rotation varies them and a
# demonstration can have as many numbers as the task (`match_demo_size`).
COUNTDOWN_DEMOS: tuple[CountdownDemo, ...] = (
    CountdownDemo((3, 5), 15, "3 * 5"),
    CountdownDemo((4, 9), 13, "4 + 9"),
    CountdownDemo((9, 2), 7, "9 - 2"),
    CountdownDemo((8, 4), 2, "8 / 4"),
    CountdownDemo((9, 2, 4), 11, "9 - 2 + 4"),
    CountdownDemo((8, 2, 3), 12, "8 / 2 * 3"),
    CountdownDemo((7, 2, 6), 20, "7 * 2 + 6"),
    CountdownDemo((5, 1, 4), 24, "(5 + 1) * 4"),
    CountdownDemo((9, 2, 4, 3), 14, "9 - 2 + 4 + 3"),
    CountdownDemo((8, 2, 3, 5), 7, "8 / 2 * 3 - 5"),
    CountdownDemo((7, 2, 6, 1), 21, "7 * 2 + 6 + 1"),
    CountdownDemo((5, 1, 4, 2), 48, "(5 + 1) * 4 * 2"),
)


# ---------------------------------------------------------------------------
# Task prompts: function calling
# ---------------------------------------------------------------------------

# Leads the user turn when the chat template cannot take `tools=`: one JSON schema per line.
TOOLS_TEXT = "You can call the following tools:\n{tools}"

FUNCTION_CALLING_INSTRUCTIONS = {
    "json": (
        "Answer the request below by calling the tools. Reply with only a JSON list of calls, each "
        'written as {"name": "<tool name>", "arguments": {"<argument>": <value>, ...}}, and nothing else.\n\n'
        "Request: {query}"
    ),
    "tool_call": (
        "Answer the request below by calling the tools. Reply with one <tool_call> </tool_call> block per "
        'call, each holding one JSON object {"name": "<tool name>", "arguments": {"<argument>": <value>, ...}}, '
        "and nothing else.\n\nRequest: {query}"
    ),
}


@dataclass(frozen=True)
class FunctionCallingDemo:
    query: str                         # the demonstration's request
    tools: tuple[dict, ...]            # tool schemas ({"name", "description", "parameters"}), shown inline
    calls: tuple[dict, ...]            # the answer: {"name", "arguments"} calls


_TIME_TOOL = {
    "name": "get_current_time",
    "description": "Current local time in a city.",
    "parameters": {
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": "City name."},
            "format": {"type": "string", "enum": ["12h", "24h"], "description": "Clock format."},
        },
        "required": ["city"],
    },
}
_AREA_TOOL = {
    "name": "rectangle_area",
    "description": "Area of a rectangle.",
    "parameters": {
        "type": "object",
        "properties": {
            "width": {"type": "number", "description": "Width in metres."},
            "height": {"type": "number", "description": "Height in metres."},
        },
        "required": ["width", "height"],
    },
}

FUNCTION_CALLING_DEMOS: tuple[FunctionCallingDemo, ...] = (
    FunctionCallingDemo(
        "What time is it in Lisbon right now, on a 24h clock?",
        (_TIME_TOOL, _AREA_TOOL),
        ({"name": "get_current_time", "arguments": {"city": "Lisbon", "format": "24h"}},),
    ),
    FunctionCallingDemo(
        "How big are a 3 by 4.5 metre room and a 2 by 2 metre room?",
        (_AREA_TOOL,),
        (
            {"name": "rectangle_area", "arguments": {"width": 3, "height": 4.5}},
            {"name": "rectangle_area", "arguments": {"width": 2, "height": 2}},
        ),
    ),
)


# ---------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------

TOOL_CALL_FORMATS = tuple(FUNCTION_CALLING_INSTRUCTIONS)


@dataclass(frozen=True)
class PromptConfig:
    system: str | None = None          # a system turn before everything; None keeps the chat template's own
    num_demos: int = 1                 # demonstrations (user + assistant turns) before the task; 0 = zero-shot
    rotate_demos: bool = True          # pick demos from the pool by instance id instead of always the first
    match_demo_size: bool = True       # Countdown: only demos with as many numbers as the task (when the pool has any)
    countdown_instruction: str = COUNTDOWN_INSTRUCTION  # Countdown user turn: {numbers}, {target}
    countdown_answer: str = COUNTDOWN_ANSWER  # a Countdown demo's assistant turn: {expression}
    countdown_demos: tuple[CountdownDemo, ...] = COUNTDOWN_DEMOS  # Countdown demonstration pool
    # how calls are written: "tool_call" (tagged blocks, as Hermes-style templates such as Qwen2.5's) or "json"
    # (one JSON list). SmolLM2-135M on the 137 BFCL simple_python questions: 8 first-try passes vs 2.
    tool_call_format: str = "tool_call"
    function_calling_instruction: str | None = None  # user turn: {query}; None takes the one for tool_call_format
    tools_text: str = TOOLS_TEXT       # the tools written into the user turn: {tools}
    function_calling_demos: tuple[FunctionCallingDemo, ...] = FUNCTION_CALLING_DEMOS  # function-calling demo pool

    def __post_init__(self) -> None:
        if self.num_demos < 0:
            raise ValueError(f"num_demos must be >= 0, got {self.num_demos}")
        if self.tool_call_format not in TOOL_CALL_FORMATS:
            raise ValueError(f"tool_call_format must be one of {TOOL_CALL_FORMATS}, got {self.tool_call_format!r}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> PromptConfig:
        """Build from a parsed config file: demos may be given as plain mappings."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown prompt config key(s) {unknown}; expected some of {sorted(known)}")
        values = dict(values)
        if "countdown_demos" in values:
            values["countdown_demos"] = tuple(
                d if isinstance(d, CountdownDemo) else CountdownDemo(tuple(d["numbers"]), d["target"], d["expression"])
                for d in values["countdown_demos"]
            )
        if "function_calling_demos" in values:
            values["function_calling_demos"] = tuple(
                d if isinstance(d, FunctionCallingDemo)
                else FunctionCallingDemo(d["query"], tuple(d["tools"]), tuple(d["calls"]))
                for d in values["function_calling_demos"]
            )
        return cls(**values)

    @property
    def function_calling_user_template(self) -> str:
        return self.function_calling_instruction or FUNCTION_CALLING_INSTRUCTIONS[self.tool_call_format]


def select_demos(pool: Sequence, count: int, instance_id: str, rotate: bool) -> list:
    """`count` demos from `pool`: the first ones, or with `rotate` a window starting at a place
    fixed by the instance id (crc32, so the choice is the same in every process)."""
    if count > len(pool):
        raise ValueError(f"asked for {count} demonstrations but the pool holds {len(pool)}")
    if count == 0:
        return []
    start = zlib.crc32(instance_id.encode()) % len(pool) if rotate else 0
    return [pool[(start + i) % len(pool)] for i in range(count)]


def chat_messages(config: PromptConfig, turns: Sequence[tuple[str, str]], last_user: str) -> list[dict[str, str]]:
    """The conversation: optional system turn, demonstration (user, assistant) pairs, the task's user turn."""
    messages = [{"role": "system", "content": config.system}] if config.system is not None else []
    for user, assistant in turns:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    messages.append({"role": "user", "content": last_user})
    return messages


def countdown_user_turn(numbers: Sequence[int], target: int, config: PromptConfig) -> str:
    return fill(config.countdown_instruction, numbers=list(numbers), target=target)


def countdown_demo_pool(size: int, config: PromptConfig) -> tuple[CountdownDemo, ...]:
    """The demonstrations a task with `size` numbers draws from."""
    if config.match_demo_size:
        same = tuple(d for d in config.countdown_demos if len(d.numbers) == size)
        if len(same) >= config.num_demos:
            return same
    return config.countdown_demos


def countdown_demo_turns(instance_id: str, size: int, config: PromptConfig) -> list[tuple[str, str]]:
    demos = select_demos(countdown_demo_pool(size, config), config.num_demos, instance_id, config.rotate_demos)
    return [
        (countdown_user_turn(d.numbers, d.target, config), fill(config.countdown_answer, expression=d.expression))
        for d in demos
    ]


def render_tools_text(tools: Sequence[Mapping], config: PromptConfig) -> str:
    """The tools as the model reads them in a user turn: one compact JSON schema per line."""
    lines = "\n".join(json.dumps(dict(tool), ensure_ascii=False) for tool in tools)
    return fill(config.tools_text, tools=lines)


def render_calls(calls: Sequence[Mapping], tool_call_format: str) -> str:
    """Calls written the way the function-calling instruction asks for them."""
    if tool_call_format == "tool_call":
        return "\n".join(f"<tool_call>\n{json.dumps(dict(c), ensure_ascii=False)}\n</tool_call>" for c in calls)
    return json.dumps([dict(c) for c in calls], ensure_ascii=False)


def openai_tools(tools: Sequence[Mapping]) -> list[dict]:
    """The `tools=` form chat templates expect (what transformers builds from a Python function)."""
    return [{"type": "function", "function": dict(tool)} for tool in tools]


def tools_then_task(tools_text: str, task_text: str) -> str:
    """A function-calling user turn: the tools written out, then the instruction and request."""
    return f"{tools_text}\n\n{task_text}"


def function_calling_user_turn(query: str, config: PromptConfig) -> str:
    return fill(config.function_calling_user_template, query=query)


def function_calling_demo_turns(instance_id: str, config: PromptConfig) -> list[tuple[str, str]]:
    demos = select_demos(config.function_calling_demos, config.num_demos, instance_id, config.rotate_demos)
    return [
        (
            tools_then_task(render_tools_text(d.tools, config), function_calling_user_turn(d.query, config)),
            render_calls(d.calls, config.tool_call_format),
        )
        for d in demos
    ]


def template_takes_tools(chat_template: str | None) -> bool:
    """Whether a chat template renders a `tools` variable (Qwen2.5 and Llama-3.1 do, SmolLM2 does not)."""
    return bool(chat_template) and re.search(r"\btools\b", chat_template) is not None


def chat_ids(tokenizer, messages: Sequence[Mapping[str, str]], tools: list[dict] | None = None) -> list[int]:
    """Token ids of `messages` under the tokenizer's chat template, ending with the generation prompt.

    Rendered to text first and encoded without extra special tokens: templates write their own
    BOS, and encoding the text is the same path for every tokenizer class.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("the tokenizer has no chat_template: r3fast prompts are chat conversations")
    kwargs = {"tools": tools} if tools else {}
    text = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False, **kwargs)
    return tokenizer.encode(text, add_special_tokens=False)


def task_chat(tokenizer, prompt: Any) -> tuple[list[dict[str, str]], list[dict] | None, list[int]]:
    """(messages, tools, token ids) of a task's `Prompt` under the tokenizer's chat template: the one
    templating of a first attempt, whichever stage makes it."""
    messages, tools = chat_template_inputs(prompt, template_takes_tools(getattr(tokenizer, "chat_template", None)))
    return messages, tools, chat_ids(tokenizer, messages, tools)


def chat_template_inputs(prompt: Any, takes_tools: bool) -> tuple[list[dict[str, str]], list[dict] | None]:
    """(messages, tools) of a `r3fast.tasks.Prompt` for `tokenizer.apply_chat_template(messages, tools=tools)`.

    Without tools support, or without tools, the messages already carry everything. With it, the
    schemas leave the last user turn and go to `tools=`, so the model does not read them twice.
    """
    if not (takes_tools and prompt.tools):
        return prompt.messages, None
    last = prompt.messages[-1]
    lead = tools_then_task(prompt.tools_text, "")
    if last.get("role") != "user" or not last["content"].startswith(lead):
        raise ValueError("prompt's last turn must be a user turn starting with its tools_text")
    moved = {**last, "content": last["content"][len(lead):]}
    return [*prompt.messages[:-1], moved], prompt.tools


# ---------------------------------------------------------------------------
# Reflection and retry
# The turns that follow a failed attempt: the request for a self-reflection, and the retry
# request that restates the task (Prompt.task_text) and its answer format.
# ---------------------------------------------------------------------------

# The paper's wording. Asked for right after the failed attempt, as a user turn.
REFLECTION_REQUEST = (
    "You tried performing the task, but failed to produce the correct answer. Reflect on what went "
    "wrong and write a short explanation that will help you succeed next time."
)

# After a first-try warm-up, SmolLM2-135M answers every request in tags: its "reflections" were the
# failed answer again, and the retry copied them. This request asks for a diagnosis and a plan only.
DIAGNOSIS_REFLECTION_REQUEST = (
    "That answer is wrong: {feedback}. Do not write an answer or any tags. In one or two sentences, say "
    "what went wrong and what to try instead."
)

# The verifier's reason quoted, then the paper's ask (the countdown-cpu preset's request).
FEEDBACK_REFLECTION_REQUEST = (
    "That answer is wrong: {feedback}. In one or two sentences, say what went wrong and how to fix it."
)

# Reflection requests a config may name instead of writing one out (`task.reflection_request=diagnose`).
REFLECTION_REQUESTS = {"paper": REFLECTION_REQUEST, "feedback": FEEDBACK_REFLECTION_REQUEST,
                       "diagnose": DIAGNOSIS_REFLECTION_REQUEST}

# A retry that only said "try again" scored 0% with SmolLM2-135M (no answer tags at all), so the
# retry turn restates the whole task, answer format included: {task} is Prompt.task_text.
RETRY_REQUEST = "Use your reflection and try the task again.\n\n{task}"

# The "fresh" layout's retry turn, which replaces the task's user turn after the demonstrations:
# the failed {attempt} and the {reflection} are quoted, then the {task} is asked again.
FRESH_RETRY_REQUEST = "Your previous answer {attempt} was wrong. Your note on it: {reflection}\n\n{task}"

# The fresh retry that does not quote the failed answer (`quote_attempt=False`): retries that see
# the attempt copied it (96% of them, SmolLM2-135M after 30 first-try warm-up steps).
HINT_RETRY_REQUEST = "Hint: {reflection}\n\n{task}"

# The control: the same retry turn with the reflection removed, so `reflection_lift` measures the
# reflection and not the second look. {feedback} is quoted when the reflection request quotes it
# (the reflected retry saw the feedback through the reflection's context; the control gets it here).
CONTROL_REQUESTS = {  # (retry_layout, quote_attempt, feedback quoted) -> retry turn without reflection
    ("continue", True, False): "That answer is wrong. Try the task again.\n\n{task}",
    ("continue", True, True): "That answer is wrong: {feedback}. Try the task again.\n\n{task}",
    ("fresh", True, False): "Your previous answer {attempt} was wrong.\n\n{task}",
    ("fresh", True, True): "Your previous answer {attempt} was wrong: {feedback}.\n\n{task}",
    ("fresh", False, False): "{task}",
    ("fresh", False, True): "Your previous answer was wrong: {feedback}.\n\n{task}",
}

# How the retry sees the reflection:
#   continue  the conversation goes on: task, attempt, reflection request, reflection, retry request
#   fresh     the task's own prompt (demonstrations included) with the attempt and the reflection
#             quoted in its last user turn. With SmolLM2-135M, a retry that continues the chat copies
#             the reflection it has just written (95 of 96 retries gave no answer tags); a fresh
#             prompt looks like the first attempt, which answers in the format.
RETRY_LAYOUTS = ("continue", "fresh")


@dataclass(frozen=True)
class ReflectionPrompts:
    reflection_request: str = REFLECTION_REQUEST  # user turn after a failed attempt, or a REFLECTION_REQUESTS name; may quote {feedback}
    retry_request: str | None = None   # retry user turn ({task}; fresh: also {attempt}, {reflection}); None: the layout's default
    retry_layout: str = "continue"     # "continue" the chat, or a "fresh" task prompt quoting attempt and reflection
    quote_attempt: bool = True         # fresh: the retry (and the control) quote the failed answer

    def __post_init__(self) -> None:
        # a name stands for its template, so configs can say `diagnose` (frozen: set through object)
        object.__setattr__(self, "reflection_request", REFLECTION_REQUESTS.get(self.reflection_request, self.reflection_request))
        if self.retry_layout not in RETRY_LAYOUTS:
            raise ValueError(f"retry_layout must be one of {RETRY_LAYOUTS}, got {self.retry_layout!r}")
        if "{task}" not in self.retry_template:
            raise ValueError(f"retry_request must restate the task with a {{task}} placeholder: {self.retry_template!r}")
        if self.retry_layout == "continue" and ("{attempt}" in self.retry_template or "{reflection}" in self.retry_template):
            raise ValueError("{attempt} and {reflection} belong to the fresh retry layout; the continued chat already holds them")
        if self.retry_layout == "continue" and not self.quote_attempt:
            raise ValueError("quote_attempt=False needs retry_layout='fresh': the continued chat holds the attempt")
        if not self.quote_attempt and "{attempt}" in self.retry_template:
            raise ValueError(f"quote_attempt=False, yet the retry request quotes {{attempt}}: {self.retry_template!r}")

    @property
    def retry_template(self) -> str:
        if self.retry_request is not None:
            return self.retry_request
        if self.retry_layout == "continue":
            return RETRY_REQUEST
        return FRESH_RETRY_REQUEST if self.quote_attempt else HINT_RETRY_REQUEST

    @property
    def control_template(self) -> str:
        """The retry turn without reflection (see CONTROL_REQUESTS)."""
        return CONTROL_REQUESTS[(self.retry_layout, self.quote_attempt, "{feedback}" in self.reflection_request)]


def fill_present(template: str, **values: Any) -> str:
    """`fill` with those of `values` whose placeholder the template has (optional placeholders)."""
    return fill(template, **{k: v for k, v in values.items() if "{" + k + "}" in template})


def reflection_turn(prompts: ReflectionPrompts, feedback: str = "") -> dict[str, str]:
    """The reflection request; `feedback` (why the verifier failed the attempt) fills a {feedback} placeholder."""
    return {"role": "user", "content": fill_present(prompts.reflection_request, feedback=feedback)}


def retry_turn(task_text: str, prompts: ReflectionPrompts, attempt: str = "", reflection: str | None = "",
               feedback: str = "") -> dict[str, str]:
    """The retry's user turn; `attempt` and `reflection` fill the fresh layout's placeholders.
    `reflection=None` gives the control's turn: the same retry without a reflection."""
    template = prompts.control_template if reflection is None else prompts.retry_template
    return {"role": "user", "content": fill_present(template, task=task_text, attempt=attempt.strip(),
                                                    reflection=(reflection or "").strip(), feedback=feedback)}


# The tags a task's answer is written between: what a reflection may be kept from writing
# (`rollout.reflection_answer_tags`), so that it stays a reflection and not a second answer.
ANSWER_TAGS = {"countdown": ("<answer>", "</answer>"), "function_calling": ("<tool_call>", "</tool_call>")}


def answer_tags(task_name: str) -> tuple[str, ...]:
    """ANSWER_TAGS of a task name (countdown-easy -> countdown's; bfcl, fncall-synthetic -> function calling's)."""
    family = "countdown" if task_name.startswith("countdown") else "function_calling"
    return ANSWER_TAGS[family]
