"""`r3fast train`: the R3 training loop, top to bottom in `train()`.

One step: take failed prompts from the pool -> sample G reflections each and retry after each
-> rewards and group advantages -> GRPO update on the reflection tokens -> new weights into the
rollout engine. When `stage.first_try_steps` is set, the first steps are instead a warm-up stage
of plain GRPO on sampled first attempts (train/first_try.py), logged with stage "first_try".
The pieces live in their own modules (r3fast.reflect for the rollouts,
train/update.py for the loss and optimizer step, train/checkpoint.py, train/distributed.py);
this file only wires them in order.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import sys
import time
import warnings
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
import yaml

from r3fast.train.config import (
    DEFAULT_PRESET,
    TrainConfig,
    config_from_dict,
    parse_override,
    read_yaml,
    to_dict,
)
from r3fast.train.distributed import DistContext
from r3fast.train.metrics import EVAL_AFTER, EVAL_BEFORE, wilson_interval


def train(cfg: TrainConfig, *, run_dir: str | os.PathLike | None = None, resume: bool = False,
          name: str | None = None, task=None) -> dict:
    """Train as `cfg` says; returns the final summary (also written to RUN_DIR/summary.json).

    Without `run_dir` the run goes to runs/<name>-<time>.
    `task` replaces the task `cfg.task` names (its instances still come from cfg.task.name):
    for tasks defined in code rather than by name.
    """
    from tqdm import tqdm

    from r3fast.evaluate import EVAL_REFLECT, evaluate
    from r3fast.failures import failures_as_attempts, mine_failures, read_failures
    from r3fast.reflect import reflect_retry
    from r3fast.rollout.base import SamplingParams
    from r3fast.train import checkpoint as ckpt
    from r3fast.train.distributed import (
        full_state_dict,
        init_distributed,
        load_optimizer_state,
        optimizer_state,
        shutdown,
        wrap_policy,
    )
    from r3fast.train.first_try import first_try_batch
    from r3fast.train.metrics import MetricsLogger, PhaseTimer
    from r3fast.train.plot import plot_run
    from r3fast.train.pool import FailurePool
    from r3fast.train.update import PolicyLoss, grpo_update, samples_from_episodes

    started = time.perf_counter()
    dist = init_distributed(cfg.distributed.strategy, cfg.distributed.backend, cfg.model.device,
                            cfg.rollout.tensor_parallel_size)
    configure_torch(cfg, dist)
    if cfg.data.prompts_per_step % dist.data_world:
        raise ValueError(f"config key 'data.prompts_per_step' ({cfg.data.prompts_per_step}) must be a multiple "
                         f"of the number of data ranks ({dist.data_world}: ranks / rollout.tensor_parallel_size)")
    prompts_per_rank = cfg.data.prompts_per_step // dist.data_world
    run_dir = Path(dist.broadcast_object(str(resolve_run_dir(run_dir, name))))
    say = print if dist.is_main else (lambda *a, **k: None)

    # -- resume point: the newest checkpoint that verifies ------------------------------------
    resume_from = None
    if resume:
        found = ckpt.latest_valid_checkpoint(run_dir) if dist.is_main else None
        resume_from = dist.broadcast_object(None if found is None else str(found))
        if resume_from is None:
            say(f"r3fast train: no valid checkpoint in {run_dir}; starting from step 0", file=sys.stderr)
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))

    # -- policy, reference, engine, task, data ------------------------------------------------
    model, tokenizer = load_policy(cfg, Path(resume_from) / "model" if resume_from else cfg.model.name, dist)
    ref_model = None
    if cfg.loss.beta > 0:  # the initial policy, frozen, also when resuming
        ref_model, _ = load_policy(cfg, cfg.model.name, dist)
        ref_model.requires_grad_(False)
    engine = build_engine(cfg, model, tokenizer, Path(resume_from) / "model" if resume_from else None, dist)
    task = task if task is not None else build_task(cfg)
    heldout, training_instances = task_instances(cfg)
    generate = training_generator(cfg)
    heldout_ids = {i.id for i in heldout}
    rcfg = reflect_config(cfg)
    gen_stats = {}

    def stage_instances(n, seed):  # n fresh tasks for the first-try stage, never held-out ones
        def draw(k, round_seed):
            if training_instances:
                return random.Random(round_seed).sample(training_instances, min(k, len(training_instances)))
            return generate(k, round_seed)

        return draw_excluding(draw, n, seed, heldout_ids)

    def first_try_params(seed):
        return SamplingParams(cfg.rollout.attempt_max_new_tokens, cfg.stage.first_try_temperature,
                              cfg.rollout.top_p, cfg.stage.first_try_group_size, (), seed)

    def mine(instances, seed):
        params = dataclasses.replace(rcfg, seed=seed).attempt_params()
        return mine_failures(engine, tokenizer, task, instances, params, gen_stats.setdefault("mining", _stats()))

    if cfg.data.source == "offline":
        stored = read_failures(cfg.data.failures_path, task=task.name)
        pool = FailurePool(source="offline", data_rank=dist.data_rank, data_world=dist.data_world, seed=cfg.data.seed,
                           exclude_ids=heldout_ids, failures=stored)
    else:
        pool = FailurePool(
            source="online", data_rank=dist.data_rank, data_world=dist.data_world, seed=cfg.data.seed,
            exclude_ids=heldout_ids, mining_batch=cfg.data.mining_batch, mine=mine,
            generate_instances=None if training_instances else generate,
            instances=training_instances, encode=attempt_to_dict, decode=attempt_from_dict,
        )

    # -- optimizer, schedule, distributed wrapper ---------------------------------------------
    module = wrap_policy(PolicyLoss(model), model, dist)
    o = cfg.optimizer
    optimizer = torch.optim.AdamW(model.parameters(), lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps,
                                  weight_decay=o.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg))
    start_step = 0
    if resume_from:
        saved = ckpt.read_checkpoint(Path(resume_from))
        state = saved["trainer_state"]
        check_same_layout(state, dist, resume_from)
        load_optimizer_state(model, optimizer, saved["optimizer"]["optimizer"], dist)
        scheduler.load_state_dict(saved["optimizer"]["scheduler"])
        pool.load_state(state["pools"][dist.rank])
        ckpt.restore_rng(saved["rng"][dist.rank])
        start_step = state["step"]
        say(f"r3fast train: resuming {run_dir} from {resume_from} (step {start_step})")

    def save_checkpoint(step: int) -> None:
        weights = full_state_dict(model, dist)
        opt_state = optimizer_state(model, optimizer, dist)
        rng_states, pool_states = dist.gather_objects(ckpt.capture_rng()), dist.gather_objects(pool.state())
        if dist.is_main:
            def save_model(folder: Path) -> None:
                model.save_pretrained(folder, state_dict=weights, safe_serialization=True)
                tokenizer.save_pretrained(folder)

            ckpt.write_checkpoint(
                run_dir, step, save_model=save_model,
                optimizer_state={"optimizer": opt_state, "scheduler": scheduler.state_dict()},
                rng_states=rng_states,
                trainer_state={"step": step, "pools": pool_states, "world_size": dist.world_size,
                               "tensor_parallel_size": dist.tensor_parallel_size},
                config_yaml=yaml.safe_dump(to_dict(cfg), sort_keys=False), keep_last=cfg.checkpoint.keep_last,
            )
        dist.barrier()

    # -- before: held-out first/second-try accuracy -------------------------------------------
    eval_rcfg = dataclasses.replace(EVAL_REFLECT, attempt_max_new_tokens=cfg.rollout.attempt_max_new_tokens,
                                    reflection_max_new_tokens=cfg.rollout.reflection_max_new_tokens,
                                    reflection_bad_words=rcfg.reflection_bad_words, reflection_stop=rcfg.reflection_stop,
                                    prompts=rcfg.prompts, seed=cfg.data.eval_seed)
    before = None
    # Data rank 0 evaluates: all its ranks, since a tensor-parallel engine generates only when every
    # rank holding a shard of it does. Rank 0 writes.
    if heldout and dist.data_rank == 0:
        saved_before = run_dir / EVAL_BEFORE
        if start_step > 0 and saved_before.is_file():
            before = json.loads(saved_before.read_text())
        else:
            say(f"evaluating the initial model on {len(heldout)} held-out instances")
            before = evaluate(engine, tokenizer, task, heldout, eval_rcfg, progress=cfg.logging.progress)
            if dist.is_main:
                saved_before.write_text(json.dumps(before, indent=1))
    dist.barrier()

    # -- the loop -------------------------------------------------------------------------------
    logger = MetricsLogger(run_dir, enabled=dist.is_main, resume_step=start_step if resume_from else None,
                           tensorboard=cfg.logging.tensorboard, wandb=cfg.logging.wandb,
                           wandb_project=cfg.logging.wandb_project, config=to_dict(cfg))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    bar = tqdm(total=cfg.schedule.steps, initial=start_step, desc="train", unit="step",
               disable=not (cfg.logging.progress and dist.is_main))
    for step in range(start_step + 1, cfg.schedule.steps + 1):
        timer = PhaseTimer()
        seed = step_seed(cfg.seed, step, dist.data_rank)
        attempted0, passed0 = pool.attempted, pool.first_try_passed
        gen_stats.clear()

        first_try_stage = is_first_try_step(step, cfg)
        if first_try_stage:
            # warm-up stage: G sampled first attempts per fresh task, plain GRPO on the attempts
            with timer("rollout"):
                batch = first_try_batch(engine, tokenizer, task, stage_instances(prompts_per_rank, seed),
                                        first_try_params(seed), scale_rewards=cfg.loss.scale_rewards,
                                        stats=gen_stats.setdefault("first_try", _stats()))
            timer.seconds["generation"] += timer.seconds.pop("rollout")
            samples, temperature = batch.samples, cfg.stage.first_try_temperature
            max_completion = cfg.rollout.attempt_max_new_tokens
        else:
            # 1. failed prompts (online mining generates: it counts as generation)
            with timer("generation"):
                failed = pool.take(prompts_per_rank, seed)
                if cfg.data.source == "offline":
                    failed = failures_as_attempts(failed, task, tokenizer)
            # 2. G reflections per failure, a retry after each, verified; group advantages
            with timer("rollout"):
                result = reflect_retry(engine, tokenizer, task, [], dataclasses.replace(rcfg, seed=seed),
                                       attempts=failed)
            generation_s = sum(s.seconds for s in result.stats.values())
            timer.seconds["generation"] += generation_s
            timer.seconds["scoring"] += timer.seconds.pop("rollout") - generation_s  # templating + verifying
            # every reflection: flat groups count in the loss's normalisation, as in TRL
            samples, temperature = samples_from_episodes(result.episodes), cfg.rollout.reflection_temperature
            max_completion = cfg.rollout.reflection_max_new_tokens

        # 3-4. loss over reflection tokens, AdamW step(s), LR schedule
        engine.sleep(level=2)  # the push after the update overwrites every weight: nothing to keep
        # HF checkpoints activations only in train mode; otherwise eval mode keeps dropout off.
        model.train(cfg.model.gradient_checkpointing)
        with timer("loss"):
            update = grpo_update(
                module, model, optimizer, samples, loss_type=cfg.loss.loss_type, beta=cfg.loss.beta,
                eps_low=cfg.loss.eps_low, eps_high=cfg.loss.eps_high, num_iterations=cfg.loss.num_iterations,
                micro_batch_size=cfg.loss.micro_batch_size, old_logp_source=cfg.loss.old_logp,
                temperature=temperature, max_completion_length=max_completion,
                max_grad_norm=cfg.optimizer.max_grad_norm, pad_id=pad_id, dist=dist, ref_model=ref_model,
                sampling_correction=cfg.loss.sampling_correction, sampling_cap=cfg.loss.sampling_cap,
                importance_sampling_level=cfg.loss.importance_sampling_level, backend=cfg.loss.backend,
                shared_prefix=cfg.loss.shared_prefix, timer=timer,
            )
        model.eval()
        timer.seconds["loss"] -= timer.seconds.get("optimizer", 0.0)
        lr = scheduler.get_last_lr()[0]
        with warnings.catch_warnings():
            # The LR follows training steps, also those with no group carrying signal (no optimizer step).
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
            scheduler.step()

        # 5. the engine samples from the new weights from now on
        with timer("sync"):
            push_weights(engine, model)
            engine.wake_up()

        # -- metrics of this step, over all ranks --------------------------------------------
        if first_try_stage:
            metrics = first_try_metrics(batch, gen_stats, dist)
        else:
            metrics = r3_metrics(result, gen_stats, pool.attempted - attempted0, pool.first_try_passed - passed0, dist)
        metrics["tokens_per_second"] = metrics.pop("generated_tokens") / max(timer.seconds["generation"], 1e-9)
        metrics.update({**update, "lr": lr, **{f"time_{k}": v for k, v in timer.seconds.items()},
                        "time_step": sum(timer.seconds.values())})
        logger.log(step, metrics)
        bar.update(1)
        bar.set_postfix(reward=f"{metrics['reward_mean']:.2f}", signal=f"{metrics['groups_with_signal']:.2f}")
        if dist.is_main and step % cfg.logging.print_every == 0:
            bar.write(format_step(step, cfg.schedule.steps, metrics))

        if step == cfg.schedule.steps or (cfg.checkpoint.every and step % cfg.checkpoint.every == 0):
            save_checkpoint(step)
    bar.close()
    logger.close()

    # -- after: the same held-out evaluation ----------------------------------------------------
    summary = {"run_dir": str(run_dir), "steps": cfg.schedule.steps, "seconds": time.perf_counter() - started}
    if heldout and dist.data_rank == 0:  # as before training: data rank 0's ranks evaluate, rank 0 writes
        say(f"evaluating the trained model on {len(heldout)} held-out instances")
        after = evaluate(engine, tokenizer, task, heldout, eval_rcfg, progress=cfg.logging.progress)
        if dist.is_main:
            (run_dir / EVAL_AFTER).write_text(json.dumps(after, indent=1))
        summary.update(before=before, after=after)
        say(format_before_after(before, after, len(heldout)))
    if dist.is_main:
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
        say("plots: " + ", ".join(p.name for p in plot_run(run_dir)))
        say(f"run folder: {run_dir}  ({summary['seconds']:.0f} s)")
    shutdown(dist)
    return summary


# -- setup ---------------------------------------------------------------------------------------


def configure_torch(cfg: TrainConfig, dist: DistContext) -> None:
    """Threads, determinism and every global RNG, from the config (each data rank its own stream:
    tensor-parallel peers must make the same random choices)."""
    torch.set_num_threads(rank_threads(cfg))
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    seed = step_seed(cfg.seed, 0, dist.data_rank)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rank_threads(cfg: TrainConfig) -> int:
    """cfg.threads, else this process's cores shared among the ranks of this node."""
    if cfg.threads:
        return cfg.threads
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def step_seed(seed: int, step: int, data_rank: int) -> int:
    """A sampling seed per (run seed, step, data rank): a resumed step samples what the original would."""
    return int(np.random.SeedSequence([seed, step, data_rank]).generate_state(1)[0])


