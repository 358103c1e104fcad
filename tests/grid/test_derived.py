"""`best` and `last` runs a grid derives from its `single` runs instead of training them: the
equivalence that allows it, the derived runs' results and the grid's training count."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.train.config import TrainConfig
from pipeline.train.trainer import train_on_cache
from tests.helpers import make_cache

TINY = {"epochs": 2, "hidden": 8, "batch_size": 4, "lr": 0.01}


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return make_cache(tmp_path_factory.mktemp("derive") / "c.zarr")


def _fold_scores(metrics: dict) -> dict:
    """Per fold: what the model scored on validation and test, and the data it saw."""
    return {fold: {k: m[k] for k in ("uar", "macro_f1", "confusion", "n", "best_epoch", "val_uar", "n_train",
                                     "n_val")}
            for fold, m in metrics["folds"].items()}


def test_best_and_last_train_each_candidate_as_a_single_run(cache, tmp_path):
    """The premise of derived runs: `best`'s model for candidate L is `single` on L (validation per
    fold, and test for the chosen one), and `last` is `single` on the last layer."""
    single = {f"enc{i}": train_on_cache(cache, tmp_path / f"single{i}", TrainConfig(
        fusion="single", layers=f"enc:{i}", **TINY), progress=False) for i in range(3)}
    best = train_on_cache(cache, tmp_path / "best", TrainConfig(fusion="best", layers="enc:all", **TINY),
                          progress=False)
    last = train_on_cache(cache, tmp_path / "last", TrainConfig(fusion="last", layers="enc:all", **TINY),
                          progress=False)
    assert best["layer_val_uar_folds"] == {name: {f: m["val_uar"] for f, m in s["folds"].items()}
                                           for name, s in single.items()}
    assert _fold_scores(best) == _fold_scores(single[best["best_layer"]])
    assert _fold_scores(last) == _fold_scores(single["enc2"])
    assert last["uar"] == single["enc2"]["uar"] and last["confusion"] == single["enc2"]["confusion"]
