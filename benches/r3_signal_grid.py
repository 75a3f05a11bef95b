"""Which reflection protocol gives R3 a learning signal, and at what cost: a grid over its settings.

    python benches/r3_signal_grid.py --model runs/x/checkpoints/step-00000030/model --task countdown-easy \\
        --instances 32 --group-sizes 4,8 --retries 1,2,4 --retry-temperatures 0,0.7,1.0 \\
        --reflection-temperatures 0.7,1.0 --reflection-requests paper,feedback,diagnose --out grid.json

First attempts are made once, greedy, on a fixed set of training instances (never the held-out
ones: those of `r3fast train`'s data.eval_seed / data.eval_size are excluded), and every setting
reflects on the same failures with the same seed, so rows differ only by their settings. Per row:
- groups with signal: failures whose G graded rewards are not all equal (a nonzero advantage);
- retries that pass: over all G x k retries;
- seconds per group, and groups with signal per minute (signal per second, the choice of a default);
- diagnostics of the failure mode: reflections holding an answer tag, retries equal to the failed attempt.
Shares come with 95% Wilson intervals. Retries of one group are correlated, so the retry interval is
narrower than it should be; the group share is the number to choose by.

Writes the rows as JSON (--out) and a markdown table beside it (.md). The full grid takes hours on
CPU: every axis is a comma-separated flag, so a subset runs in minutes.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

from r3fast.prompts import REFLECTION_REQUESTS, ReflectionPrompts, answer_tags
from r3fast.reflect import (
    REFLECTION_ANSWER_TAGS,
    ReflectConfig,
    first_attempts,
    reflect_retry,
    reflection_tag_options,
)
from r3fast.rollout import make_engine
from r3fast.rollout.base import SamplingParams
from r3fast.tasks import get_task, load_instances
from r3fast.tasks.selection import draw_excluding
from r3fast.train.config import DataConfig
from r3fast.train.metrics import wilson_interval

AXES = ("group_size", "retries", "retry_temperature", "reflection_temperature", "reflection_request",
        "answer_tags", "quote_attempt")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m-instruct", help="named model or a checkpoint's model folder")
    p.add_argument("--task", default="countdown-easy")
    p.add_argument("--instances", type=int, default=32, help="training instances attempted once; failures reflect")
    p.add_argument("--max-failures", type=int, default=0, help="use at most this many failures (0: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the instances and of every sampled turn")
    p.add_argument("--engine", default="hf", choices=("auto", "hf", "vllm"))
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--retry-layout", default="fresh", choices=("continue", "fresh"))
    p.add_argument("--attempt-max-new-tokens", type=int, default=48)
    p.add_argument("--reflection-max-new-tokens", type=int, default=40)
    p.add_argument("--group-sizes", default="4,8", help="G values")
    p.add_argument("--retries", default="1,2,4", help="k values: retries per reflection")
    p.add_argument("--retry-temperatures", default="0,0.7,1.0")
    p.add_argument("--reflection-temperatures", default="0.7,1.0")
    p.add_argument("--reflection-requests", default="paper,feedback",
                   help=f"names ({', '.join(REFLECTION_REQUESTS)}): feedback and diagnose quote the verifier's reason")
    p.add_argument("--answer-tags", default="allow", help=f"reflection answer tags: {', '.join(REFLECTION_ANSWER_TAGS)}")
    p.add_argument("--quote-attempt", default="true", help="true, false or both: the fresh retry quotes the failed answer")
    p.add_argument("--out", required=True, help="JSON output; the markdown table goes beside it (.md)")
    args = p.parse_args(argv)
    args.grid = {
        "group_size": _values(args.group_sizes, int, "--group-sizes", lambda v: v >= 2),
        "retries": _values(args.retries, int, "--retries", lambda v: v >= 1),
        "retry_temperature": _values(args.retry_temperatures, float, "--retry-temperatures", lambda v: v >= 0),
        "reflection_temperature": _values(args.reflection_temperatures, float, "--reflection-temperatures",
                                          lambda v: v > 0),
        "reflection_request": _values(args.reflection_requests, str, "--reflection-requests",
                                      lambda v: v in REFLECTION_REQUESTS),
        "answer_tags": _values(args.answer_tags, str, "--answer-tags", lambda v: v in REFLECTION_ANSWER_TAGS),
        "quote_attempt": {"true": [True], "false": [False], "both": [True, False]}.get(args.quote_attempt),
    }
    if args.grid["quote_attempt"] is None:
        p.error(f"--quote-attempt must be true, false or both, got {args.quote_attempt!r}")
    if args.retry_layout == "continue" and False in args.grid["quote_attempt"]:
        p.error("--quote-attempt false needs --retry-layout fresh: the continued chat holds the attempt")
    if args.instances < 1:
        p.error(f"--instances must be >= 1, got {args.instances}")
    return args


def _values(text: str, kind, flag: str, ok) -> list:
    try:
        values = [kind(v.strip()) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SystemExit(f"{flag}: expected comma-separated {kind.__name__} values, got {text!r}") from None
    bad = [v for v in values if not ok(v)]
    if not values or bad:
        raise SystemExit(f"{flag}: bad value(s) {bad or text!r}")
    return values


def training_instances(task_name: str, n: int, seed: int) -> list:
    """n instances outside `r3fast train`'s default held-out set."""
    data = DataConfig()
    heldout = {i.id for i in load_instances(task_name, n=data.eval_size, seed=data.eval_seed)}
    return draw_excluding(lambda k, s: load_instances(task_name, n=k, seed=s), n, seed, heldout)


