"""--state-norm: each layer standardised with its training frames' statistics before the fusion
(pipeline/train/fusion.py StandardizedStates)."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest
import torch

from pipeline.grid.spec import run_key
from pipeline.train.config import ConfigError, TrainConfig, result_settings
from pipeline.train.fusion import StandardizedStates, build_fusion, layer_weights_of
from tests.helpers import make_cache


def _batches(seed: int, garbage: float) -> list[dict]:
    """Two batches of 2 layers (d 4) with scales ~100x apart; padding filled with `garbage`."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for lengths in ([5, 3], [4, 2]):
        n = torch.tensor(lengths)
        layers = [torch.randn(2, 5, 4, generator=g) * 300 + 50, torch.randn(2, 5, 4, generator=g) * 2 - 1]
        for x in layers:
            for b, length in enumerate(lengths):
                x[b, length:] = garbage
        out.append({"layers": layers, "lengths": [n, n]})
    return out


def _model(state_norm: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_fusion("l-adapter", n_layers=2, d_in=4, n_classes=3, hidden=6, state_norm=state_norm).eval()


def test_statistics_are_the_real_frames_own_and_padding_stays_out():
    model = _model(True)
    batches = _batches(0, garbage=1e4)
    model.fit_input_stats(batches)
    for i in range(2):
        frames = torch.cat([b["layers"][i][r, :n] for b in batches for r, n in enumerate(b["lengths"][i].tolist())])
        assert len(frames) == 14
        torch.testing.assert_close(model.mean[i], frames.double().mean(dim=0).float())
        torch.testing.assert_close(model.std[i], frames.double().std(dim=0, unbiased=False).float())
    # other padding values: same statistics, same outputs
    other = _model(True)
    other.fit_input_stats(_batches(0, garbage=-7.0))
    torch.testing.assert_close(other.mean, model.mean)
    x = _batches(0, garbage=-7.0)[0]
    torch.testing.assert_close(other(x["layers"], x["lengths"]), model(batches[0]["layers"], batches[0]["lengths"]))


def test_a_rescaled_and_shifted_layer_gives_the_same_model_only_with_the_option():
    batches = _batches(1, garbage=0.0)
    scale, shift = torch.tensor([1000.0, 0.01, 3.0, 50.0]), torch.tensor([-200.0, 4.0, 0.0, 900.0])
    moved = [{"layers": [x * scale + shift for x in b["layers"]], "lengths": b["lengths"]} for b in batches]
    outputs = {}
    for state_norm in (True, False):
        a, b = _model(state_norm), _model(state_norm)
        if state_norm:
            a.fit_input_stats(batches)
            b.fit_input_stats(moved)
        outputs[state_norm] = [(a(x["layers"], x["lengths"]), b(y["layers"], y["lengths"]))
                               for x, y in zip(batches, moved)]
    for mine, theirs in outputs[True]:
        torch.testing.assert_close(mine, theirs, atol=1e-4, rtol=1e-4)
    assert any((mine - theirs).abs().max() > 1e-2 for mine, theirs in outputs[False])  # raw states: not so


def test_the_learned_weights_are_read_through_the_wrapper():
    model = _model(True)
    assert isinstance(model, StandardizedStates)
    torch.testing.assert_close(layer_weights_of(model), torch.full((2,), 0.5))
    single = build_fusion("single", n_layers=1, d_in=4, n_classes=3, hidden=6, state_norm=True)
    assert layer_weights_of(single) is None


def test_the_option_keys_its_runs_keeps_earlier_keys_and_is_refused_where_it_adds_nothing():
    cfg = TrainConfig()
    assert "state_norm" not in result_settings(dataclasses.asdict(cfg))
    normed = dataclasses.replace(cfg, state_norm=True)
    assert result_settings(dataclasses.asdict(normed))["state_norm"] is True
    assert run_key(normed, "id") != run_key(cfg, "id")
    for fusion in ("mean-fc", "fc"):
        with pytest.raises(ConfigError, match="standardises its input"):
            TrainConfig(fusion=fusion, layers="enc:0", state_norm=True).check()
    with pytest.raises(ConfigError, match="state_norm"):
        TrainConfig(state_norm="yes").check()


def _train(cache, out, failpoint=None):
    env = {k: v for k, v in os.environ.items() if k != "NSER_FAILPOINT"}
    if failpoint:
        env["NSER_FAILPOINT"] = failpoint
    cmd = [sys.executable, "-m", "pipeline.cli", "train", "--cache", str(cache), "--out", str(out), "--state-norm",
           "--fusion", "weighted-sum", "--layers", "enc:all", "--epochs", "3", "--batch-size", "4",
           "--folds", "0", "--quiet", "--threads", "1"]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def test_a_killed_state_norm_run_resumes_to_identical_metrics(tmp_path):
    """A resumed run (statistics fitted again, then the checkpoint's loaded) scores what an
    uninterrupted one does, and records the option in its config."""
    cache = make_cache(tmp_path / "c.zarr")
    ref = _train(cache, tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr
    run = tmp_path / "run"
    assert _train(cache, run, "train:epoch-end:2").returncode == -9
    done = _train(cache, run)
    assert done.returncode == 0, done.stderr
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (tmp_path / "ref", run))
    assert a["folds"] == b["folds"]
    assert json.loads((run / "config.json").read_text())["config"]["state_norm"] is True
