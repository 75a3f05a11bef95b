"""The supervised stage (`stage.sft_steps`): its samples are the task's prompt and gold answer, its
update is exactly cross-entropy on the gold tokens (gradients against a plain torch oracle), it
lowers their negative log-likelihood, and the run schedules it first."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from train_helpers import RecordGrads, random_samples, tiny_policy

from r3fast.episode import TrainingSample
from r3fast.models import materialize
from r3fast.prompts import task_chat
from r3fast.tasks import get_task
from r3fast.tasks.countdown import countdown_instance, generate_countdown
from r3fast.tasks.fncall_generator import generate_function_calling
from r3fast.train.distributed import DistContext
from r3fast.train.optimizer import lr_factor
from r3fast.train.sft import SFT_LOSS, check_sft_task, sft_samples
from r3fast.train.stages import FIRST_TRY, R3, SFT, step_stage
from r3fast.train.update import PolicyLoss, collate, grpo_update


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_gold_answers_pass_their_own_verifier(seed):
    for name, instances in (("fncall-synthetic", generate_function_calling(8, seed=seed)),
                            ("countdown", generate_countdown(8, seed=seed))):
        task = get_task(name)
        verdicts = task.judge_batch(instances, [task.gold_answer(i) for i in instances])
        assert all(v.passed for v in verdicts), (name, [v.reason for v in verdicts if not v.passed])


def test_a_countdown_file_without_solutions_has_no_gold_answer():
    with pytest.raises(ValueError, match="has no solution: only generated instances carry one"):
        get_task("countdown").gold_answer(countdown_instance([1, 2], 3))


def test_sft_samples_are_the_prompt_then_the_gold_answer_then_eos():
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(materialize("tiny-random"))
    task = get_task("fncall-synthetic")
    instances = generate_function_calling(3, seed=5)
    samples = sft_samples(tokenizer, task, instances)
    for sample, instance in zip(samples, instances, strict=True):
        assert sample.context_ids == task_chat(tokenizer, task.prompt(instance))[2]
        assert sample.completion_ids[-1] == tokenizer.eos_token_id
        assert tokenizer.decode(sample.completion_ids[:-1]) == task.gold_answer(instance)
        assert sample.advantage == 1.0
    assert len({s.group_id for s in samples}) == len(samples)  # no group: nothing is normalised away


def test_a_task_without_gold_answers_is_refused_by_name():
    class NoGold:
        name = "stand-in"

    with pytest.raises(ValueError, match="'stage.sft_steps' needs a task with gold answers.*'stand-in'"):
        check_sft_task(NoGold())


def cross_entropy_oracle(model, samples):
    """Mean over all gold tokens of -log p, from the HF forward's full logits."""
    batch = collate(samples, 0, torch.device("cpu"))
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, batch.start : -1]
    logp = torch.log_softmax(logits, -1).gather(-1, batch.target_ids[..., None]).squeeze(-1)
    mask = batch.loss_mask.to(logp.dtype)
    return -(logp * mask).sum() / mask.sum()


def gold(samples):
    return [TrainingSample(s.context_ids, s.completion_ids, advantage=1.0, group_id=g) for g, s in enumerate(samples)]


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 1000), n=st.integers(1, 6), micro=st.integers(1, 4), shared=st.booleans())
def test_the_supervised_update_is_cross_entropy(seed, n, micro, shared):
    model = tiny_policy(seed)
    samples = gold(random_samples(n, seed))
    oracle = cross_entropy_oracle(model, samples)
    model.zero_grad()
    oracle.backward()
    expected = [p.grad.clone() for p in model.parameters()]

    recorder = RecordGrads(model.parameters())
    options = {**SFT_LOSS, "max_completion_length": 8}
    out = grpo_update(PolicyLoss(model), model, recorder, samples, eps_low=0.2, eps_high=0.2, micro_batch_size=micro,
                      max_grad_norm=0.0, pad_id=0, dist=DistContext(), backend="torch", shared_prefix=shared,
                      **options)
    for got, want in zip(recorder.steps[0], expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)  # the fused loss works in fp32, as elsewhere
    assert out["logp_mean"] == pytest.approx(-oracle.item(), rel=1e-6)


