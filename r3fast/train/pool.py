"""The failure pool: failed first attempts waiting for reflections, and where the stream stands.

Two sources, one interface (`take(k)`):
- offline: a failure dataset (JSONL from `r3fast failures`), walked in a seeded order, epoch
  after epoch, strided by data rank so data ranks never share a prompt;
- online: fresh task instances are attempted by the current model in rounds of `mining_batch`,
  and the failures are kept; what one step does not use waits for the next. Instances come
  from a seeded generator in chunks, or from a fixed list (a task file) in seeded epochs.

A pool is split by data rank (DistContext.data_rank), not by rank: the tensor-parallel peers that
share a rollout engine hold identical pools and draw identical prompts.
The held-out evaluation instances are never drawn. `state()`/`load_state()` capture the
position exactly, so a resumed run draws the same prompts an uninterrupted one would.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from r3fast.tasks.base import Instance

# Instances generated per online chunk: the stream is chunk after chunk of a seeded generator.
STREAM_CHUNK = 512
# Mining rounds one take() may spend before it returns what it found.
MAX_MINING_ROUNDS = 8

F = TypeVar("F")  # a failure: the trainer's pools hold r3fast.reflect.Attempt, from either source


class FailurePool(Generic[F]):
    def __init__(
        self,
        *,
        source: str,                                  # "online" or "offline"
        data_rank: int,                               # which share of the stream this pool draws
        data_world: int,                              # how many shares the stream is split into
        seed: int,
        exclude_ids: set[str],                        # held-out instance ids: never trained on
        mining_batch: int = 32,
        generate_instances: Callable[[int, int], list[Instance]] | None = None,  # (n, seed) -> instances (online)
        instances: Sequence[Instance] = (),           # a fixed instance list to mine instead (online, task files)
        mine: Callable[[list[Instance], int], list[F]] | None = None,  # (instances, seed) -> failures (online)
        failures: Sequence[F] = (),                   # the failure dataset (offline)
        failure_id: Callable[[F], str] = lambda f: f.instance.id,
        encode: Callable[[F], dict] = lambda f: f,    # failure <-> JSON-able dict, for checkpoints
        decode: Callable[[dict], F] = lambda d: d,
    ) -> None:
        self.source, self.data_rank, self.data_world, self.seed = source, data_rank, data_world, seed
        self.exclude_ids, self.mining_batch = exclude_ids, mining_batch
        self._generate, self._mine = generate_instances, mine
        self._encode, self._decode = encode, decode
        self.position = 0           # online: next stream index of this data rank; offline: draws so far
        self.pending: list[F] = []  # mined failures not yet used
        self.attempted = 0          # first attempts made by mining (online), for first-try accuracy
        self.first_try_passed = 0
        if source == "offline":
            trainable = [f for f in failures if failure_id(f) not in exclude_ids]
            if not trainable:
                raise ValueError("the failure dataset holds no prompt outside the held-out evaluation set")
            self._offline = trainable
        elif (generate_instances is None and not instances) or mine is None:
            raise ValueError("an online failure pool needs mine, and generate_instances or instances")
        if instances:
            fixed = list(instances)
            self._generate = lambda n, seed: random.Random(seed).sample(fixed, len(fixed))
            self._chunk_size = len(fixed)
        else:
            self._chunk_size = STREAM_CHUNK

    # -- drawing --------------------------------------------------------------------------

    def take(self, k: int, seed: int) -> list[F]:
        """The next `k` failures of this data rank; fewer (even none) online when the model fails too
        rarely for MAX_MINING_ROUNDS rounds to find them: a step never mines forever."""
        if self.source == "offline":
            batch = [self._offline_item(self.position + i) for i in range(k)]
            self.position += k
            return batch
        for _round in range(MAX_MINING_ROUNDS):
            if len(self.pending) >= k:
                break
            instances = self._next_instances(self.mining_batch)
            failures = self._mine(instances, seed + self.position)
            self.attempted += len(instances)
            self.first_try_passed += len(instances) - len(failures)
            self.pending.extend(failures)
        batch, self.pending = self.pending[:k], self.pending[k:]
        return batch

    def _offline_item(self, index: int) -> F:
        # Draw `index` of this data rank: epochs of seeded permutations, data ranks take every data_world-th item.
        global_index = index * self.data_world + self.data_rank
        epoch, offset = divmod(global_index, len(self._offline))
        order = list(range(len(self._offline)))
        random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
        return self._offline[order[offset]]

    def _next_instances(self, n: int) -> list[Instance]:
        out = []
        while len(out) < n:
            global_index = self.position * self.data_world + self.data_rank
            chunk, offset = divmod(global_index, self._chunk_size)
            instance = self._chunk(chunk)[offset]
            self.position += 1
            if instance.id not in self.exclude_ids:
                out.append(instance)
        return out

    def _chunk(self, chunk: int) -> list[Instance]:
        cache = getattr(self, "_chunk_cache", None)
        if cache is None or cache[0] != chunk:
            cache = (chunk, self._generate(self._chunk_size, self.seed * 1_000_003 + chunk))
            self._chunk_cache = cache
        return cache[1]

    # -- checkpointing ----------------------------------------------------------------------

    def state(self) -> dict:
        return {"position": self.position, "pending": [self._encode(f) for f in self.pending],
                "attempted": self.attempted, "first_try_passed": self.first_try_passed}

    def load_state(self, state: dict) -> None:
        self.position = int(state["position"])
        self.pending = [self._decode(d) for d in state["pending"]]
        self.attempted = int(state.get("attempted", 0))
        self.first_try_passed = int(state.get("first_try_passed", 0))
