"""Data order and jitter that can be replayed exactly, which is what makes resume exact.

The permutation of each epoch depends only on (seed, epoch), and the random jitter of each item
only on (seed, epoch, index), whatever the number of DataLoader workers. A run resumed in the middle
of an epoch therefore sees the same remaining batches, with the same crops and flips.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Dataset, Sampler


def _mix(*values: int) -> int:
    """A 63-bit seed from several integers (SplitMix64-style mixing)."""
    x = 0x9E3779B97F4A7C15
    for v in values:
        x = (x ^ (v + 0x9E3779B97F4A7C15 + (x << 6) + (x >> 2))) & 0xFFFFFFFFFFFFFFFF
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return x & 0x7FFFFFFFFFFFFFFF


class EpochSampler(Sampler[tuple[int, int]]):
    """Shuffles with a permutation fixed by (seed, epoch); can start part-way into an epoch.

    It yields ``(epoch, index)`` keys, so the dataset learns the epoch from the key itself: this
    works in persistent DataLoader workers, which never see attributes changed after they start.
    """

    def __init__(self, size: int, seed: int, shuffle: bool = True) -> None:
        self.size = size
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch = epoch
        self.start = start

    def order(self) -> list[int]:
        """The whole epoch's order of item indices, fixed by (seed, epoch)."""
        if self.shuffle:
            gen = torch.Generator().manual_seed(_mix(self.seed, self.epoch))
            return torch.randperm(self.size, generator=gen).tolist()
        return list(range(self.size))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter([(self.epoch, i) for i in self.order()[self.start :]])

    def __len__(self) -> int:
        return self.size - self.start


class SeededItems(Dataset):
    """Wraps a dataset so that each item's random jitter is drawn from its own seeded stream.

    Items are fetched by ``(epoch, index)`` keys (see :class:`EpochSampler`). The global RNG is
    forked around each item, so loading data in the main process does not disturb the random
    numbers the training step uses (dropout, latent codes).
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(_mix(self.seed, epoch, index))  # CPU only: fast
            return self.dataset[index]
