"""Tensor-parallel rollouts: ranks that share one vLLM engine draw the same data with one seed.

vLLM's TP cannot start on CPU, so the sharding is tested directly: data ranks, the pool, the step
seeds and global RNGs, the metrics' cross-rank sums (four gloo ranks), config and resume checks.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp
from hypothesis import given
from hypothesis import strategies as st

from r3fast.tasks import load_instances
from r3fast.train.checkpoint import check_same_layout
from r3fast.train.config import TrainConfig, load_config
from r3fast.train.distributed import DistContext, data_shard, init_distributed
from r3fast.train.metrics import first_try_metrics, r3_metrics
from r3fast.train.pool import FailurePool
from r3fast.train.state import rollout_engine
from r3fast.train.torch_setup import configure_torch, step_seed


def contexts(world: int, tp: int) -> list[DistContext]:
    return [DistContext(rank=r, world_size=world, tensor_parallel_size=tp) for r in range(world)]


# -- the data-rank helper --------------------------------------------------------------------------


def test_data_shard_known_answers():
    assert [data_shard(r, 4, 2) for r in range(4)] == [(0, 2), (0, 2), (1, 2), (1, 2)]
    assert [data_shard(r, 6, 3) for r in range(6)] == [(0, 2)] * 3 + [(1, 2)] * 3
    assert [(c.data_rank, c.data_world) for c in contexts(3, 1)] == [(0, 3), (1, 3), (2, 3)]
    assert (DistContext().data_rank, DistContext().data_world) == (0, 1)


@given(data_world=st.integers(1, 8), tp=st.integers(1, 8))
def test_data_ranks_are_groups_of_tp_consecutive_ranks(data_world, tp):
    world = data_world * tp
    shards = [data_shard(r, world, tp) for r in range(world)]
    assert {w for _, w in shards} == {data_world}
    for d in range(data_world):  # every data rank: exactly tp ranks, consecutive (vLLM's TP groups)
        assert [r for r, (dr, _) in enumerate(shards) if dr == d] == list(range(d * tp, (d + 1) * tp))


@pytest.mark.parametrize("rank,world,tp", [(0, 3, 2), (0, 4, 0), (0, 2, 4)])
def test_data_shard_refuses_a_world_the_groups_do_not_divide(rank, world, tp):
    with pytest.raises(ValueError, match="rollout.tensor_parallel_size"):
        data_shard(rank, world, tp)


def test_data_shard_refuses_a_rank_outside_the_world():
    with pytest.raises(ValueError, match="rank must be in"):
        data_shard(4, 4, 2)


@pytest.mark.parametrize("world,match", [(None, "needs torchrun"), ("3", "divide the number of ranks")])
def test_init_distributed_refuses_tp_before_joining(monkeypatch, world, match):
    if world is None:
        monkeypatch.delenv("WORLD_SIZE", raising=False)
    else:
        monkeypatch.setenv("WORLD_SIZE", world)
    with pytest.raises(ValueError, match="rollout.tensor_parallel_size") as error:
        init_distributed("ddp", "gloo", "cpu", tensor_parallel_size=2)
    assert match in str(error.value)
    assert not tdist.is_initialized()


# -- config and resume checks ------------------------------------------------------------------------


def test_config_key_defaults_to_one_and_is_validated():
    assert load_config().rollout.tensor_parallel_size == 1
    assert load_config(overrides=["rollout.tensor_parallel_size=2", "rollout.engine=vllm"]
                       ).rollout.tensor_parallel_size == 2
    with pytest.raises(ValueError, match="'rollout.tensor_parallel_size' must be >= 1"):
        load_config(overrides=["rollout.tensor_parallel_size=0"])
    with pytest.raises(ValueError, match="'rollout.tensor_parallel_size' expects int"):
        load_config(overrides=["rollout.tensor_parallel_size=two"])
    with pytest.raises(ValueError, match="'rollout.tensor_parallel_size'.*rollout.engine=hf"):
        load_config(overrides=["rollout.tensor_parallel_size=2", "rollout.engine=hf"])


def test_an_hf_engine_is_refused_for_tp_whatever_the_config_said():
    cfg = TrainConfig()
    cfg.rollout = dataclasses.replace(cfg.rollout, engine="hf")  # as if "auto" had found no vLLM
    with pytest.raises(ValueError, match="rollout.tensor_parallel_size"):
        rollout_engine(cfg, None, None, "model", DistContext(rank=0, world_size=2, tensor_parallel_size=2))


@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not importable")
def test_the_vllm_engine_gets_the_tp_size_and_its_data_rank_seed(monkeypatch, tmp_path):
    import r3fast.models
    import r3fast.rollout.vllm as vllm_engine

    made = {}
    real = inspect.signature(vllm_engine.VLLMEngine)

    def record(*args, **kwargs):
        made.update(real.bind(*args, **kwargs).arguments)  # also checks the keywords exist

    monkeypatch.setattr(vllm_engine, "VLLMEngine", record)
    monkeypatch.setattr(vllm_engine, "on_cpu", lambda: False)
    monkeypatch.setattr(r3fast.models, "materialize", lambda name: tmp_path)
    cfg = load_config(overrides=["seed=10", "rollout.engine=vllm", "rollout.tensor_parallel_size=2"])
    rollout_engine(cfg, torch.nn.Linear(1, 1), SimpleNamespace(), "model", contexts(4, 2)[3])
    assert made["tensor_parallel_size"] == 2 and made["seed"] == 10 + 1  # rank 3 is data rank 1


def test_resume_refuses_another_tp_like_another_world_size():
    tp2 = DistContext(rank=0, world_size=4, tensor_parallel_size=2)
    check_same_layout({"world_size": 4, "tensor_parallel_size": 2}, tp2, "ckpt")
    check_same_layout({"world_size": 4}, contexts(4, 1)[0], "ckpt")  # written before the key existed: tp 1
    with pytest.raises(ValueError, match="rollout.tensor_parallel_size=1; resume it with the same"):
        check_same_layout({"world_size": 4}, tp2, "ckpt")
    with pytest.raises(ValueError, match="written by 2 ranks"):
        check_same_layout({"world_size": 2, "tensor_parallel_size": 2}, tp2, "ckpt")


# -- sharding: TP peers draw alike, data ranks cover what plain data parallelism would ---------------


def fails(instances, seed):
    """Stand-in for mining: a fixed half of the instances fail (by id), tagged with the mining seed."""
    return [(i.id, seed) for i in instances if int(i.id[-1], 16) % 2 == 0]


def pool_of(dist: DistContext, source: str) -> FailurePool:
    if source == "offline":
        return FailurePool(source="offline", data_rank=dist.data_rank, data_world=dist.data_world, seed=5,
                           exclude_ids={"f3"}, failures=[f"f{i}" for i in range(23)], failure_id=lambda f: f)
    return FailurePool(source="online", data_rank=dist.data_rank, data_world=dist.data_world, seed=5,
                       exclude_ids=set(), mining_batch=8, mine=fails,
                       generate_instances=lambda n, seed: load_instances("countdown-easy", n=n, seed=seed))


def draws(dist: DistContext, source: str) -> list:
    """Three steps of what `dist`'s rank trains on: (step seed, the failures it takes with it)."""
    pool, out = pool_of(dist, source), []
    for step in (1, 2, 3):
        seed = step_seed(7, step, dist.data_rank)
        out.append((seed, pool.take(3, seed)))
    return out


