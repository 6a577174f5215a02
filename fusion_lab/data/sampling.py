"""Deterministic train order and per-sample augmentation seeds; the stratified val split.

``EpochSampler`` yields ``(index, sample_seed)`` pairs. Both the permutation and the seeds
depend only on (seed, epoch), and the seed travels with the index to whichever worker
loads the sample, so batches are identical with 0 or N workers and a resumed run sees the
same batches as an uninterrupted one. Each ``iter()`` uses the current epoch and then
advances it by one; ``set_epoch(e)`` sets the epoch the next ``iter()`` uses.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler

_MIX = 0x9E3779B97F4A7C15  # golden-ratio constant: spreads nearby seeds apart


def mix_seed(*parts: int) -> int:
    """A 63-bit seed derived from integers (stable across processes, unlike hash())."""
    h = 0
    for p in parts:
        h = (h ^ (int(p) & 0xFFFFFFFFFFFFFFFF)) * _MIX & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 29
    return h & 0x7FFFFFFFFFFFFFFF


class EpochSampler(Sampler):
    """Yields ``(index, sample_seed)``; shuffled per (seed, epoch) when ``shuffle``."""

    def __init__(self, size: int, seed: int, shuffle: bool):
        self.size = size
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        self.epoch += 1
        if not self.shuffle:
            return iter([(i, 0) for i in range(self.size)])
        g = torch.Generator().manual_seed(mix_seed(self.seed, epoch, 1))
        order = torch.randperm(self.size, generator=g).tolist()
        return iter([(i, mix_seed(self.seed, epoch, i, 2)) for i in order])


def stratified_split(labels: Sequence[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices (train, val) with about ``fraction`` of each class in val.

    Every class with at least two samples keeps at least one in each part, so no class
    disappears from training. Depends only on (labels, fraction, seed).
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {fraction}")
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(int(y), []).append(i)
    g = torch.Generator().manual_seed(mix_seed(seed, 3))
    train: list[int] = []
    val: list[int] = []
    for y in sorted(by_class):
        idx = by_class[y]
        perm = [idx[j] for j in torch.randperm(len(idx), generator=g).tolist()]
        k = int(round(fraction * len(idx)))
        if fraction > 0 and len(idx) >= 2:
            k = min(max(k, 1), len(idx) - 1)
        val.extend(perm[:k])
        train.extend(perm[k:])
    return sorted(train), sorted(val)


def share(n: int, rank: int, world: int) -> tuple[int, int]:
    """[lo, hi) of process ``rank``'s contiguous share of a global batch of ``n`` images."""
    return n * rank // world, n * (rank + 1) // world


class ShardedBatches(Sampler):
    """This process's share of each global batch of an ``EpochSampler``'s order.

    A global batch whose smallest share would hold fewer than 2 images is skipped by every
    process alike (BatchNorm cannot train on one image; one process must not step alone).
    """

    def __init__(self, sampler: Sampler, batch_size: int, rank: int, world: int):
        self.sampler, self.batch_size, self.rank, self.world = sampler, batch_size, rank, world

    def __iter__(self) -> Iterator[list]:
        order = list(iter(self.sampler))
        for start in range(0, len(order), self.batch_size):
            batch = order[start:start + self.batch_size]
            if len(batch) // self.world < 2:
                continue
            lo, hi = share(len(batch), self.rank, self.world)
            yield batch[lo:hi]

    def __len__(self) -> int:
        full, rest = divmod(len(self.sampler), self.batch_size)
        return full + (1 if rest // self.world >= 2 else 0)
