"""Two gloo ranks with uneven shares of a batch update the policy as one process with the whole batch."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp
from train_helpers import naive_loss, random_samples, tiny_policy

from r3fast.train.distributed import DistContext, full_state_dict, wrap_policy
from r3fast.train.update import PolicyLoss, grpo_update

N_SAMPLES = 7
SPLIT = 5  # rank 0 gets 5 samples, rank 1 gets 2: different micro-batch counts per rank


def run_updates(model, module, samples, dist, loss_type, shared_prefix=True):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(2):
        grpo_update(module, model, optimizer, samples, loss_type=loss_type, beta=0.0, eps_low=0.2, eps_high=0.2,
                    num_iterations=1, micro_batch_size=2, old_logp_source="trainer", temperature=1.0,
                    max_completion_length=8, max_grad_norm=0.0, pad_id=0, dist=dist, shared_prefix=shared_prefix)


def paired_samples():
    """random_samples whose contexts come in pairs (0, 1), (2, 3), ...: rank 0's micro-batches share a
    context (the shared-prefix forward), rank 1's do not."""
    samples = random_samples(N_SAMPLES)
    for i in range(1, N_SAMPLES, 2):
        samples[i].context_ids = list(samples[i - 1].context_ids)
    return samples


# Every loss_type's cross-rank normalisation, under both ways of holding the policy.
CASES = [("grpo", "ddp"), ("dapo", "ddp"), ("bnpo", "ddp"), ("dr_grpo", "fsdp2"), ("dapo", "fsdp2")]
SHARED_PREFIX_CASES = [("grpo", "ddp"), ("dapo", "fsdp2")]


def worker(rank, world, init_file, out_path):
    torch.set_num_threads(1)
    tdist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        results = {}
        for loss_type, strategy in CASES:
            dist = DistContext(rank=rank, world_size=world, strategy=strategy)
            model = tiny_policy()
            samples = random_samples(N_SAMPLES)
            mine = samples[:SPLIT] if rank == 0 else samples[SPLIT:]
            module = wrap_policy(PolicyLoss(model), model, dist)
            run_updates(model, module, mine, dist, loss_type)
            results[(loss_type, strategy)] = {k: v.clone() for k, v in full_state_dict(model, dist).items()}
        for loss_type, strategy in SHARED_PREFIX_CASES:
            dist = DistContext(rank=rank, world_size=world, strategy=strategy)
            model = tiny_policy()
            samples = paired_samples()
            mine = samples[:SPLIT] if rank == 0 else samples[SPLIT:]
            run_updates(model, wrap_policy(PolicyLoss(model), model, dist), mine, dist, loss_type)
            results[("shared-prefix", loss_type, strategy)] = {
                k: v.clone() for k, v in full_state_dict(model, dist).items()}
        if rank == 0:
            torch.save(results, out_path)
    finally:
        tdist.destroy_process_group()


@pytest.fixture(scope="module")
def two_rank_results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gloo")
    mp.spawn(worker, args=(2, str(tmp / "init"), str(tmp / "ranks.pt")), nprocs=2, join=True)
    return torch.load(tmp / "ranks.pt")


@pytest.mark.parametrize("loss_type,strategy", CASES)
def test_two_gloo_ranks_equal_one_process(two_rank_results, loss_type, strategy):
    samples = random_samples(N_SAMPLES)
    model = tiny_policy()
    if loss_type == "bnpo":
        # bnpo is the mean of per-micro-batch token means (as in TRL), over every rank's micro-batches:
        # rank 0 cuts its 5 samples into 2 + 2 + 1, rank 1 its 2 into one micro-batch.
        chunks = [samples[0:2], samples[2:4], samples[4:5], samples[5:7]]
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        for _ in range(2):
            optimizer.zero_grad()
            (sum(naive_loss(model, c, "bnpo", 8) for c in chunks) / len(chunks)).backward()
            optimizer.step()
    else:
        run_updates(model, PolicyLoss(model), samples, DistContext(), loss_type)
    distributed = two_rank_results[(loss_type, strategy)]
    start = tiny_policy().state_dict()
    changed = 0
    for name, value in model.state_dict().items():
        changed += not torch.equal(value, start[name])
        torch.testing.assert_close(distributed[name], value, rtol=1e-5, atol=1e-7, msg=name)
    assert changed > 0  # the updates did something


@pytest.mark.parametrize("loss_type,strategy", SHARED_PREFIX_CASES)
def test_shared_prefix_on_two_gloo_ranks_equals_one_unshared_process(two_rank_results, loss_type, strategy):
    model = tiny_policy()
    run_updates(model, PolicyLoss(model), paired_samples(), DistContext(), loss_type, shared_prefix=False)
    distributed = two_rank_results[("shared-prefix", loss_type, strategy)]
    for name, value in model.state_dict().items():
        torch.testing.assert_close(distributed[name], value, rtol=1e-5, atol=1e-7, msg=name)


def test_single_process_context_is_a_no_op():
    dist = DistContext()
    t = torch.tensor([1.0, 2.0])
    assert dist.all_reduce_sum(t) is t and dist.gather_objects("x") == ["x"] and not dist.enabled
    assert os.environ.get("WORLD_SIZE") in (None, "1")


@pytest.mark.slow
def test_torchrun_two_ranks_train_end_to_end(tmp_path):
    """`torchrun --nproc_per_node=2` runs the whole trainer; rank 0 alone writes the run folder."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).with_name("train_run_script.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", str(script),
                          str(tmp_path / "run")], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    from r3fast.train.checkpoint import checkpoints, read_checkpoint, verify_checkpoint

    (last_step, last), *_ = reversed(checkpoints(tmp_path / "run"))
    assert verify_checkpoint(last) is None
    state = read_checkpoint(last)
    assert state["trainer_state"]["world_size"] == 2 and len(state["rng"]) == 2
    # ranks drew different prompts: their pools stand at different instances
    first_ids = [p["pending"][0]["instance"]["id"] if p["pending"] else None for p in state["trainer_state"]["pools"]]
    assert len(set(first_ids)) == 2 or None in first_ids
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == last_step  # one writer: no step logged twice
