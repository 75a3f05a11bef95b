"""`r3fast eval`: first-try and second-try (after one reflection) accuracy of a model on a task."""

from __future__ import annotations

import json

from r3fast.train.config import RolloutConfig, TaskConfig

# The flags' defaults are the config tree's (r3fast train --show-config), so eval samples as training does.
ROLLOUT, TASK = RolloutConfig(), TaskConfig()


def add_task_model_args(p) -> None:
    """Flags shared by `r3fast eval` and `r3fast failures`: which task, which instances, which model."""
    p.add_argument("--task", required=True, help="task name: countdown, countdown-easy, function_calling, bfcl, fncall-synthetic")
    p.add_argument("--model", default="smollm2-135m-instruct", help="named model (smollm2-135m-instruct, tiny-random) or a local HF folder")
    p.add_argument("--n", type=int, default=200, help="instances: generated, or sampled from --source / the BFCL data")
    p.add_argument("--seed", type=int, default=0, help="seed of instance generation/sampling and of sampled turns")
    p.add_argument("--source", default=None, help="dataset file for countdown/function_calling (TinyZero or xLAM layout)")
    p.add_argument("--categories", default=None, help="bfcl: comma-separated categories (default simple_python)")
    p.add_argument("--num-demos", type=int, default=None, help="few-shot demonstrations in the task prompt (default: the task's)")
    p.add_argument("--fixed-demos", action="store_true", help="always the first demonstrations of the pool, not rotated per instance")
    p.add_argument("--tool-call-format", default=None, choices=("json", "tool_call"),
                   help="function calling: <tool_call> blocks (the default) or one JSON list of calls")
    p.add_argument("--engine", default=ROLLOUT.engine, choices=("auto", "hf", "vllm"),
                   help=f"rollout engine (default {ROLLOUT.engine}: vllm when importable)")
    p.add_argument("--batch-size", type=int, default=ROLLOUT.batch_size, help="sequences decoded together (hf engine)")
    p.add_argument("--max-new-tokens", type=int, default=ROLLOUT.attempt_max_new_tokens,
                   help="token budget of attempts and retries")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--verbose", action="store_true",
                   help="vLLM/transformers/torch logs on the terminal instead of OUT's .engine.log file")
    p.add_argument("--out", required=True, help="output file")


def quiet_engine(args):
    """(engine, tokenizer, engine log path) for the shared flags: the engine's own logs go to a file
    beside --out (these commands have no run folder), unless --verbose."""
    from pathlib import Path

    from r3fast.engine_log import engine_stderr_to_log, route_engine_logs
    from r3fast.rollout import make_engine

    out = Path(args.out)
    if not out.parent.is_dir():
        raise FileNotFoundError(f"--out {args.out!r}: folder {str(out.parent)!r} does not exist")
    engine_log = out.with_suffix(".engine.log")
    route_engine_logs(engine_log, verbose=args.verbose)
    with engine_stderr_to_log():
        engine, tokenizer = make_engine(args.engine, args.model, batch_size=args.batch_size)
    return engine, tokenizer, engine_log


def load_task_and_instances(args):
    """(task, instances) from the shared flags."""
    from r3fast.tasks import get_task, load_instances

    prompt_options = {} if args.num_demos is None else {"num_demos": args.num_demos}
    if args.fixed_demos:
        prompt_options["rotate_demos"] = False
    if args.tool_call_format is not None:
        if args.task.startswith("countdown"):
            raise ValueError("--tool-call-format applies to function-calling tasks only")
        prompt_options["tool_call_format"] = args.tool_call_format
    task = get_task(args.task, **prompt_options)
    options = {}
    if args.categories is not None:
        if args.task != "bfcl":
            raise ValueError("--categories applies to --task bfcl only")
        options["categories"] = [c.strip() for c in args.categories.split(",") if c.strip()]
    instances = load_instances(args.task, n=args.n, seed=args.seed, source=args.source, **options)
    if not instances:
        raise ValueError(f"task {args.task!r} gave no instances (n={args.n}, source={args.source!r})")
    return task, instances


def add_parser(subparsers) -> None:
    from r3fast.reflect import REFLECTION_ANSWER_TAGS

    p = subparsers.add_parser("eval", help="first-try and second-try accuracy of a model on a task")
    add_task_model_args(p)
    p.add_argument("--reflection-max-new-tokens", type=int, default=ROLLOUT.reflection_max_new_tokens,
                   help="token budget of the reflection")
    p.add_argument("--reflection-temperature", type=float, default=0.0, help="0: greedy reflection (deterministic)")
    p.add_argument("--reflection-request", default=None,
                   help="user turn asking for the reflection, or a name (paper, diagnose); may quote the verifier's "
                        "{feedback} (default: the paper's)")
    p.add_argument("--reflection-answer-tags", default=ROLLOUT.reflection_answer_tags, choices=REFLECTION_ANSWER_TAGS,
                   help="the task's answer tags in a reflection: allowed, banned while sampling, or ending it")
    p.add_argument("--retry-layout", default=TASK.retry_layout, choices=("continue", "fresh"),
                   help="continue the chat for the retry, or a fresh task prompt quoting attempt and reflection")
    p.add_argument("--retry-request", default=None, help="retry user turn with {task} (fresh: also {attempt}, {reflection})")
    p.add_argument("--no-quote-attempt", action="store_true",
                   help="fresh layout: the retry and its control do not quote the failed answer")
    p.add_argument("--retries-per-reflection", type=int, default=ROLLOUT.retries_per_reflection,
                   help="k retries after each reflection (and k x G for the control without reflection)")
    p.add_argument("--retry-temperature", type=float, default=ROLLOUT.retry_temperature,
                   help="0: greedy retries (deterministic)")
    p.set_defaults(run=run)


def run(args) -> int:
    from dataclasses import replace

    from r3fast.evaluate import EVAL_REFLECT, evaluate, format_report
    from r3fast.prompts import ReflectionPrompts
    from r3fast.reflect import reflection_tag_options

    prompts = ReflectionPrompts(retry_layout=args.retry_layout, retry_request=args.retry_request,
                                quote_attempt=not args.no_quote_attempt,
                                **({} if args.reflection_request is None else {"reflection_request": args.reflection_request}))
    # checked before the model loads: the config's own checks name the flag's field
    config = replace(
        EVAL_REFLECT,
        attempt_max_new_tokens=args.max_new_tokens,
        reflection_max_new_tokens=args.reflection_max_new_tokens,
        reflection_temperature=args.reflection_temperature,
        retry_temperature=args.retry_temperature,
        retries_per_reflection=args.retries_per_reflection,
        **reflection_tag_options(args.reflection_answer_tags, args.task),
        prompts=prompts,
        seed=args.seed,
    )
    task, instances = load_task_and_instances(args)
    engine, tokenizer, engine_log = quiet_engine(args)
    report = evaluate(engine, tokenizer, task, instances, config, progress=not args.no_progress)
    report = {"model": args.model, "seed": args.seed, "engine": args.engine, **report}
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    print(format_report(report))
    print(f"wrote {args.out}" + ("" if args.verbose else f" (engine log: {engine_log})"))
    return 0
