"""TrainConfig's module: torch-free, and what it counts as a run's result settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from pipeline.grid.spec import run_key
from pipeline.train.config import LATER_NEUTRAL, NON_RESULT_FIELDS, ConfigError, TrainConfig, result_settings

REPO = Path(__file__).resolve().parents[2]


def test_config_and_grid_spec_import_without_torch():
    """The grid expands and checks runs, and the report reads their records, without torch."""
    modules = ["pipeline.train.config", "pipeline.train.fusion_specs", "pipeline.train.run_metrics",
               "pipeline.grid.spec", "pipeline.report.aggregate"]
    code = (f"import sys\nfor m in {modules!r}: __import__(m)\n"
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, check=True)
    assert json.loads(out.stdout.replace("'", '"')) == []
    # the check itself can fail: the trainer does pull torch in
    code = "import sys, pipeline.train.trainer; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, check=True)
    assert out.stdout.strip() == "True"


def test_result_settings_leave_out_exactly_the_non_result_fields():
    cfg = TrainConfig(fusion="mean", layers="enc:1-2", seed=3)
    settings = result_settings(asdict(cfg))
    neutral = {k for k, v in LATER_NEUTRAL.items() if asdict(cfg)[k] in v}  # later settings at their old value
    assert neutral == {"length_buckets", "layer_weight_lr", "precision", "state_norm"} and set(settings) == set(asdict(cfg)) - set(NON_RESULT_FIELDS) - neutral
    assert settings["fusion"] == "mean" and settings["seed"] == 3
    other_machine = replace(cfg, threads=4, device="cuda", allow_missing=True, expect_model="m", memory_budget=1)
    assert result_settings(asdict(other_machine)) == settings
    assert run_key(other_machine, "id") == run_key(cfg, "id")
    assert result_settings(asdict(replace(cfg, lr=1e-3))) != settings
    assert run_key(replace(cfg, lr=1e-3), "id") != run_key(cfg, "id")


def test_validation_protocols_keep_earlier_run_keys_and_key_the_new_ones():
    """next-fold (cv) and dev (split) are what runs did before the setting existed: their keys are
    the keys those runs had; every other protocol changes results, so it changes the key."""
    cfg = TrainConfig(fusion="mean", layers="enc:1-2", validation="next-fold")
    before = {k: v for k, v in result_settings(asdict(cfg)).items()}
    assert "validation" not in before
    assert result_settings(asdict(replace(cfg, validation="dev"))) == before
    keys = {run_key(replace(cfg, validation=v), "id") for v in ("speaker-carve", "train+dev", "none", "paper")}
    assert len(keys) == 4 and run_key(cfg, "id") not in keys
    # The default is the paper's reading, which trains on other data than runs made before: other keys.
    assert TrainConfig().validation == "paper" and result_settings(asdict(TrainConfig()))["validation"] == "paper"
    with pytest.raises(ConfigError, match="validation must be one of"):
        TrainConfig(validation="random").check()
    with pytest.raises(ConfigError, match="--validation none"):
        TrainConfig(fusion="best", validation="none").check()



def test_precision_keeps_float32_keys_and_keys_float16_and_bfloat16():
    """float32 is what every run did before the setting existed: the same key; float16 and bfloat16
    change results (autocast), so each has its own."""
    cfg = TrainConfig(fusion="mean", layers="enc:1-2")
    assert cfg.precision == "float32" and "precision" not in result_settings(asdict(cfg))
    keys = {run_key(replace(cfg, precision=p), "id") for p in ("float32", "float16", "bfloat16")}
    assert len(keys) == 3
    with pytest.raises(ConfigError, match="precision must be one of float32, float16, bfloat16, got 'int8'"):
        TrainConfig(precision="int8").check()


def test_check_knows_the_fusions_without_their_models():
    TrainConfig(fusion="best").check()
    with pytest.raises(ConfigError, match=r"fusion must be one of attention, best, .*weighted-sum, got 'sum'"):
        TrainConfig(fusion="sum").check()


def test_run_keys_of_finished_runs_are_unchanged():
    """Keys of finished runs in docs/results (grids/emodb_full_fusions.yaml and
    emodb_full_state_norm_fold0.yaml on fold 0, and emodb_full_fig6.yaml on all folds; complete caches): the settings added later, the
    partial-cache marker and `best`'s per-fold choice leave them as they were."""
    recipe = dict(epochs=50, batch_size=32, lr=1e-4, hidden=256, length_buckets=True)
    fold0 = "29df54bd9734a3d5"  # babble_0dB
    for fusion, layers, key in [("single", "enc:3", "e007ac258d04b12e"), ("mean", "enc:1,2,3,4,5,6", "589272ef8f339648"),
                                ("best", "enc:1,2,3,4,5,6", "d5617d9389a75484"),
                                ("l-adapter", "enc:1,2,3,4,5,6;dec:1,2,3,4,5,6", "7a8218e279e5c1bc")]:
        assert run_key(TrainConfig(fusion=fusion, layers=layers, folds="0", **recipe), fold0) == key
    assert run_key(TrainConfig(fusion="mean-fc", layers="enc:4", threads=1, **recipe), "9ccf35f1fc374a7e") \
        == "87a67e48ab47052e"
    # grids/emodb_full_state_norm_fold0.yaml's runs with train.state_norm (their own keys)
    for fusion, layers, key in [("single", "enc:3", "8f3b98b4b24991f9"),
                                ("l-adapter", "enc:1,2,3,4,5,6;dec:1,2,3,4,5,6", "4776d20f62654b1d")]:
        assert run_key(TrainConfig(fusion=fusion, layers=layers, folds="0", state_norm=True, **recipe), fold0) == key

