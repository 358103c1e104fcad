"""nser-train --tensorboard: scalars per epoch when the tensorboard package is installed; a clear
refusal, before any training, when it is not."""

from __future__ import annotations

import importlib.util
import json

import pytest

from pipeline.train.config import TrainConfig
from pipeline.train.tensorboard import TensorBoardMissing
from pipeline.train.trainer import train_on_cache
from tests.helpers import make_cache

HAVE_TENSORBOARD = importlib.util.find_spec("tensorboard") is not None


def cfg(board) -> TrainConfig:
    return TrainConfig(fusion="mean", layers="enc:1", epochs=2, batch_size=4, hidden=4, threads=1, folds="0",
                       tensorboard=str(board))


@pytest.mark.skipif(HAVE_TENSORBOARD, reason="tensorboard is installed: the refusal cannot happen")
def test_without_tensorboard_the_run_is_refused_with_how_to_install(tmp_path):
    cache = make_cache(tmp_path / "c.zarr")
    with pytest.raises(TensorBoardMissing, match=r"pip install tensorboard"):
        train_on_cache(cache, tmp_path / "run", cfg(tmp_path / "tb"), progress=False)
    assert not (tmp_path / "run" / "log.jsonl").exists()  # refused before training


@pytest.mark.skipif(not HAVE_TENSORBOARD, reason="tensorboard not installed (pip install tensorboard)")
def test_scalars_per_epoch_match_the_log(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cache = make_cache(tmp_path / "c.zarr")
    train_on_cache(cache, tmp_path / "run", cfg(tmp_path / "tb"), progress=False)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    events = EventAccumulator(str(tmp_path / "tb")).Reload()
    assert {"fold-0/train_loss", "fold-0/val_uar", "fold-0/val_macro_f1"} <= set(events.Tags()["scalars"])
    for name in ("train_loss", "val_uar"):
        points = events.Scalars(f"fold-0/{name}")
        assert [p.step for p in points] == [1, 2]
        assert [p.value for p in points] == pytest.approx([e[name] for e in log], rel=1e-6)
