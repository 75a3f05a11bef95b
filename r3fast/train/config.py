"""The one configuration tree of `r3fast train`, loaded from YAML with dotted overrides.

    cfg = load_config(preset="countdown-cpu", overrides=["loss.beta=0.001", "rollout.group_size=8"])

Every field has a default and a one-line comment. Values are checked up front: an unknown key or
a bad value stops with a ValueError naming the key and what it accepts, before any model loads.
Precedence, lowest first: dataclass defaults, the preset, the --config file, the overrides.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

DEFAULT_PRESET = "countdown-cpu"


def choice(default: str, *allowed: str) -> Any:
    """A string field restricted to `allowed` (the default first)."""
    return field(default=default, metadata={"choices": (default, *allowed)})


@dataclass
class ModelConfig:
    name: str = "smollm2-135m-instruct"   # r3fast.models name (smollm2-135m-instruct, tiny-random) or a local HF folder
    dtype: str = choice("float32", "bfloat16")  # dtype of the trained weights (bf16 on GPUs; CPU wants fp32)
    device: str = choice("auto", "cpu", "cuda")  # auto: this rank's CUDA device when there is one, else CPU
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory, ~30% more time


@dataclass
class TaskConfig:
    name: str = "countdown-easy"           # r3fast.tasks name (countdown, countdown-easy, function_calling, ...)
    path: str = ""                         # task data file, for tasks read from disk (xLAM JSONL, TinyZero parquet)
    num_demos: int = 1                     # few-shot chat demonstrations before each task (0: zero-shot)
    rotate_demos: bool = True              # vary the demonstrations per instance (else always the first ones)
    match_demo_size: bool = True           # Countdown: demonstrations with as many numbers as the task
    reflection_request: str = ""           # user turn asking for a reflection; empty: r3fast.prompts' default
    retry_request: str = ""                # user turn asking for the retry, with {task}; empty: the layout's default
    retry_layout: str = choice("continue", "fresh")  # continue the chat, or a fresh task prompt quoting attempt + reflection
    quote_attempt: bool = True             # fresh layout: the retry quotes the failed answer (false: only the reflection)


@dataclass
class DataConfig:
    source: str = choice("online", "offline")  # online: mine failures as training goes; offline: read failures_path
    failures_path: str = ""                # failure dataset JSONL written by `r3fast failures` (source=offline)
    prompts_per_step: int = 8              # failed prompts per training step, all ranks together (each is a group)
    mining_batch: int = 32                 # fresh instances one online mining round attempts, per rank
    seed: int = 0                          # seed of the training instance stream and its order
    eval_size: int = 100                   # held-out instances for the before/after evaluation (0: skip it)
    eval_seed: int = 1_000_003             # seed of the held-out instances: never drawn for training
    # held-out set from another source: "bfcl" evaluates its simple_python questions, and training must share
    # no function name or request with any BFCL question (checked); empty: eval_size instances of task.name
    eval_task: str = choice("", "bfcl")


@dataclass
class RolloutConfig:
    engine: str = choice("auto", "hf", "vllm")  # auto: vllm when importable, else transformers
    group_size: int = 4                    # G: reflections sampled per failed prompt (one GRPO group)
    attempt_max_new_tokens: int = 64       # budget of first attempts (online mining) and retries
    attempt_temperature: float = 0.0       # first attempts: greedy finds what the model reliably fails
    reflection_max_new_tokens: int = 48    # budget of a self-reflection: the span that gets the loss
    reflection_temperature: float = 0.7    # reflections must differ within a group, yet stay coherent
    retry_temperature: float = 0.0         # greedy retries: the reward measures the reflection, not luck
    retries_per_reflection: int = 1        # k retries after each reflection; reward = the fraction that pass (1: binary)
    reflection_answer_tags: str = choice("allow", "ban", "stop")  # the task's answer tags in a reflection: banned, or ending it
    top_p: float = 1.0                     # nucleus mass for sampled turns
    batch_size: int = 32                   # prompts the engine decodes at once
    gpu_memory_utilization: float = 0.3    # vLLM only: share of GPU memory for its KV cache (colocated)
    tensor_parallel_size: int = 1          # vLLM only: GPUs per engine; under torchrun, groups of this many ranks share one


@dataclass
class StageConfig:
    # supervised stage: the first N of schedule.steps imitate the task's gold answers (train/sft.py; 0: none)
    sft_steps: int = 0
    sft_batch_size: int = 32               # gold answers per supervised step (fresh training instances, never held-out)
    sft_lr: float = 0.0                    # learning rate of the supervised steps (0: optimizer.lr)
    first_try_steps: int = 0               # warm-up stage: the next N steps train first attempts with plain GRPO (0: R3 only)
    first_try_group_size: int = 8          # G sampled first attempts per task in that stage
    first_try_temperature: float = 1.0     # their sampling temperature (the loss uses the same)
    interleave: bool = False               # spread the first-try steps evenly among the R3 steps instead of right after the supervised ones


@dataclass
class LossConfig:
    # normalisation as TRL's GRPOTrainer defines it; cispo: MiniMax-M1's loss, -min(r, eps_high).detach() * A * logp
    loss_type: str = choice("grpo", "bnpo", "dr_grpo", "dapo", "cispo")
    beta: float = 0.0                      # k3 KL weight against a frozen reference (the paper: 0.001); 0 loads none
    eps_low: float = 0.2                   # ratio clipped below at 1 - eps_low
    eps_high: float = 0.2                  # ratio clipped above at 1 + eps_high (DAPO: 0.28)
    num_iterations: int = 1                # mu: optimizer steps on each generated batch (>1 uses importance ratios)
    micro_batch_size: int = 8              # sequences per forward/backward; the rest is gradient accumulation
    old_logp: str = choice("trainer", "engine")  # trainer: the policy's, from the first pass over a batch; engine: the sampler's
    scale_rewards: bool = True             # divide group advantages by the group std (False: Dr. GRPO)
    backend: str = choice("auto", "torch", "triton")  # fused loss implementation (auto: triton on CUDA)
    shared_prefix: bool = True             # forward a context its group shares once, not G times (same gradients)
    # weight each token's loss by exp(trainer's old logp - engine's logp), per token or summed per
    # sequence, truncated at the cap or zeroed above it (TRL 1.16's vllm_importance_sampling_mode); null: off
    sampling_correction: str | None = choice(None, "token_truncate", "token_mask", "sequence_truncate", "sequence_mask")
    sampling_cap: float = 3.0              # the cap on that ratio (TRL's vllm_importance_sampling_cap)
    importance_sampling_level: str = choice("token", "sequence")  # sequence: GSPO, one ratio per sequence


@dataclass
class OptimizerConfig:
    lr: float = 1e-6                       # peak AdamW learning rate
    weight_decay: float = 0.0              # AdamW decoupled weight decay
    beta1: float = 0.9                     # AdamW first-moment decay
    beta2: float = 0.99                    # AdamW second-moment decay
    eps: float = 1e-8                      # AdamW denominator epsilon
    max_grad_norm: float = 1.0             # clip the global gradient norm to this (0: no clipping)


@dataclass
class ScheduleConfig:
    steps: int = 100                       # training steps (each: one batch of groups, num_iterations updates)
    warmup_steps: int = 0                  # linear warm-up from 0 over these steps
    lr_schedule: str = choice("constant", "cosine")  # after warm-up
    min_lr_ratio: float = 0.1              # cosine ends at lr * min_lr_ratio


@dataclass
class CheckpointConfig:
    every: int = 50                        # save every N steps and at the last step (0: never save)
    keep_last: int = 2                     # valid checkpoints kept; older ones are deleted


@dataclass
class LoggingConfig:
    progress: bool = True                  # tqdm progress bars with ETA
    tensorboard: bool = True               # also write TensorBoard events when tensorboard is installed
    wandb: bool = False                    # also log to Weights & Biases (needs wandb and a network)
    wandb_project: str = "r3fast"          # W&B project name
    print_every: int = 1                   # print a one-line summary every N steps
    verbose: bool = False                  # vLLM/transformers/torch logs on the terminal instead of RUN_DIR/engine.log


@dataclass
class DistributedConfig:
    strategy: str = choice("ddp", "fsdp2")  # how torchrun ranks hold the policy: replicated (DDP) or sharded (FSDP2)
    backend: str = choice("auto", "gloo", "nccl")  # auto: nccl on CUDA, gloo on CPU


@dataclass
class TrainConfig:
    seed: int = 0                          # seeds python, numpy, torch and the samplers
    deterministic: bool = False            # torch.use_deterministic_algorithms: bit-reproducible on CPU, slower
    threads: int = 0                       # torch CPU threads per rank (0: this node's cores / its ranks)
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    stage: StageConfig = field(default_factory=StageConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)


# Ranges checked after loading: key -> (predicate, what is expected).
_RANGES: dict[str, tuple[typing.Callable[[Any], bool], str]] = {
    "threads": (lambda v: v >= 0, ">= 0"),
    "task.num_demos": (lambda v: v >= 0, ">= 0"),
    "data.prompts_per_step": (lambda v: v >= 1, ">= 1"),
    "data.mining_batch": (lambda v: v >= 1, ">= 1"),
    "data.eval_size": (lambda v: v >= 0, ">= 0"),
    "rollout.group_size": (lambda v: v >= 2, ">= 2 (a group of one has no baseline)"),
    "rollout.attempt_max_new_tokens": (lambda v: v >= 1, ">= 1"),
    "rollout.reflection_max_new_tokens": (lambda v: v >= 1, ">= 1"),
    "rollout.attempt_temperature": (lambda v: v >= 0, ">= 0"),
    "rollout.reflection_temperature": (lambda v: v > 0, "> 0 (greedy reflections would all be equal)"),
    "rollout.retry_temperature": (lambda v: v >= 0, ">= 0"),
    "rollout.retries_per_reflection": (lambda v: v >= 1, ">= 1 (each reflection needs a retry to be rewarded)"),
    "rollout.top_p": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "rollout.batch_size": (lambda v: v >= 1, ">= 1"),
    "rollout.gpu_memory_utilization": (lambda v: 0 < v < 1, "in (0, 1)"),
    "rollout.tensor_parallel_size": (lambda v: v >= 1, ">= 1"),
    "stage.sft_steps": (lambda v: v >= 0, ">= 0"),
    "stage.sft_batch_size": (lambda v: v >= 1, ">= 1"),
    "stage.sft_lr": (lambda v: v >= 0, ">= 0 (0: optimizer.lr)"),
    "stage.first_try_steps": (lambda v: v >= 0, ">= 0"),
    "stage.first_try_group_size": (lambda v: v >= 2, ">= 2 (a group of one has no baseline)"),
    "stage.first_try_temperature": (lambda v: v > 0, "> 0 (greedy attempts would all be equal)"),
    "loss.beta": (lambda v: v >= 0, ">= 0"),
    "loss.eps_low": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "loss.eps_high": (lambda v: v >= 0, ">= 0"),
    "loss.num_iterations": (lambda v: v >= 1, ">= 1"),
    "loss.micro_batch_size": (lambda v: v >= 1, ">= 1"),
    "loss.sampling_cap": (lambda v: v > 1, "> 1 (a cap of 1 or less would cut the on-policy ratio of 1)"),
    "optimizer.lr": (lambda v: v > 0, "> 0"),
    "optimizer.weight_decay": (lambda v: v >= 0, ">= 0"),
    "optimizer.beta1": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "optimizer.beta2": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "optimizer.eps": (lambda v: v > 0, "> 0"),
    "optimizer.max_grad_norm": (lambda v: v >= 0, ">= 0"),
    "schedule.steps": (lambda v: v >= 1, ">= 1"),
    "schedule.warmup_steps": (lambda v: v >= 0, ">= 0"),
    "schedule.min_lr_ratio": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "checkpoint.every": (lambda v: v >= 0, ">= 0"),
    "checkpoint.keep_last": (lambda v: v >= 1, ">= 1"),
    "logging.print_every": (lambda v: v >= 1, ">= 1"),
}


def _fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _coerce(key: str, value: Any, expected: type, f: dataclasses.Field) -> Any:
    """`value` as the field's type, or a ValueError naming `key` and what it accepts."""
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if expected is float and isinstance(value, str):
        try:  # YAML 1.1 reads "1e-6" (no dot) as a string
            value = float(value)
        except ValueError:
            pass
    if expected is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)  # a folder or model name that happens to parse as a number
    if value is None and expected is str:
        value = ""
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise ValueError(f"config key {key!r} expects {getattr(expected, '__name__', expected)}, got {value!r}")
    choices = f.metadata.get("choices")
    if choices and value not in choices:
        shown = ", ".join("null" if c is None else c for c in choices)
        raise ValueError(f"config key {key!r} must be one of {shown}; got {value!r}")
    return value