def resolve_run_dir(run_dir, name: str | None) -> Path:
    """`run_dir`, or runs/<name>-<time> (name: the preset or config file the run came from)."""
    if run_dir:
        return Path(run_dir)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{name or DEFAULT_PRESET}-{stamp}"


def resumable_config(run_dir: str | os.PathLike, overrides: Sequence[str] = ()) -> TrainConfig:
    """The config a run was started with (RUN_DIR/config.yaml), with `overrides` on top."""
    path = Path(run_dir) / "config.yaml"
    if not Path(run_dir).is_dir():
        raise FileNotFoundError(f"--resume: run folder {str(run_dir)!r} does not exist")
    values = read_yaml(path, "run config")
    for text in overrides:
        _merge(values, parse_override(text))
    return config_from_dict(values, f"{path} with overrides")


def check_same_layout(trainer_state: dict, dist: DistContext, checkpoint) -> None:
    """A checkpoint resumes only on the rank layout that wrote it: its pools and RNG streams are per rank,
    and split by data rank. Checkpoints from before tensor parallelism were written with 1."""
    written = {"world_size": trainer_state["world_size"],
               "tensor_parallel_size": trainer_state.get("tensor_parallel_size", 1)}
    if written["world_size"] != dist.world_size:
        raise ValueError(f"{checkpoint} was written by {written['world_size']} ranks; resume it with as many "
                         f"(got {dist.world_size})")
    if written["tensor_parallel_size"] != dist.tensor_parallel_size:
        raise ValueError(f"{checkpoint} was written with rollout.tensor_parallel_size="
                         f"{written['tensor_parallel_size']}; resume it with the same (got {dist.tensor_parallel_size})")