@pytest.mark.parametrize("source", ["online", "offline"])
def test_tp_peers_draw_the_same_prompts_and_seeds_and_data_ranks_cover_plain_data_parallelism(source):
    tp = [draws(c, source) for c in contexts(4, 2)]
    plain = [draws(c, source) for c in contexts(2, 1)]
    assert tp[0] == tp[1] and tp[2] == tp[3]      # one TP group: identical prompts and seeds
    assert tp[0] != tp[2]                         # two groups: different ones
    assert [tp[0], tp[2]] == plain                # data rank d of world 4, tp 2 is rank d of world 2
    taken = [f for rank in plain for _, batch in rank for f in batch]
    assert len(taken) == len(set(taken)) == 2 * 3 * 3  # the data ranks' shares are disjoint


@pytest.fixture
def restore_global_rngs():
    saved = random.getstate(), np.random.get_state(), torch.get_rng_state(), torch.get_num_threads()
    yield
    random.setstate(saved[0])
    np.random.set_state(saved[1])
    torch.set_rng_state(saved[2])
    torch.set_num_threads(saved[3])


def test_global_rngs_are_seeded_per_data_rank(restore_global_rngs):
    cfg = TrainConfig(threads=torch.get_num_threads())
    streams = []
    for dist in contexts(4, 2):
        configure_torch(threads=cfg.threads, deterministic=False, seed=cfg.seed, data_rank=dist.data_rank)
        streams.append((random.random(), float(np.random.random()), torch.rand(3).tolist()))
    assert streams[0] == streams[1] and streams[2] == streams[3] and streams[0] != streams[2]
    configure_torch(threads=cfg.threads, deterministic=False, seed=cfg.seed, data_rank=contexts(2, 1)[1].data_rank)
    assert (random.random(), float(np.random.random()), torch.rand(3).tolist()) == streams[2]


