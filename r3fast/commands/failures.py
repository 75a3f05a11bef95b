"""`r3fast failures`: attempt a task's instances and write the ones the model fails (JSONL)."""

from __future__ import annotations


def add_parser(subparsers) -> None:
    from r3fast.commands.eval import ROLLOUT, add_task_model_args

    p = subparsers.add_parser("failures", help="write the task instances a model fails as a JSONL failure dataset")
    add_task_model_args(p)
    p.add_argument("--temperature", type=float, default=ROLLOUT.attempt_temperature, help="attempt temperature (0: greedy)")
    p.set_defaults(run=run)


def run(args) -> int:
    from dataclasses import replace

    from tqdm import tqdm

    from r3fast.commands.eval import load_task_and_instances, quiet_engine
    from r3fast.failures import write_failures
    from r3fast.reflect import first_attempts
    from r3fast.rollout.base import SamplingParams

    task, instances = load_task_and_instances(args)
    params = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature, seed=args.seed)
    engine, tokenizer, engine_log = quiet_engine(args)
    attempts = []
    chunk = 32
    with tqdm(total=len(instances), desc=f"attempt {task.name}", unit="task", disable=args.no_progress) as bar:
        for begin in range(0, len(instances), chunk):
            # a distinct seed per chunk keeps sampled attempts independent across chunks
            params_chunk = replace(params, seed=args.seed + begin)
            attempts += first_attempts(engine, tokenizer, task, instances[begin : begin + chunk], params_chunk)
            bar.update(min(chunk, len(instances) - begin))
    written = write_failures(args.out, task.name, attempts)
    print(f"{written}/{len(attempts)} instances failed; wrote {args.out}" + ("" if args.verbose else f" (engine log: {engine_log})"))
    return 0