def _merge(into: dict, update: dict) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def load_policy(cfg: TrainConfig, name_or_path, dist: DistContext):
    from r3fast.models import load

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[cfg.model.dtype]
    model, tokenizer = load(name_or_path, dtype=dtype, device=str(dist.device))
    torch.set_num_threads(rank_threads(cfg))  # load() picks its own count for CPU; the config's wins
    # Dropout stays off (eval mode) while training: the loss's log-probs must be the sampler's.
    model.eval()
    if cfg.model.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model, tokenizer


def build_engine(cfg: TrainConfig, model, tokenizer, checkpoint_model: Path | None, dist: DistContext):
    """The rollout engine of this rank: HF shares the policy's weights; vLLM gets them pushed."""
    from r3fast.rollout import resolve_engine

    kind = resolve_engine(cfg.rollout.engine)
    if kind == "hf" and dist.strategy == "fsdp2":
        raise ValueError("rollout.engine=hf samples with the policy itself, which distributed.strategy=fsdp2 "
                         "shards across ranks; use rollout.engine=vllm or distributed.strategy=ddp")
    if kind == "hf" and dist.tensor_parallel_size > 1:
        raise ValueError(f"config key 'rollout.tensor_parallel_size' ({dist.tensor_parallel_size}) > 1 needs "
                         f"rollout.engine=vllm; rollout.engine={cfg.rollout.engine} resolved to hf")
    if kind == "hf":
        from r3fast.rollout.hf import HFEngine

        return HFEngine(model, tokenizer, batch_size=cfg.rollout.batch_size)
    from r3fast.models import materialize
    from r3fast.rollout.vllm import VLLMEngine, on_cpu

    path = checkpoint_model or materialize(cfg.model.name)
    # The engine gathers sharded (FSDP2) tensors one at a time as it loads them: no full copy.
    return VLLMEngine(path, gpu_memory_utilization=cfg.rollout.gpu_memory_utilization,
                      enable_sleep_mode=not on_cpu(), seed=cfg.seed + dist.data_rank,
                      tensor_parallel_size=dist.tensor_parallel_size,
                      weights_source=lambda: model.state_dict().items())