# -- metrics over four gloo ranks: each TP group counted once ----------------------------------------


def warmup_batch_of(data_rank: int):
    rewards = [[1.0, 0.0, 0.0, 1.0, 1.0, 1.0], [0.0, 0.0, 1.0, 0.0]][data_rank]
    return SimpleNamespace(samples=[SimpleNamespace(reward=r) for r in rewards], groups=len(rewards) // 2,
                           flat_groups=data_rank)


def r3_result_of(data_rank: int):
    episodes = [SimpleNamespace(reward=float(i % (2 + data_rank) == 0), completion_ids=[0] * (3 + i + data_rank))
                for i in range(4 + 2 * data_rank)]
    return SimpleNamespace(episodes=episodes, failed=2 + data_rank, flat_groups=[None] * data_rank,
                           retry_passed_groups=1 + data_rank,
                           stats={"reflection": SimpleNamespace(generated_tokens=40 + data_rank)})


def metrics_worker(rank, world, init_file, out_path):
    torch.set_num_threads(1)
    tdist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        dist = DistContext(rank=rank, world_size=world, strategy="ddp", tensor_parallel_size=2)
        d = dist.data_rank
        mining = {"mining": SimpleNamespace(generated_tokens=100 * (d + 1))}
        out = {"first_try": first_try_metrics(warmup_batch_of(d), mining, dist),
               "r3": r3_metrics(r3_result_of(d), mining, 10 + d, 7 + d, dist),
               "data_sum": dist.all_reduce_data_sum(torch.tensor([float(d + 1)])).item()}
        gathered = dist.gather_objects(out)
        if rank == 0:
            torch.save(gathered, out_path)
    finally:
        tdist.destroy_process_group()


@pytest.fixture(scope="module")
def four_rank_metrics(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tp-gloo")
    mp.spawn(metrics_worker, args=(4, str(tmp / "init"), str(tmp / "out.pt")), nprocs=4, join=True)
    return torch.load(tmp / "out.pt")


def test_metrics_count_each_tp_group_once(four_rank_metrics):
    """Oracle: one process holding both data ranks' data, merged."""
    parts = [warmup_batch_of(d) for d in (0, 1)]
    whole = SimpleNamespace(samples=parts[0].samples + parts[1].samples, groups=sum(p.groups for p in parts),
                            flat_groups=sum(p.flat_groups for p in parts))
    expected_first = first_try_metrics(whole, {"mining": SimpleNamespace(generated_tokens=100 + 200)}, DistContext())
    results = [r3_result_of(d) for d in (0, 1)]
    whole_r3 = SimpleNamespace(
        episodes=results[0].episodes + results[1].episodes, failed=sum(r.failed for r in results),
        flat_groups=results[0].flat_groups + results[1].flat_groups,
        retry_passed_groups=sum(r.retry_passed_groups for r in results),
        stats={"reflection": SimpleNamespace(generated_tokens=40 + 41)})
    expected_r3 = r3_metrics(whole_r3, {"mining": SimpleNamespace(generated_tokens=100 + 200)}, 10 + 11, 7 + 8,
                             DistContext())
    for rank_out in four_rank_metrics:  # every rank logs the same numbers
        assert rank_out["data_sum"] == 1 + 2
        assert rank_out["first_try"] == pytest.approx(expected_first)
        assert rank_out["r3"] == pytest.approx(expected_r3)
