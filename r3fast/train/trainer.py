"""`r3fast train`: the R3 training loop, top to bottom in `train()`, one step in `train_step()`.

One step: take failed prompts from the pool -> sample G reflections each and retry after each
-> rewards and group advantages -> GRPO update on the reflection tokens -> new weights into the
rollout engine. Steps may instead belong to the stages before R3 (train/stages.py): supervised
steps on gold answers (train/sft.py, stage "sft"), then plain GRPO on sampled first attempts
(train/warmup.py, stage "first_try").
The pieces live in the modules that own them: state.py (policy, engine, optimizer, pool,
checkpoints), r3fast.reflect (rollouts), update.py (loss and optimizer step), metrics.py.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import yaml
from tqdm import tqdm

from r3fast.engine_log import route_engine_logs
from r3fast.evaluate import evaluate, evaluation_config
from r3fast.reflect import ReflectConfig, reflect_retry
from r3fast.rollout.base import GenerationStats, SamplingParams
from r3fast.tasks import get_task
from r3fast.tasks.selection import task_instances, training_generator
from r3fast.timing import PhaseTimer
from r3fast.train import checkpoint as ckpt
from r3fast.train.config import TrainConfig, resolve_run_dir, to_dict
from r3fast.train.distributed import init_distributed, shutdown
from r3fast.train.metrics import (
    EVAL_AFTER,
    EVAL_BEFORE,
    MetricsLogger,
    first_try_metrics,
    format_before_after,
    format_step,
    progress_fields,
    r3_metrics,
)
from r3fast.train.optimizer import advance_schedule
from r3fast.train.plot import plot_run
from r3fast.train.sft import SFT_LOSS, check_sft_task, sft_metrics, sft_samples
from r3fast.train.stages import FIRST_TRY, SFT, step_stage
from r3fast.train.state import TrainState
from r3fast.train.torch_setup import configure_torch, step_seed
from r3fast.train.update import grpo_update
from r3fast.train.warmup import warmup_batch


def train(cfg: TrainConfig, *, run_dir: str | Path | None = None, resume: bool = False,
          name: str | None = None, task=None) -> dict:
    """Train as `cfg` says; returns the final summary (also written to RUN_DIR/summary.json).

    Without `run_dir` the run goes to runs/<name>-<time>.
    `task` replaces the task `cfg.task` names (its instances still come from cfg.task.name):
    for tasks defined in code rather than by name.
    """
    started = time.perf_counter()
    dist = init_distributed(cfg.distributed.strategy, cfg.distributed.backend, cfg.model.device,
                            cfg.rollout.tensor_parallel_size)
    configure_torch(threads=cfg.threads, deterministic=cfg.deterministic, seed=cfg.seed, data_rank=dist.data_rank)
    for key, value in (("data.prompts_per_step", cfg.data.prompts_per_step),
                       ("stage.sft_batch_size", cfg.stage.sft_batch_size)):
        if value % dist.data_world:
            raise ValueError(f"config key {key!r} ({value}) must be a multiple of the number of data ranks "
                             f"({dist.data_world}: ranks / rollout.tensor_parallel_size)")
    run_dir = Path(dist.broadcast_object(str(resolve_run_dir(run_dir, name))))
    say = print if dist.is_main else (lambda *a, **k: None)
    resume_from = None
    if resume:  # the newest checkpoint that verifies
        found = ckpt.latest_valid_checkpoint(run_dir) if dist.is_main else None
        resume_from = dist.broadcast_object(None if found is None else str(found))
        if resume_from is None:
            say(f"r3fast train: no valid checkpoint in {run_dir}; starting from step 0", file=sys.stderr)
    run_dir.mkdir(parents=True, exist_ok=True)
    if dist.is_main:
        (run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    route_engine_logs(run_dir / ("engine.log" if dist.is_main else f"engine.rank{dist.rank}.log"), cfg.logging.verbose)

    t = cfg.task
    task = task if task is not None else get_task(t.name, num_demos=t.num_demos, rotate_demos=t.rotate_demos,
                                                  match_demo_size=t.match_demo_size)
    heldout, training = task_instances(t.name, path=t.path, eval_task=cfg.data.eval_task,
                                       eval_size=cfg.data.eval_size, eval_seed=cfg.data.eval_seed)
    if cfg.stage.sft_steps:
        check_sft_task(task, training[:8])  # before the held-out evaluation, not minutes into the run
    generate = training_generator(t.name, cfg.data.eval_task)
    reflect = ReflectConfig.from_config(cfg.rollout, cfg.task, scale_rewards=cfg.loss.scale_rewards, seed=cfg.seed)
    state = TrainState.build(cfg, dist, run_dir, task, reflect, {i.id for i in heldout}, training, generate,
                             Path(resume_from) if resume_from else None)
    if resume_from:
        say(f"r3fast train: resuming {run_dir} from {resume_from} (step {state.step})")

    eval_config = evaluation_config(reflect, seed=cfg.data.eval_seed)
    before = held_out_evaluation(state, heldout, eval_config, run_dir / EVAL_BEFORE, cfg.logging.progress,
                                 "initial", reuse=state.step > 0)

    logger = MetricsLogger(run_dir, enabled=dist.is_main, resume_step=state.step if resume_from else None,
                           tensorboard=cfg.logging.tensorboard, wandb=cfg.logging.wandb,
                           wandb_project=cfg.logging.wandb_project, config=to_dict(cfg))
    bar = tqdm(total=cfg.schedule.steps, initial=state.step, desc="train", unit="step",
               disable=not (cfg.logging.progress and dist.is_main))
    for step in range(state.step + 1, cfg.schedule.steps + 1):
        metrics = train_step(state, cfg, step)
        logger.log(step, metrics)
        bar.update(1)
        bar.set_postfix(progress_fields(metrics))
        if dist.is_main and step % cfg.logging.print_every == 0:
            bar.write(format_step(step, cfg.schedule.steps, metrics))
        every = cfg.checkpoint.every
        if every and (step % every == 0 or step == cfg.schedule.steps):
            state.save(step, cfg)
        state.step = step
    bar.close()
    logger.close()

    after = held_out_evaluation(state, heldout, eval_config, run_dir / EVAL_AFTER, cfg.logging.progress,
                                "trained")
    summary = {"run_dir": str(run_dir), "steps": cfg.schedule.steps, "seconds": time.perf_counter() - started}
    if after is not None:
        summary.update(before=before, after=after)
        say(format_before_after(before, after, len(heldout)))
    if dist.is_main:
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
        say("plots: " + ", ".join(p.name for p in plot_run(run_dir)))
        say(f"run folder: {run_dir}  ({summary['seconds']:.0f} s)")
    shutdown(dist)
    return summary


def train_step(state: TrainState, cfg: TrainConfig, step: int) -> dict:
    """One training step, supervised, first-try stage or R3: rollout, update, weights to the engine; its metrics."""
    dist, timer = state.dist, PhaseTimer()
    seed = step_seed(cfg.seed, step, dist.data_rank)
    prompts = cfg.data.prompts_per_step // dist.data_world
    attempted, first_passed = state.pool.attempted, state.pool.first_try_passed
    state.generation.clear()
    st, loss = cfg.stage, cfg.loss
    stage = step_stage(step, sft_steps=st.sft_steps, first_try_steps=st.first_try_steps, steps=cfg.schedule.steps,
                       interleave=st.interleave)
    # the loss as configured; the supervised stage's own settings make it cross-entropy (train/sft.py)
    options = dict(loss_type=loss.loss_type, beta=loss.beta, num_iterations=loss.num_iterations,
                   sampling_correction=loss.sampling_correction, old_logp_source=loss.old_logp,
                   importance_sampling_level=loss.importance_sampling_level)
    if stage == SFT:
        with timer("scoring"):  # templating and tokenising the gold answers
            samples = sft_samples(state.tokenizer, state.task,
                                  state.fresh_instances(st.sft_batch_size // dist.data_world, seed))
        options.update(SFT_LOSS)
        options["max_completion_length"] = max((len(s.completion_ids) for s in samples), default=1)
    elif stage == FIRST_TRY:
        # warm-up stage: G sampled first attempts per fresh task, plain GRPO on the attempts
        params = SamplingParams(cfg.rollout.attempt_max_new_tokens, st.first_try_temperature, cfg.rollout.top_p,
                                st.first_try_group_size, (), seed)
        instances = state.fresh_instances(prompts, seed)
        with timer("scoring"):  # templating and verifying; the generation inside is timed as such
            batch = warmup_batch(state.engine, state.tokenizer, state.task, instances, params,
                                 scale_rewards=loss.scale_rewards,
                                 stats=state.generation.setdefault("first_try", GenerationStats()), timer=timer)
        samples = batch.samples
        options.update(temperature=st.first_try_temperature, max_completion_length=cfg.rollout.attempt_max_new_tokens)
    else:
        with timer("generation"):  # online mining generates: all of it counts as generation
            failed = state.pool.take(prompts, seed)
        # G reflections per failure, a retry after each, verified; group advantages
        with timer("scoring"):
            result = reflect_retry(state.engine, state.tokenizer, state.task, [],
                                   dataclasses.replace(state.reflect, seed=seed), attempts=failed, timer=timer)
        # every reflection: flat groups count in the loss's normalisation, as in TRL
        samples = result.episodes
        options.update(temperature=cfg.rollout.reflection_temperature,
                       max_completion_length=cfg.rollout.reflection_max_new_tokens)

    state.engine.sleep(level=2)  # the push after the update overwrites every weight: nothing to keep
    # HF checkpoints activations only in train mode; otherwise eval mode keeps dropout off.
    state.policy.train(cfg.model.gradient_checkpointing)
    with timer("loss"):
        update = grpo_update(
            state.module, state.policy, state.optimizer, samples, eps_low=loss.eps_low, eps_high=loss.eps_high,
            micro_batch_size=loss.micro_batch_size, max_grad_norm=cfg.optimizer.max_grad_norm,
            pad_id=state.pad_id, dist=dist, ref_model=state.reference, sampling_cap=loss.sampling_cap,
            backend=loss.backend, shared_prefix=loss.shared_prefix, timer=timer, **options,
        )
    state.policy.eval()
    lr = advance_schedule(state.scheduler)
    with timer("sync"):
        state.push_weights()

    if stage == SFT:
        metrics = sft_metrics(samples, update, dist)
    elif stage == FIRST_TRY:
        metrics = first_try_metrics(batch, state.generation, dist)
    else:
        metrics = r3_metrics(result, state.generation, state.pool.attempted - attempted,
                             state.pool.first_try_passed - first_passed, dist)
    metrics["tokens_per_second"] = metrics["generated_tokens"] / max(timer.seconds["generation"], 1e-9)
    return {**metrics, **update, "lr": lr, **{f"time_{k}": v for k, v in timer.seconds.items()},
            "time_step": sum(timer.seconds.values())}


def held_out_evaluation(state: TrainState, heldout, config: ReflectConfig, path: Path, progress: bool, which: str,
                        reuse: bool = False) -> dict | None:
    """The held-out first/second-try report (None without held-out instances), written to `path`.
    Data rank 0's ranks evaluate (a tensor-parallel engine generates only when every rank holding a
    shard of it does), rank 0 writes; `reuse` reads an earlier report of the same model instead."""
    dist, report = state.dist, None
    if heldout and dist.data_rank == 0:
        if reuse and path.is_file():
            report = json.loads(path.read_text())
        else:
            if dist.is_main:
                print(f"evaluating the {which} model on {len(heldout)} held-out instances")
            report = evaluate(state.engine, state.tokenizer, state.task, heldout, config, progress=progress)
            if dist.is_main:
                path.write_text(json.dumps(report, indent=1))
    dist.barrier()
    return report
