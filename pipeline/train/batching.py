"""Length-bucketed training batches (`--length-buckets`): fewer padded frames through the GRUs.

A batch is padded to its longest utterance, and every padded frame costs a GRU step. With random
batches of real-length speech most of an encoder adapter's steps can be padding (docs/training.md
measures 2.17x the real frames on full-length EmoDB, 1.13x when batches are cut from a
length-sorted order). Each epoch: a random permutation (the run's shuffle generator), cut into
pools of `POOL_BATCHES` batches; each pool sorted by length and cut into batches; then the batch
order shuffled. Batches stay random in content across epochs and pools, but neighbours in length
share a batch. It changes which utterances share a batch, so it is an option with its own run
key, not the default.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import torch

POOL_BATCHES = 16


class LengthBucketSampler:
    """A `batch_sampler` for DataLoader: lists of positions into `lengths`, each position once per
    epoch, drawn from `generator` only."""

    def __init__(self, lengths: Sequence[int], batch_size: int, generator: torch.Generator):
        self.lengths = [int(n) for n in lengths]
        self.batch_size = batch_size
        self.generator = generator

    def _batches(self) -> list[list[int]]:
        perm = torch.randperm(len(self.lengths), generator=self.generator).tolist()
        pool = self.batch_size * POOL_BATCHES
        batches: list[list[int]] = []
        for start in range(0, len(perm), pool):
            by_length = sorted(perm[start:start + pool], key=self.lengths.__getitem__)  # stable: ties keep draw order
            batches += [by_length[i:i + self.batch_size] for i in range(0, len(by_length), self.batch_size)]
        return [batches[k] for k in torch.randperm(len(batches), generator=self.generator).tolist()]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches())

    def __len__(self) -> int:
        pool = self.batch_size * POOL_BATCHES
        full, rest = divmod(len(self.lengths), pool)
        return full * POOL_BATCHES + -(-rest // self.batch_size)
