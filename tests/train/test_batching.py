"""Length-bucketed training batches: every utterance once per epoch, reproducible, less padding,
and refused where the states are not in memory."""

from dataclasses import asdict

import numpy as np
import pytest
import torch

from pipeline.errors import NserError
from pipeline.train.batching import POOL_BATCHES, LengthBucketSampler
from pipeline.train.config import TrainConfig, result_settings
from pipeline.train.trainer import train_on_cache
from tests.helpers import make_cache


def padded_steps(lengths: np.ndarray, batches: list[list[int]]) -> int:
    return sum(int(lengths[b].max()) * len(b) for b in batches)


def test_each_position_once_per_epoch_reproducibly_with_less_padding():
    lengths = np.random.default_rng(0).integers(60, 450, size=1000)  # real-length speech, 50 frames/s
    sampler = LengthBucketSampler(lengths, 32, torch.Generator().manual_seed(7))
    first, second = list(sampler), list(sampler)
    for epoch in (first, second):
        assert sorted(i for b in epoch for i in b) == list(range(1000)) and len(epoch) == len(sampler)
        assert all(1 <= len(b) <= 32 for b in epoch)
    assert first != second  # a new draw each epoch ...
    again = LengthBucketSampler(lengths, 32, torch.Generator().manual_seed(7))
    assert list(again) == first  # ... and the same draws from the same seed
    perm = torch.randperm(1000, generator=torch.Generator().manual_seed(7)).tolist()
    random_batches = [perm[i:i + 32] for i in range(0, 1000, 32)]
    assert padded_steps(lengths, first) < 0.75 * padded_steps(lengths, random_batches)
    assert len(sampler) == 1000 // (32 * POOL_BATCHES) * POOL_BATCHES + -(-(1000 % (32 * POOL_BATCHES)) // 32)


def test_training_with_length_buckets_is_reproducible_and_keyed_apart(tmp_path):
    cache = make_cache(tmp_path / "c.zarr")
    cfg = TrainConfig(layers="enc:all", epochs=2, batch_size=4, lr=1e-2, hidden=8, threads=1, length_buckets=True)
    a = train_on_cache(cache, tmp_path / "a", cfg, progress=False)
    b = train_on_cache(cache, tmp_path / "b", cfg, progress=False)
    assert a["folds"] == b["folds"]
    # a setting added later leaves earlier runs' keys alone at its neutral value, and keys the option apart
    assert "length_buckets" not in result_settings(asdict(TrainConfig()))
    assert result_settings(asdict(cfg))["length_buckets"] is True


def test_length_buckets_are_refused_when_the_states_are_streamed(tmp_path):
    cache = make_cache(tmp_path / "c.zarr")
    cfg = TrainConfig(layers="enc:all", epochs=1, batch_size=4, hidden=8, threads=1, memory_budget=1,
                      length_buckets=True)
    with pytest.raises(NserError, match="length-bucketed batches need the run's states in memory"):
        train_on_cache(cache, tmp_path / "r", cfg, progress=False)
    with pytest.raises(NserError, match="length_buckets must be true or false"):
        TrainConfig(length_buckets="yes").check()