def push_weights(engine, model) -> None:
    if getattr(engine, "model", None) is model:  # HFEngine over the policy itself: already current
        return
    engine.update_weights(model.state_dict().items())


GENERATED_TASKS = ("countdown", "countdown-easy", "fncall-synthetic")


def task_instances(cfg: TrainConfig) -> tuple[list, list]:
    """(held-out instances, fixed training list): generated tasks stream fresh instances and
    return an empty list; tasks read from a file or a package return every instance in it."""
    from r3fast.tasks import load_instances, sample_instances

    name, path, n = cfg.task.name, cfg.task.path or None, cfg.data.eval_size
    if cfg.data.eval_task:  # held out from another source, which training must not overlap
        from r3fast.tasks import check_disjoint, held_out_source

        heldout = sample_instances(load_instances(cfg.data.eval_task), n, cfg.data.eval_seed) if n else []
        training = [] if name in GENERATED_TASKS and path is None else load_instances(name, source=path)
        check_disjoint(training, held_out_source(cfg.data.eval_task), f"task {name!r}")
        return heldout, training
    if name in GENERATED_TASKS and path is None:
        return (load_instances(name, n=n, seed=cfg.data.eval_seed) if n else []), []
    every = load_instances(name, source=path) if path else load_instances(name)
    if n >= len(every):
        raise ValueError(f"config key 'data.eval_size' ({n}) leaves no training instance of the {len(every)} in "
                         f"task {name!r}")
    return (sample_instances(every, n, cfg.data.eval_seed) if n else []), every