def measure(engine, tokenizer, task, failures, setting: dict, args) -> dict:
    prompts = ReflectionPrompts(reflection_request=setting["reflection_request"], retry_layout=args.retry_layout,
                                quote_attempt=setting["quote_attempt"])
    config = ReflectConfig(
        group_size=setting["group_size"], attempt_max_new_tokens=args.attempt_max_new_tokens,
        reflection_max_new_tokens=args.reflection_max_new_tokens,
        reflection_temperature=setting["reflection_temperature"], retry_temperature=setting["retry_temperature"],
        retries_per_reflection=setting["retries"], seed=args.seed, prompts=prompts,
        **reflection_tag_options(setting["answer_tags"], task.name),
    )
    start = time.perf_counter()
    result = reflect_retry(engine, tokenizer, task, [], config, attempts=failures)
    seconds = time.perf_counter() - start
    groups = len(failures)
    rewards: dict[int, set] = {}
    for e in result.episodes:
        rewards.setdefault(e.group_id, set()).add(e.reward)
    with_signal = sum(len(r) > 1 for r in rewards.values())
    verdicts = [v for e in result.episodes for v in e.retry_verdicts]
    tags = answer_tags(task.name)
    tagged = sum(any(t in e.reflection_text for t in tags) for e in result.episodes)
    copies = sum(text.strip() == e.first_attempt_text.strip() for e in result.episodes for text in e.retry_texts)
    return {
        **setting,
        "groups": groups,
        "groups_with_signal": with_signal,
        "signal_share": with_signal / groups,
        "signal_share_ci95": list(wilson_interval(with_signal / groups, groups)),
        "retries_total": len(verdicts),
        "retries_passed": sum(verdicts),
        "retry_pass_rate": sum(verdicts) / len(verdicts),
        "retry_pass_rate_ci95": list(wilson_interval(sum(verdicts) / len(verdicts), len(verdicts))),
        "rescued_groups": result.retry_passed_groups,
        "reflections_with_answer_tags": tagged / len(result.episodes),
        "retries_copying_the_attempt": copies / len(verdicts),
        "seconds": seconds,
        "seconds_per_group": seconds / groups,
        "signal_groups_per_minute": 60 * with_signal / seconds,
    }


def markdown(rows: list[dict], header: dict) -> str:
    lines = [f"R3 signal grid: {header['model']}, {header['task']}, {header['failures']} first-try failures of "
             f"{header['instances']} training instances, {header['retry_layout']} retry, seed {header['seed']}",
             "",
             "| G | k | retry T | refl. T | request | answer tags | quotes attempt | groups with signal [95% CI] "
             "| retries that pass [95% CI] | refl. with tags | retries = attempt | s / group | signal groups / min |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lo, hi = r["signal_share_ci95"]
        plo, phi = r["retry_pass_rate_ci95"]
        lines.append(
            f"| {r['group_size']} | {r['retries']} | {r['retry_temperature']:g} | {r['reflection_temperature']:g} "
            f"| {r['reflection_request']} | {r['answer_tags']} | {'yes' if r['quote_attempt'] else 'no'} "
            f"| {r['groups_with_signal']}/{r['groups']} = {r['signal_share']:.0%} [{lo:.0%}, {hi:.0%}] "
            f"| {r['retries_passed']}/{r['retries_total']} = {r['retry_pass_rate']:.1%} [{plo:.1%}, {phi:.1%}] "
            f"| {r['reflections_with_answer_tags']:.0%} | {r['retries_copying_the_attempt']:.0%} "
            f"| {r['seconds_per_group']:.1f} | {r['signal_groups_per_minute']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    engine, tokenizer = make_engine(args.engine, args.model, batch_size=args.batch_size)
    task = get_task(args.task)
    instances = training_instances(args.task, args.instances, args.seed)
    start = time.perf_counter()
    attempts = first_attempts(engine, tokenizer, task, instances,
                              SamplingParams(args.attempt_max_new_tokens, 0.0, seed=args.seed))
    failures = [a for a in attempts if not a.passed][: args.max_failures or None]
    print(f"first try: {len(attempts) - sum(not a.passed for a in attempts)}/{len(attempts)} passed; "
          f"{len(failures)} failures reflect ({time.perf_counter() - start:.0f} s)", flush=True)
    if not failures:
        raise SystemExit("no first-try failure to reflect on: use more --instances")
    settings = [dict(zip(AXES, values, strict=True)) for values in itertools.product(*(args.grid[a] for a in AXES))]
    rows = []
    for i, setting in enumerate(settings, 1):
        row = measure(engine, tokenizer, task, failures, setting, args)
        rows.append(row)
        print(f"[{i}/{len(settings)}] " + ", ".join(f"{k}={setting[k]}" for k in AXES)
              + f": signal {row['groups_with_signal']}/{row['groups']}, retries pass "
              f"{row['retries_passed']}/{row['retries_total']}, {row['seconds_per_group']:.1f} s/group", flush=True)
    header = {"model": args.model, "task": args.task, "instances": len(instances), "failures": len(failures),
              "retry_layout": args.retry_layout, "seed": args.seed, "engine": args.engine,
              "attempt_max_new_tokens": args.attempt_max_new_tokens,
              "reflection_max_new_tokens": args.reflection_max_new_tokens,
              "reflection_requests": {name: REFLECTION_REQUESTS[name] for name in args.grid["reflection_request"]},
              "grid": {a: args.grid[a] for a in AXES}}
    out = Path(args.out)
    first = [{"instance": a.instance.id, "text": a.completion.text, "passed": a.passed} for a in attempts]
    out.write_text(json.dumps({**header, "rows": rows, "first_attempts": first}, indent=1))
    table = markdown(rows, header)
    out.with_suffix(".md").write_text(table)
    print(table)
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
