"""VLLMEngine behaviours that need CUDA: log-probs, sleep/wake with re-sync, tensor parallel, FSDP2 pushes.

The regression guarded here is TRL issue #5312: after sleep() and wake_up() the engine must
sample from the trainer's current weights, not from those it held before sleeping (level 1
restores the old copy; level 2 leaves uninitialised memory).

On CUDA with Triton, vLLM 0.32 runs Model Runner V2 by default; `VLLM_USE_V2_MODEL_RUNNER=0`
brings back V1, the runner the CPU tests exercise. vLLM reads that variable once per process
and one process holds one sleep-mode engine, so `test_engine_checks_under_each_model_runner`
runs this file's engine checks in a child process per runner; the checks themselves run only
there (RUNNER_VAR names the child's runner).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from r3fast.rollout.base import SamplingParams

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.vllm,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not importable"),
]
TOL = 2e-3  # fp32 on GPU: both sides may use TF32 / different reduction orders
GREEDY = SamplingParams(max_new_tokens=8, temperature=0.0)
RUNNER_VAR = "R3FAST_VLLM_RUNNER"
MODEL_RUNNERS = {  # runner -> VLLM_USE_V2_MODEL_RUNNER (None: vLLM's default, V2 on CUDA with Triton)
    "v1": "0",
    "default": None,
}
in_runner_child = pytest.mark.skipif(
    os.environ.get(RUNNER_VAR) not in MODEL_RUNNERS,
    reason="an engine check: runs in test_engine_checks_under_each_model_runner's child processes",
)


@pytest.mark.parametrize("runner", list(MODEL_RUNNERS))
def test_engine_checks_under_each_model_runner(runner):
    env = {k: v for k, v in os.environ.items() if k != "VLLM_USE_V2_MODEL_RUNNER"}
    env[RUNNER_VAR] = runner
    if MODEL_RUNNERS[runner] is not None:
        env["VLLM_USE_V2_MODEL_RUNNER"] = MODEL_RUNNERS[runner]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", __file__, "-m", "gpu", "-q", "-p", "no:cacheprovider", "-rs",
         "-k", "not test_engine_checks_under_each_model_runner"],  # the child runs the checks, not itself
        capture_output=True, text=True, timeout=900, env=env,
    )
    assert result.returncode == 0, f"model runner {runner}:\n" + result.stdout[-6000:] + result.stderr[-3000:]
    assert " passed" in result.stdout.splitlines()[-1], result.stdout[-2000:]  # the checks ran, not only skipped


@pytest.fixture(scope="module")
def model_path():
    from r3fast.models import materialize

    return materialize("tiny-random")


@pytest.fixture(scope="module")
def engine(model_path):
    from r3fast.rollout.vllm import VLLMEngine

    engine = VLLMEngine(model_path, dtype="float32", max_model_len=1024, kv_cache_gb=1.0,
                        gpu_memory_utilization=0.2, enable_sleep_mode=True)
    # the runner asked for is the runner that runs
    assert engine._llm.llm_engine.vllm_config.use_v2_model_runner == (os.environ[RUNNER_VAR] == "default")
    return engine


def load_trainer(model_path, seed: int):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32, attn_implementation="eager")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
            if name == "model.embed_tokens.weight":
                p.mul_(3.0)  # peaked distributions: greedy choices are not near-ties
    return model.cuda().eval()


def max_error(model, prompts, completions, temperature: float = 0.0) -> float:
    """Largest gap between the engine's log-probs and a teacher-forced forward's (temperature-scaled)."""
    worst = 0.0
    for prompt, (c,) in zip(prompts, completions, strict=True):
        ids = torch.tensor([prompt + c.token_ids], device="cuda")
        with torch.no_grad():
            logits = model(ids).logits[0, len(prompt) - 1 : -1].double()
        logp = (logits / temperature if temperature > 0 else logits).log_softmax(-1)
        expected = logp.gather(-1, torch.tensor(c.token_ids, device="cuda")[:, None])[:, 0].cpu()
        worst = max(worst, (expected - torch.tensor(c.logprobs, dtype=torch.float64)).abs().max().item())
    return worst


PROMPTS = [list(range(100, 107)), list(range(2000, 2300))]


@in_runner_child
@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_logprobs_equal_transformers_teacher_forcing(engine, model_path, temperature):
    trainer = load_trainer(model_path, seed=3)
    engine.update_weights(trainer.named_parameters())
    params = SamplingParams(max_new_tokens=8, temperature=temperature, n=1, seed=4)
    out = engine.generate(PROMPTS, params)
    assert max_error(trainer, PROMPTS, out, temperature) < TOL
    if temperature > 0:  # seeded: the same samples again
        assert [c.token_ids for (c,) in engine.generate(PROMPTS, params)] == [c.token_ids for (c,) in out]


@in_runner_child
@pytest.mark.parametrize("level", [1, 2])
def test_wake_up_resyncs_the_trainers_weights(engine, model_path, level):
    trainer = load_trainer(model_path, seed=level)
    engine.weights_source = trainer.named_parameters
    engine.update_weights(trainer.named_parameters())
    before = engine.generate(PROMPTS, GREEDY)
    assert max_error(trainer, PROMPTS, before) < TOL
    free_awake = torch.cuda.mem_get_info()[0]
    engine.sleep(level=level)
    assert torch.cuda.mem_get_info()[0] > free_awake + 512 * 2**20  # at least the 1 GB KV cache went
    with torch.no_grad():  # the trainer's step while the engine sleeps
        for p in trainer.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    engine.wake_up(["weights"])  # weights first: the push lands before the KV cache comes back
    engine.wake_up(["kv_cache"])
    after = engine.generate(PROMPTS, GREEDY)
    assert max_error(trainer, PROMPTS, after) < TOL
    assert max(abs(a - b) for (x,), (y,) in zip(before, after, strict=True)
               for a, b in zip(x.logprobs, y.logprobs, strict=False)) > 1e-2


@in_runner_child
def test_generate_after_sleep_never_uses_stale_weights(engine, model_path):
    trainer = load_trainer(model_path, seed=7)
    engine.update_weights(trainer.named_parameters())
    engine.weights_source = None
    engine.sleep(level=1)
    with pytest.raises(RuntimeError, match="stale"):
        engine.generate(PROMPTS, GREEDY)
    with torch.no_grad():
        trainer.model.norm.weight.mul_(1.5)
    engine.update_weights(trainer.named_parameters())  # wakes the weights, pushes, clears the flag
    assert max_error(trainer, PROMPTS, engine.generate(PROMPTS, GREEDY)) < TOL  # wakes the KV cache


@in_runner_child
def test_engine_weights_equal_the_trainers(engine, model_path):
    trainer = load_trainer(model_path, seed=8)
    engine.update_weights(trainer.named_parameters())
    held = engine.engine_weights()
    for name, tensor in trainer.state_dict().items():
        torch.testing.assert_close(held[name].float().cpu(), tensor.cpu(), rtol=0, atol=1e-5, msg=name)


TORCHRUN_WORKER = textwrap.dedent('''
    """Each rank: an FSDP2-sharded trainer and one colocated engine of a TP=2 group."""
    import os, sys
    import torch, torch.distributed as dist
    from torch.distributed.fsdp import fully_shard
    from transformers import AutoModelForCausalLM
    from r3fast.rollout.base import SamplingParams
    from r3fast.rollout.vllm import VLLMEngine

    path = sys.argv[1]
    rank = int(os.environ["RANK"])
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl")
    engine = VLLMEngine(path, dtype="float32", tensor_parallel_size=2, kv_cache_gb=1.0,
                        gpu_memory_utilization=0.2, max_model_len=1024)
    reference = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).cuda().eval()
    with torch.no_grad():
        for p in reference.parameters():
            p.mul_(1.1)
    trainer = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).cuda()
    trainer.load_state_dict(reference.state_dict())
    for layer in trainer.model.layers:
        fully_shard(layer)
    fully_shard(trainer)
    engine.update_weights(trainer.named_parameters())  # DTensors, gathered one at a time
    prompt = list(range(100, 110))
    (c,) = engine.generate([prompt], SamplingParams(max_new_tokens=6, temperature=0.0))[0]
    with torch.no_grad():
        logp = reference(torch.tensor([prompt + c.token_ids], device="cuda")).logits[0, 9:-1].double().log_softmax(-1)
    expected = logp.gather(-1, torch.tensor(c.token_ids, device="cuda")[:, None])[:, 0].cpu()
    error = (expected - torch.tensor(c.logprobs, dtype=torch.float64)).abs().max().item()
    assert error < 2e-3, error
    print(f"rank {rank} ok {error:.2e}")
    dist.destroy_process_group()
''')


@in_runner_child
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA devices")
def test_torchrun_tensor_parallel_engine_takes_fsdp2_pushes(model_path, tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(TORCHRUN_WORKER)
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(script), str(model_path)],
        capture_output=True, text=True, timeout=600, env={**os.environ, "CUDA_VISIBLE_DEVICES": "0,1"},
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "rank 0 ok" in result.stdout and "rank 1 ok" in result.stdout