def training_generator(cfg: TrainConfig):
    """(n, seed) -> fresh instances of a generated task; with data.eval_task each batch is checked to
    share no function name or request with that held-out source."""
    from r3fast.tasks import check_disjoint, held_out_source, load_instances

    held_out = held_out_source(cfg.data.eval_task) if cfg.data.eval_task else None

    def generate(n: int, seed: int) -> list:
        instances = load_instances(cfg.task.name, n=n, seed=seed)
        if held_out is not None:
            check_disjoint(instances, held_out, f"task {cfg.task.name!r}")
        return instances

    return generate


def draw_excluding(draw, n: int, seed: int, exclude_ids: set[str], max_rounds: int = 1000) -> list:
    """n instances from seeded draws `draw(k, seed)`, skipping excluded ids. Small task spaces such as
    countdown-easy overlap the held-out set often (half of all draws with eval_size=500), so one
    filtered draw would train on fewer groups than asked."""
    out: list = []
    for round_ in range(max_rounds):
        out += [i for i in draw(n, seed * 1_000_003 + round_) if i.id not in exclude_ids]
        if len(out) >= n:
            return out[:n]
    raise ValueError(f"found only {len(out)} of {n} instances outside the held-out set in {max_rounds} draws: "
                     f"lower data.eval_size")