def test_supervised_steps_lower_the_gold_answers_nll():
    model = tiny_policy(3)
    samples = gold(random_samples(6, 3))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    nll = []
    for _ in range(5):
        out = grpo_update(PolicyLoss(model), model, optimizer, samples, eps_low=0.2, eps_high=0.2, micro_batch_size=2,
                          max_grad_norm=1.0, pad_id=0, dist=DistContext(), backend="torch",
                          max_completion_length=8, **SFT_LOSS)
        nll.append(-out["logp_mean"])
    assert nll == sorted(nll, reverse=True) and nll[-1] < 0.8 * nll[0], nll


@settings(max_examples=50, deadline=None)
@given(steps=st.integers(1, 30), data=st.data(), interleave=st.booleans())
def test_stages_come_in_order_with_the_counts_asked_for(steps, data, interleave):
    sft = data.draw(st.integers(0, steps))
    first = data.draw(st.integers(0, steps - sft))
    stages = [step_stage(s, sft_steps=sft, first_try_steps=first, steps=steps, interleave=interleave)
              for s in range(1, steps + 1)]
    assert stages[:sft] == [SFT] * sft and SFT not in stages[sft:]
    assert stages.count(FIRST_TRY) == first and stages.count(R3) == steps - sft - first
    if not interleave:
        assert stages[sft:] == [FIRST_TRY] * first + [R3] * (steps - sft - first)


def test_supervised_steps_train_at_their_own_learning_rate():
    base = lr_factor(steps=10, warmup_steps=2, schedule="cosine", min_lr_ratio=0.1)
    scaled = lr_factor(steps=10, warmup_steps=2, schedule="cosine", min_lr_ratio=0.1, sft_steps=3, sft_scale=5.0)
    assert [scaled(s) for s in range(3)] == pytest.approx([5.0 * base(s) for s in range(3)])
    assert [scaled(s) for s in range(3, 11)] == pytest.approx([base(s) for s in range(3, 11)])


def test_a_run_opens_with_the_supervised_stage(tmp_path):
    from test_train_fncall_preset import TINY

    from r3fast.train.config import load_config
    from r3fast.train.trainer import train

    # a loss configured for the RL stages that is not cross-entropy, and engine log-probs that gold answers lack:
    # the supervised step uses its own settings (SFT_LOSS) whatever the run's loss section says
    overrides = [*TINY, "data.eval_size=0", "stage.sft_batch_size=3", "stage.sft_lr=1e-3", "loss.old_logp=engine",
                 "loss.num_iterations=2", "loss.importance_sampling_level=sequence", "loss.loss_type=cispo"]
    train(load_config(preset="fncall-cpu", overrides=overrides), run_dir=tmp_path / "run")
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in rows] == [SFT, FIRST_TRY, R3]
    assert rows[0]["sft_sequences"] == 3 and rows[0]["sft_nll"] > 0 and rows[0]["lr"] == pytest.approx(1e-3)
    assert rows[1]["lr"] == pytest.approx(1e-5)  # the preset's optimizer.lr once the stage is over


def test_a_training_file_without_answers_is_refused_before_the_run_starts(tmp_path):
    from r3fast.train.config import load_config
    from r3fast.train.trainer import train

    rows = tmp_path / "countdown.jsonl"
    rows.write_text("".join(json.dumps({"nums": [i, 2, 3], "target": i + 5}) + "\n" for i in range(1, 30)))
    overrides = ["model.name=tiny-random", "rollout.engine=hf", "threads=1", "data.eval_size=4", "schedule.steps=2",
                 "stage.sft_steps=1", "stage.first_try_steps=0", "checkpoint.every=0", "logging.progress=false",
                 "logging.tensorboard=false",
                 f"task.path={rows}"]
    with pytest.raises(ValueError, match="has no solution: only generated instances carry one"):
        train(load_config(overrides=overrides), run_dir=tmp_path / "run")
    assert not (tmp_path / "run" / "eval_before.json").exists()  # refused before the held-out evaluation