def _apply(obj: Any, values: dict, prefix: str, source: str) -> None:
    if not isinstance(values, dict):
        raise ValueError(f"{source}: {prefix.rstrip('.') or 'the top level'} must be a mapping, got {values!r}")
    known = _fields(type(obj))
    hints = typing.get_type_hints(type(obj))
    for name, value in values.items():
        key = f"{prefix}{name}"
        if name not in known:
            raise ValueError(f"{source}: unknown config key {key!r}; allowed keys here: {', '.join(known)}")
        current = getattr(obj, name)
        if dataclasses.is_dataclass(current):
            _apply(current, value, f"{key}.", source)
        else:
            setattr(obj, name, _coerce(key, value, hints[name], known[name]))


def _check_ranges(cfg: TrainConfig) -> None:
    for key, (ok, expected) in _RANGES.items():
        value = get_key(cfg, key)
        if not ok(value):
            raise ValueError(f"config key {key!r} must be {expected}; got {value!r}")
    if cfg.schedule.warmup_steps > cfg.schedule.steps:
        raise ValueError(f"config key 'schedule.warmup_steps' must be <= schedule.steps ({cfg.schedule.steps}); "
                         f"got {cfg.schedule.warmup_steps}")
    if cfg.stage.sft_steps + cfg.stage.first_try_steps > cfg.schedule.steps:
        raise ValueError(f"config keys 'stage.sft_steps' + 'stage.first_try_steps' must be <= schedule.steps "
                         f"({cfg.schedule.steps}); got {cfg.stage.sft_steps} + {cfg.stage.first_try_steps} "
                         f"(shortening a run? lower the stages too)")
    if cfg.loss.sampling_correction and cfg.loss.old_logp == "engine":
        raise ValueError("config key 'loss.sampling_correction' needs loss.old_logp=trainer: with old_logp=engine "
                         "the ratio it corrects by is the engine's against itself, always 1")
    if not cfg.task.quote_attempt and cfg.task.retry_layout != "fresh":
        raise ValueError("config key 'task.quote_attempt' can be false only with task.retry_layout=fresh: "
                         "the continued chat holds the failed attempt")
    if cfg.data.eval_task and cfg.task.name.startswith("countdown"):
        raise ValueError(f"config key 'data.eval_task' ({cfg.data.eval_task!r}) holds function-calling questions; "
                         f"task.name must be a function-calling task, got {cfg.task.name!r}")
    if cfg.data.source == "offline" and not cfg.data.failures_path:
        raise ValueError("config key 'data.failures_path' must name a failure dataset JSONL when data.source=offline")
    if cfg.rollout.tensor_parallel_size > 1 and cfg.rollout.engine == "hf":
        raise ValueError(f"config key 'rollout.tensor_parallel_size' ({cfg.rollout.tensor_parallel_size}) > 1 shards "
                         f"a vLLM engine; rollout.engine=hf samples with the policy itself: use vllm or auto")