def build_task(cfg: TrainConfig):
    from r3fast.tasks import get_task

    t = cfg.task
    return get_task(t.name, num_demos=t.num_demos, rotate_demos=t.rotate_demos, match_demo_size=t.match_demo_size)


def reflect_config(cfg: TrainConfig):
    from r3fast.prompts import ReflectionPrompts
    from r3fast.reflect import ReflectConfig, reflection_tag_options

    r = cfg.rollout
    prompts = ReflectionPrompts(retry_layout=cfg.task.retry_layout, quote_attempt=cfg.task.quote_attempt,
                                **{k: v for k, v in (("reflection_request", cfg.task.reflection_request),
                                                     ("retry_request", cfg.task.retry_request)) if v})
    return ReflectConfig(
        group_size=r.group_size, attempt_max_new_tokens=r.attempt_max_new_tokens,
        attempt_temperature=r.attempt_temperature, reflection_max_new_tokens=r.reflection_max_new_tokens,
        reflection_temperature=r.reflection_temperature, retry_temperature=r.retry_temperature, top_p=r.top_p,
        retries_per_reflection=r.retries_per_reflection,
        **reflection_tag_options(r.reflection_answer_tags, cfg.task.name),
        scale_rewards=cfg.loss.scale_rewards, seed=cfg.seed, prompts=prompts,
    )


