"""--layer-weight-lr: the learned layer weights' own Adam rate (pipeline/train/trainer.py `_optimizer`)."""

import dataclasses

import pytest

from pipeline.train.config import ConfigError, TrainConfig, result_settings
from pipeline.train.trainer import train_on_cache
from tests.helpers import make_cache


def _spread(metrics: dict) -> float:
    """Largest distance of a learned layer weight from the uniform weight, over folds."""
    out = 0.0
    for fold in metrics["folds"].values():
        w = fold["layer_weights"]
        out = max(out, max(abs(v - 1 / len(w)) for v in w.values()))
    return out


@pytest.mark.parametrize("fusion", ["l-adapter", "weighted-sum"])
def test_a_larger_layer_weight_rate_moves_the_weights_and_the_default_is_the_recipe(tmp_path, fusion):
    cache = make_cache(tmp_path / "c.zarr", signal=("encoder", 1))
    base = TrainConfig(fusion=fusion, layers="enc:all", epochs=3, hidden=8, seed=0, threads=1)
    default = train_on_cache(cache, tmp_path / "default", base, progress=False)
    same = train_on_cache(cache, tmp_path / "same", dataclasses.replace(base, layer_weight_lr=base.lr), progress=False)
    fast = train_on_cache(cache, tmp_path / "fast", dataclasses.replace(base, layer_weight_lr=0.05), progress=False)
    # Adam moves each logit by about lr per step: a handful of steps at 1e-4 leaves the weights uniform.
    assert _spread(default) < 1e-3
    assert _spread(fast) > 20 * _spread(default)
    # The option at the recipe's own rate trains the same model (separate parameter groups, same rates).
    assert same["folds"] == default["folds"]


def test_the_option_keeps_earlier_run_keys_and_is_refused_where_no_weights_are_learned():
    assert "layer_weight_lr" not in result_settings(dataclasses.asdict(TrainConfig()))
    assert result_settings(dataclasses.asdict(TrainConfig(layer_weight_lr=0.01)))["layer_weight_lr"] == 0.01
    for fusion in ("single", "mean", "attention"):
        with pytest.raises(ConfigError, match="no learned layer weights"):
            TrainConfig(fusion=fusion, layers="enc:1", layer_weight_lr=0.01).check()
    with pytest.raises(ConfigError, match="layer_weight_lr"):
        TrainConfig(layer_weight_lr=float("nan")).check()
