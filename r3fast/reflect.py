"""Reflect, retry, reward: the loop that turns failed attempts into training episodes.

    result = reflect_retry(engine, tokenizer, task, instances, ReflectConfig(group_size=4))
    result.episodes            # one per reflection, advantages set (0 in flat groups): what the trainer trains on

Each step is a plain function over plain data, so a trainer or an evaluation can run any prefix:

1. `first_attempts`: template each task prompt with the tokenizer's chat template, generate, verify.
2. `sample_reflections`: for failures only, continue the chat with the failed attempt (assistant)
   and the reflection request (user), and sample G reflections: one GRPO group per failure.
3. `retry_after_reflections`: continue each chat with its reflection (assistant) and a retry
   request that restates the task, sample k retries per reflection (one request with n=k, so
   engines share the context's prefill), verify: the reward is the fraction that pass.
   `retry_without_reflection` is the control: the same retry turn with the reflection left out.
4. `build_episodes`: `context_ids` is exactly the prompt the engine was given for the reflection
   and `completion_ids` exactly the reflection tokens it sampled, so the loss sees what the model
   saw and its mask covers nothing but the reflection (no re-tokenisation of its text).
5. `assign_advantages` (r3fast.advantages): groups whose rewards are all equal carry no signal:
   their advantages are exactly 0, and they still count in the loss's normalisation, as in TRL.

Every verification goes through `judge`: one `task.judge_batch` call per step.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from r3fast.advantages import assign_advantages
from r3fast.episode import Episode
from r3fast.prompts import ReflectionPrompts, answer_tags, chat_ids, reflection_turn, retry_turn, task_chat
from r3fast.rollout.base import Completion, GenerationStats, RolloutEngine, SamplingParams, generate_counted
from r3fast.tasks.base import Instance, Task
from r3fast.timing import PhaseTimer, timed
from r3fast.train.config import RolloutConfig, TaskConfig
from r3fast.verify.verdict import Verdict

_ROLLOUT = RolloutConfig()  # the config tree is the one source of the rollout's defaults


@dataclass
class ReflectConfig:
    """What reflect_retry samples: the `rollout` keys of the config tree (same names, same defaults,
    same meaning: see r3fast/train/config.py), with the reflection prompts and the advantage scaling."""

    group_size: int = _ROLLOUT.group_size
    attempt_max_new_tokens: int = _ROLLOUT.attempt_max_new_tokens
    attempt_temperature: float = _ROLLOUT.attempt_temperature
    reflection_max_new_tokens: int = _ROLLOUT.reflection_max_new_tokens
    reflection_temperature: float = _ROLLOUT.reflection_temperature
    retry_temperature: float = _ROLLOUT.retry_temperature
    retries_per_reflection: int = _ROLLOUT.retries_per_reflection
    reflection_bad_words: tuple[str, ...] = ()  # strings a reflection may not contain (a task's answer tags)
    reflection_stop: tuple[str, ...] = ()  # strings a reflection ends at
    top_p: float = _ROLLOUT.top_p
    scale_rewards: bool = True             # divide advantages by the group std (False: Dr. GRPO)
    seed: int = 0                          # sampling seed; each step derives its own from it
    prompts: ReflectionPrompts = field(default_factory=ReflectionPrompts)  # reflection and retry turns

    @classmethod
    def from_config(cls, rollout: RolloutConfig, task: TaskConfig, *, scale_rewards: bool, seed: int) -> ReflectConfig:
        """The config tree's `rollout` and `task` sections as reflect_retry takes them: the one mapping."""
        prompts = ReflectionPrompts(retry_layout=task.retry_layout, quote_attempt=task.quote_attempt,
                                    **{k: v for k, v in (("reflection_request", task.reflection_request),
                                                         ("retry_request", task.retry_request)) if v})
        return cls(
            group_size=rollout.group_size, attempt_max_new_tokens=rollout.attempt_max_new_tokens,
            attempt_temperature=rollout.attempt_temperature, reflection_max_new_tokens=rollout.reflection_max_new_tokens,
            reflection_temperature=rollout.reflection_temperature, retry_temperature=rollout.retry_temperature,
            top_p=rollout.top_p, retries_per_reflection=rollout.retries_per_reflection,
            **reflection_tag_options(rollout.reflection_answer_tags, task.name),
            scale_rewards=scale_rewards, seed=seed, prompts=prompts,
        )

    def __post_init__(self) -> None:
        if self.group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {self.group_size}")
        if self.retries_per_reflection < 1:
            raise ValueError(f"retries_per_reflection must be >= 1, got {self.retries_per_reflection}")
        for name in ("attempt_temperature", "reflection_temperature", "retry_temperature"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    def attempt_params(self, seed_offset: int = 0) -> SamplingParams:
        return SamplingParams(self.attempt_max_new_tokens, self.attempt_temperature, self.top_p, 1, (), self.seed + seed_offset)

    def reflection_params(self) -> SamplingParams:
        return SamplingParams(self.reflection_max_new_tokens, self.reflection_temperature, self.top_p, self.group_size,
                              tuple(self.reflection_stop), self.seed + 1, tuple(self.reflection_bad_words))

    def retry_params(self) -> SamplingParams:
        return SamplingParams(self.attempt_max_new_tokens, self.retry_temperature, self.top_p,
                              self.retries_per_reflection, (), self.seed + 2)

    def control_params(self) -> SamplingParams:
        """The control's retries: the retry's settings, as many per failure as its group has (G x k)."""
        return SamplingParams(self.attempt_max_new_tokens, self.retry_temperature, self.top_p,
                              self.group_size * self.retries_per_reflection, (), self.seed + 3)


# What a reflection may do with the task's answer tags: write them, not write them (banned while
# sampling), or end at them. Banning keeps a reflection from being a second answer that the retry copies.
REFLECTION_ANSWER_TAGS = ("allow", "ban", "stop")


def reflection_tag_options(mode: str, task_name: str) -> dict:
    """The ReflectConfig fields for `mode` (one of REFLECTION_ANSWER_TAGS) on the task `task_name`."""
    if mode not in REFLECTION_ANSWER_TAGS:
        raise ValueError(f"reflection answer tags must be one of {REFLECTION_ANSWER_TAGS}, got {mode!r}")
    tags = answer_tags(task_name)
    return {"reflection_bad_words": tags if mode == "ban" else (), "reflection_stop": tags if mode == "stop" else ()}


# -- plain data between the steps --------------------------------------------------------


@dataclass
class Attempt:
    """A first attempt at one instance, and the conversation that produced it."""

    instance: Instance
    messages: list[dict[str, str]]         # chat turns up to the task's user turn
    tools: list[dict] | None               # passed to the chat template when it takes tools
    task_text: str                         # the task statement the retry restates
    prompt_ids: list[int]
    completion: Completion
    passed: bool
    code: str                              # verdict code (PASS, NO_ANSWER, ...)
    reason: str = ""                       # the verdict's reason: the feedback a reflection request may quote

    def to_dict(self) -> dict:
        """JSON-able: how a failure pool checkpoints the attempts it holds."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> Attempt:
        return cls(**{**values, "instance": Instance(**values["instance"]),
                      "completion": Completion(**values["completion"])})


@dataclass
class Reflection:
    attempt: Attempt
    group_id: int
    context_ids: list[int]                 # the prompt the reflection was sampled from
    completion: Completion


@dataclass
class Retry:
    """The retries sampled from one context: after a reflection, or (the control) with none."""

    attempt: Attempt
    reflection: Reflection | None          # None: the control's retry without reflection
    prompt_ids: list[int]
    completions: list[Completion]          # k samples of the same context
    passed: list[bool]
    codes: list[str]

    @property
    def rescued(self) -> bool:
        return any(self.passed)


@dataclass
class ReflectResult:
    attempts: list[Attempt]                # every first attempt, in instance order
    episodes: list[Episode]                # one per reflection, grouped by failed attempt
    flat_groups: list[int]                 # group ids with all-equal rewards: no signal, advantages 0
    first_codes: Counter                   # verdict codes of first attempts
    retry_codes: Counter                   # verdict codes of retries
    stats: dict[str, GenerationStats]      # per step: "attempt", "reflection", "retry" (and "control")
    control: list[Retry] = field(default_factory=list)  # per failed attempt, retries without reflection (when asked)

    @property
    def n(self) -> int:
        return len(self.attempts)

    @property
    def first_try_passed(self) -> int:
        return sum(a.passed for a in self.attempts)

    @property
    def failed(self) -> int:
        return self.n - self.first_try_passed

    @property
    def retry_passed_groups(self) -> int:
        """Failed instances whose group holds at least one passing retry."""
        return len({e.group_id for e in self.episodes if e.rescued})

    @property
    def control_passed(self) -> int:
        """Failed instances rescued by a retry without reflection (the control)."""
        return sum(r.rescued for r in self.control)

    def paired_rescues(self) -> Counter:
        """Failed instances by (rescued with reflection, rescued without): the paired table of the lift."""
        with_reflection = {e.group_id for e in self.episodes if e.rescued}
        return Counter((group_id in with_reflection, r.rescued) for group_id, r in enumerate(self.control))


# -- templating ---------------------------------------------------------------------------


def reflection_messages(attempt: Attempt, prompts: ReflectionPrompts) -> list[dict[str, str]]:
    return [
        *attempt.messages,
        {"role": "assistant", "content": attempt.completion.text},
        reflection_turn(prompts, attempt.reason),
    ]


def retry_messages(attempt: Attempt, prompts: ReflectionPrompts, reflection: str | None) -> list[dict[str, str]]:
    """The retry's conversation after `reflection`, or with `reflection=None` the control's: the same
    retry with the reflection removed (fresh: no quoted note; continue: no reflection turns)."""
    turn = retry_turn(attempt.task_text, prompts, attempt.completion.text, reflection, attempt.reason)
    if prompts.retry_layout == "fresh":  # the task prompt again, its last turn quoting attempt and reflection
        return [*attempt.messages[:-1], turn]
    if reflection is None:
        return [*attempt.messages, {"role": "assistant", "content": attempt.completion.text}, turn]
    return [*reflection_messages(attempt, prompts), {"role": "assistant", "content": reflection}, turn]


# -- the steps ----------------------------------------------------------------------------


def judge(task: Task, instances: Sequence[Instance], texts: Sequence[str], timer: PhaseTimer | None = None) -> list[Verdict]:
    """The verdicts of `texts` (one per instance): one batch call per phase, timed as "scoring"."""
    if not texts:
        return []
    with timed(timer, "scoring"):
        return task.judge_batch(list(instances), list(texts))


def first_attempts(
    engine: RolloutEngine,
    tokenizer,
    task: Task,
    instances: Sequence[Instance],
    params: SamplingParams,
    stats: GenerationStats | None = None,
    timer: PhaseTimer | None = None,
) -> list[Attempt]:
    """Step 1: one attempt per instance (params.n must be 1), verified."""
    if params.n != 1:
        raise ValueError(f"first attempts take one sample per instance, got n={params.n}")
    prompts = [task.prompt(instance) for instance in instances]
    chats = [task_chat(tokenizer, prompt) for prompt in prompts]
    completions = [cs[0] for cs in generate_counted(engine, [c[2] for c in chats], params, stats, timer)]
    verdicts = judge(task, instances, [c.text for c in completions], timer)
    return [
        Attempt(instance, messages, tools, prompt.task_text, ids, completion, v.passed, v.code, v.reason)
        for instance, prompt, (messages, tools, ids), completion, v
        in zip(instances, prompts, chats, completions, verdicts, strict=True)
    ]


def sample_reflections(
    engine: RolloutEngine,
    tokenizer,
    failed: Sequence[Attempt],
    params: SamplingParams,
    prompts: ReflectionPrompts,
    stats: GenerationStats | None = None,
    timer: PhaseTimer | None = None,
) -> list[Reflection]:
    """Step 2: params.n reflections per failed attempt; group id = index of the attempt in `failed`."""
    contexts = [chat_ids(tokenizer, reflection_messages(a, prompts), a.tools) for a in failed]
    outs = generate_counted(engine, contexts, params, stats, timer)
    return [
        Reflection(attempt, group_id, context, completion)
        for group_id, (attempt, context, completions) in enumerate(zip(failed, contexts, outs, strict=True))
        for completion in completions
    ]


def retry_after_reflections(
    engine: RolloutEngine,
    tokenizer,
    task: Task,
    reflections: Sequence[Reflection],
    params: SamplingParams,
    prompts: ReflectionPrompts,
    stats: GenerationStats | None = None,
    timer: PhaseTimer | None = None,
) -> list[Retry]:
    """Step 3: params.n retries (k) per reflection, each verified."""
    return _retries(engine, tokenizer, task, [(r.attempt, r) for r in reflections], params, prompts, stats, timer)


def retry_without_reflection(
    engine: RolloutEngine,
    tokenizer,
    task: Task,
    failed: Sequence[Attempt],
    params: SamplingParams,
    prompts: ReflectionPrompts,
    stats: GenerationStats | None = None,
    timer: PhaseTimer | None = None,
) -> list[Retry]:
    """The control: params.n retries per failed attempt from the retry turn without a reflection."""
    return _retries(engine, tokenizer, task, [(a, None) for a in failed], params, prompts, stats, timer)


def _retries(engine, tokenizer, task, items, params, prompts, stats, timer) -> list[Retry]:
    contexts = [
        chat_ids(tokenizer, retry_messages(a, prompts, None if r is None else r.completion.text), a.tools)
        for a, r in items
    ]
    outs = generate_counted(engine, contexts, params, stats, timer)
    verdicts = iter(judge(task, [a.instance for (a, _), cs in zip(items, outs, strict=True) for _c in cs],
                          [c.text for cs in outs for c in cs], timer))
    retries = []
    for (attempt, reflection), context, completions in zip(items, contexts, outs, strict=True):
        mine = [next(verdicts) for _ in completions]
        retries.append(Retry(attempt, reflection, context, list(completions), [v.passed for v in mine],
                             [v.code for v in mine]))
    return retries


def build_episodes(retries: Sequence[Retry]) -> list[Episode]:
    """Step 4: one Episode per reflection, reward = the fraction of its retries that passed
    (advantages not yet set)."""
    return [
        Episode(
            context_ids=list(retry.reflection.context_ids),
            completion_ids=list(retry.reflection.completion.token_ids),
            sampling_logprobs=list(retry.reflection.completion.logprobs),
            reward=sum(retry.passed) / len(retry.passed),
            group_id=retry.reflection.group_id,
            instance_id=retry.attempt.instance.id,
            reflection_text=retry.reflection.completion.text,
            first_attempt_text=retry.attempt.completion.text,
            first_verdict=retry.attempt.passed,
            retry_context_ids=list(retry.prompt_ids),
            retry_ids=[list(c.token_ids) for c in retry.completions],
            retry_texts=[c.text for c in retry.completions],
            retry_verdicts=list(retry.passed),
        )
        for retry in retries
    ]


def reflect_retry(
    engine: RolloutEngine,
    tokenizer,
    task: Task,
    instances: Sequence[Instance],
    config: ReflectConfig | None = None,
    *,
    attempts: Sequence[Attempt] | None = None,
    control: bool = False,
    timer: PhaseTimer | None = None,
) -> ReflectResult:
    """Steps 1-5 over `instances`. Pass `attempts` to reuse first attempts made elsewhere;
    `control=True` also retries each failure without a reflection (ReflectResult.control).
    With `timer`, generation and verification are timed as "generation" and "scoring"."""
    config = config or ReflectConfig()
    stats = {step: GenerationStats() for step in ("attempt", "reflection", "retry", *(("control",) if control else ()))}
    if attempts is None:
        attempts = first_attempts(engine, tokenizer, task, instances, config.attempt_params(), stats["attempt"], timer)
    failed = [a for a in attempts if not a.passed]
    reflections = sample_reflections(
        engine, tokenizer, failed, config.reflection_params(), config.prompts, stats["reflection"], timer
    )
    retries = retry_after_reflections(
        engine, tokenizer, task, reflections, config.retry_params(), config.prompts, stats["retry"], timer
    )
    episodes = build_episodes(retries)
    flat = assign_advantages(episodes, scale_rewards=config.scale_rewards)
    controls = (retry_without_reflection(engine, tokenizer, task, failed, config.control_params(), config.prompts,
                                         stats["control"], timer) if control else [])
    return ReflectResult(
        attempts=list(attempts),
        episodes=episodes,
        flat_groups=flat,
        first_codes=Counter(a.code for a in attempts),
        retry_codes=Counter(code for r in retries for code in r.codes),
        stats=stats,
        control=controls,
    )