def is_first_try_step(step: int, cfg: TrainConfig) -> bool:
    """Whether training step `step` (1-based) is a first-try step: the first stage.first_try_steps
    steps, or with stage.interleave those steps spread evenly over the run (a warm-up step whenever
    the running share of warm-up steps falls behind first_try_steps / steps; step 1 is one)."""
    warm, steps = cfg.stage.first_try_steps, cfg.schedule.steps
    if not cfg.stage.interleave:
        return step <= warm
    return -(-step * warm // steps) > -(-(step - 1) * warm // steps)  # ceilings: the run starts with warm-up


def lr_factor(cfg: TrainConfig):
    """Multiplier of the peak LR at each training step: linear warm-up, then constant or cosine."""
    s = cfg.schedule

    def factor(step: int) -> float:
        if step < s.warmup_steps:
            return (step + 1) / (s.warmup_steps + 1)
        if s.lr_schedule == "constant":
            return 1.0
        progress = (step - s.warmup_steps) / max(1, s.steps - s.warmup_steps)
        return s.min_lr_ratio + (1 - s.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def _stats():
    from r3fast.rollout.base import GenerationStats

    return GenerationStats()


# -- step metrics ----------------------------------------------------------------------------------


def r3_metrics(result, gen_stats: dict, attempted: int, first_passed: int, dist: DistContext) -> dict:
    """An R3 step: rewards of retries, groups with signal, first/second try of the mined attempts."""
    generated = sum(s.generated_tokens for s in list(result.stats.values()) + list(gen_stats.values()))
    counts = dist.all_reduce_data_sum(torch.tensor([
        len(result.episodes), sum(e.reward for e in result.episodes), result.failed,
        result.failed - len(result.flat_groups), result.retry_passed_groups,
        sum(len(e.reflection_ids) for e in result.episodes), attempted, first_passed, generated,
    ], dtype=torch.float64)).tolist()
    n_eps, reward_sum, n_groups, n_signal, n_rescued, refl_tokens, attempted, first_passed, generated = counts
    first = first_passed / attempted if attempted else None
    rescued = n_rescued / n_groups if n_groups else 0.0
    return {
        "stage": "r3",
        "reward_mean": reward_sum / n_eps if n_eps else 0.0,
        "groups_with_signal": n_signal / n_groups if n_groups else 0.0,
        "first_try_accuracy": first,
        # first try, or a failure rescued by one of its group's retries (as `r3fast eval` counts it)
        "second_try_accuracy": None if first is None else first + (1 - first) * rescued,
        "rescued_fraction": rescued,
        "reflection_length": refl_tokens / n_eps if n_eps else 0.0,
        "generated_tokens": generated,
    }


def first_try_metrics(batch, gen_stats: dict, dist: DistContext) -> dict:
    """A first-try stage step: the sampled attempts' pass rate is its reward and its accuracy."""
    generated = sum(s.generated_tokens for s in gen_stats.values())
    counts = dist.all_reduce_data_sum(torch.tensor(
        [len(batch.rewards), sum(batch.rewards), batch.groups, batch.groups - batch.flat_groups, generated],
        dtype=torch.float64)).tolist()
    n, reward_sum, n_groups, n_signal, generated = counts
    return {
        "stage": "first_try",
        "reward_mean": reward_sum / n if n else 0.0,
        "groups_with_signal": n_signal / n_groups if n_groups else 0.0,
        "first_try_accuracy": reward_sum / n if n else None,  # sampled at the stage's temperature
        "second_try_accuracy": None,
        "generated_tokens": generated,
    }


# -- pool checkpointing: a mined attempt as JSON --------------------------------------------------


def attempt_to_dict(attempt) -> dict:
    return dataclasses.asdict(attempt)


def attempt_from_dict(d: dict):
    from r3fast.reflect import Attempt
    from r3fast.rollout.base import Completion
    from r3fast.tasks.base import Instance

    return Attempt(**{**d, "instance": Instance(**d["instance"]), "completion": Completion(**d["completion"])})


# -- printing --------------------------------------------------------------------------------------


def format_step(step: int, steps: int, m: dict) -> str:
    first = "-" if m["first_try_accuracy"] is None else f"{m['first_try_accuracy']:.2f}"
    times = " ".join(f"{k[5:]}={m[k]:.1f}s" for k in m if k.startswith("time_") and k != "time_step")
    loss = f"{m['loss']:+.4f}" if "loss" in m else "skipped"
    stage = "first-try stage  " if m.get("stage") == "first_try" else ""
    refl = f"refl {m['reflection_length']:.0f} tok  " if "reflection_length" in m else ""
    return (f"step {step}/{steps}  {stage}reward {m['reward_mean']:.2f}  signal {m['groups_with_signal']:.2f}  "
            f"first {first}  loss {loss}  kl {m.get('kl', 0.0):.4f}  {refl}"
            f"{m['tokens_per_second']:.0f} tok/s  [{times}]")


def format_before_after(before: dict | None, after: dict, n: int) -> str:
    from r3fast.evaluate import format_lift

    rows = [("", "first try", "second try", "second try, no reflection", "reflection lift", "rescued with / without")]
    for label, report in (("before", before), ("after", after)):
        if report is None:
            continue
        c = report["counts"]
        rows.append((label, _acc(report, "first_try_accuracy", n), _acc(report, "second_try_accuracy", n),
                     _acc(report, "second_try_without_reflection_accuracy", n), format_lift(report),
                     f"{c['retry_passed']} / {c['retry_without_reflection_passed']} of {c['first_try_failed']}"))
    lines = [f"held-out accuracy ({n} instances, 95% Wilson intervals; lift: paired 95% interval)"]
    lines += [f"  {r[0]:<7}{r[1]:<24}{r[2]:<24}{r[3]:<27}{r[4]:<26}{r[5]}" for r in rows]
    return "\n".join(lines)


def _acc(report: dict, key: str, n: int) -> str:
    p = report[key]
    low, high = wilson_interval(p, n)
    return f"{p:.3f} [{low:.3f}, {high:.3f}]"