def get_key(cfg: TrainConfig, key: str) -> Any:
    obj = cfg
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def parse_override(text: str) -> dict:
    """'loss.beta=0.001' -> {'loss': {'beta': 0.001}}; the value is read as YAML (numbers, true/false)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"override {text!r} must look like section.key=value, e.g. loss.beta=0.001")
    value = yaml.safe_load(raw) if raw.strip() else ""
    nested: dict = value
    for part in reversed(key.strip().split(".")):
        nested = {part: nested}
    return nested


def preset_names() -> list[str]:
    return sorted(p.name[: -len(".yaml")] for p in resources.files("r3fast.train").joinpath("presets").iterdir()
                  if p.name.endswith(".yaml"))


def read_yaml(path: str | Path, what: str) -> dict:
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{what} {str(path)!r} is not valid YAML: {exc}") from None
    return data


def load_config(
    config_path: str | Path | None = None,
    preset: str | None = None,
    overrides: typing.Sequence[str] = (),
) -> TrainConfig:
    """Defaults <- preset <- config file <- overrides, validated. No preset and no file: DEFAULT_PRESET."""
    cfg = TrainConfig()
    if preset is None and config_path is None:
        preset = DEFAULT_PRESET
    if preset is not None:
        if preset not in preset_names():
            raise ValueError(f"unknown preset {preset!r}; presets: {', '.join(preset_names())}")
        source = resources.files("r3fast.train").joinpath("presets", f"{preset}.yaml")
        _apply(cfg, yaml.safe_load(source.read_text()) or {}, "", f"preset {preset}")
    if config_path is not None:
        _apply(cfg, read_yaml(config_path, "config file"), "", f"config file {config_path}")
    for text in overrides:
        _apply(cfg, parse_override(text), "", f"override {text!r}")
    _check_ranges(cfg)
    return cfg


def to_dict(cfg: TrainConfig) -> dict:
    return dataclasses.asdict(cfg)


def save_config(cfg: TrainConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def config_from_dict(values: dict, source: str = "saved config") -> TrainConfig:
    cfg = TrainConfig()
    _apply(cfg, values, "", source)
    _check_ranges(cfg)
    return cfg


def resolve_run_dir(run_dir: str | Path | None, name: str | None) -> Path:
    """`run_dir`, or runs/<name>-<time> (name: the preset or config file the run came from)."""
    if run_dir:
        return Path(run_dir)
    from datetime import datetime

    return Path("runs") / f"{name or DEFAULT_PRESET}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def resumable_config(run_dir: str | Path, overrides: typing.Sequence[str] = ()) -> TrainConfig:
    """The config a run was started with (RUN_DIR/config.yaml), with `overrides` on top."""
    path = Path(run_dir) / "config.yaml"
    if not Path(run_dir).is_dir():
        raise FileNotFoundError(f"--resume: run folder {str(run_dir)!r} does not exist")
    values = read_yaml(path, "run config")
    for text in overrides:
        _merge(values, parse_override(text))
    return config_from_dict(values, f"{path} with overrides")


def _merge(into: dict, update: dict) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def describe_config(cfg: TrainConfig) -> list[tuple[str, Any, Any, str]]:
    """(dotted key, value in `cfg`, default, one-line comment) for every leaf key, in declaration order.

    The comments are read from this file's source, the one place they are written: the comment
    after a field, else the comment lines right above it.
    """
    import ast
    import io
    import tokenize

    source = Path(__file__).read_text(encoding="utf-8")
    comments = {tok.start[0]: tok.string.lstrip("#").strip()
                for tok in tokenize.generate_tokens(io.StringIO(source).readline) if tok.type == tokenize.COMMENT}
    lines = source.splitlines()
    field_comments: dict[tuple[str, str], str] = {}
    for cls in ast.parse(source).body:
        if not isinstance(cls, ast.ClassDef):
            continue
        for stmt in cls.body:
            if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
                continue
            text = [comments[n] for n in range(stmt.lineno, stmt.end_lineno + 1) if n in comments]
            above = stmt.lineno - 1
            while not text and above in comments and lines[above - 1].lstrip().startswith("#"):
                above -= 1
            text = text or [comments[n] for n in range(above + 1, stmt.lineno)]
            field_comments[cls.name, stmt.target.id] = " ".join(text)

    rows: list[tuple[str, Any, Any, str]] = []

    def walk(obj: Any, default: Any, prefix: str) -> None:
        for f in dataclasses.fields(obj):
            value, default_value = getattr(obj, f.name), getattr(default, f.name)
            if dataclasses.is_dataclass(value):
                walk(value, default_value, f"{prefix}{f.name}.")
            else:
                rows.append((prefix + f.name, value, default_value, field_comments.get((type(obj).__name__, f.name), "")))

    walk(cfg, TrainConfig(), "")
    return rows
