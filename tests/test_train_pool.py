"""The failure pool: ranks draw disjoint prompts, held-out ids never appear, and state() resumes exactly."""

from __future__ import annotations

import json

import pytest

from r3fast.tasks import load_instances
from r3fast.train.pool import FailurePool


def fails(instances, seed):
    """Stand-in for mining: a fixed half of the instances 'fail' (by id), so the pool logic is what is tested."""
    return [{"id": i.id, "seed": seed} for i in instances if int(i.id[-1], 16) % 2 == 0]


def online(rank=0, world=1, exclude=frozenset(), instances=()):
    return FailurePool(source="online", data_rank=rank, data_world=world, seed=3, exclude_ids=set(exclude),
                       mining_batch=20, mine=fails, instances=instances,
                       generate_instances=None if instances else lambda n, seed: load_instances(
                           "countdown-easy", n=n, seed=seed), failure_id=lambda f: f["id"])


def test_online_ranks_are_disjoint_and_skip_held_out_ids():
    heldout = {i.id for i in load_instances("countdown-easy", n=50, seed=1_000_003)}
    drawn = {}
    for rank in (0, 1):
        pool = online(rank, 2, heldout)
        drawn[rank] = [f["id"] for f in pool.take(30, seed=0)]
        assert pool.attempted >= 30 and pool.first_try_passed == pool.attempted - 30 - len(pool.pending)
    assert not set(drawn[0]) & set(drawn[1])
    assert not (set(drawn[0]) | set(drawn[1])) & heldout


def test_state_round_trip_draws_what_an_uninterrupted_pool_draws():
    straight = online()
    first = straight.take(4, seed=1)
    rest = straight.take(7, seed=2) + straight.take(3, seed=3)
    resumed = online()
    assert resumed.take(4, seed=1) == first
    saved = json.loads(json.dumps(resumed.state()))  # through JSON, as in a checkpoint
    fresh = online()
    fresh.load_state(saved)
    assert fresh.take(7, seed=2) + fresh.take(3, seed=3) == rest


def test_fixed_instance_lists_repeat_in_seeded_epochs():
    instances = load_instances("countdown-easy", n=12, seed=0)
    pool = online(instances=instances)
    ids = [f["id"] for f in pool.take(20, seed=0)]
    assert set(ids) <= {i.id for i in instances}
    assert len(ids) == 20  # more failures than the list holds once: the walk went on to a new epoch


def test_offline_walks_the_failure_dataset_rank_strided():
    failures = [{"id": f"f{i}"} for i in range(10)]
    pools = [FailurePool(source="offline", data_rank=r, data_world=2, seed=0, exclude_ids={"f0"}, failures=failures,
                         failure_id=lambda f: f["id"]) for r in (0, 1)]
    a, b = (p.take(4, seed=0) for p in pools)
    assert not {f["id"] for f in a} & {f["id"] for f in b}
    assert "f0" not in {f["id"] for f in a + b}
    with pytest.raises(ValueError, match="held-out"):
        FailurePool(source="offline", data_rank=0, data_world=1, seed=0, exclude_ids={"f0"}, failures=failures[:1],
                    failure_id=lambda f: f["id"])


def test_a_model_that_fails_nothing_never_makes_mining_loop_forever():
    from r3fast.train.pool import MAX_MINING_ROUNDS

    pool = FailurePool(source="online", data_rank=0, data_world=1, seed=0, exclude_ids=set(), mining_batch=4,
                       mine=lambda instances, seed: [], generate_instances=lambda n, seed: load_instances(
                           "countdown-easy", n=n, seed=seed))
    assert pool.take(3, seed=0) == []
    assert pool.attempted == 4 * MAX_MINING_ROUNDS and pool.first_try_passed == pool.attempted
