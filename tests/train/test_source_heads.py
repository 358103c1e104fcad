"""The paper's baseline heads on caches of real feature sources: `fc` on openSMILE functionals and
`single` (BiGRU) on mel frames train through the real `nser-train`; heads that cannot take a
source's states are refused before any training; `fc` standardises with training-part statistics."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from pipeline.cli.train import train_command
from pipeline.train.fusion import build_fusion


def train(cache, out, *args):
    return CliRunner().invoke(train_command, ["--cache", str(cache), "--out", str(out), "--epochs", "1",
                                              "--threads", "1", "--quiet", *args])


def test_fc_trains_on_opensmile_functionals(egemaps_cache, tmp_path):
    res = train(egemaps_cache, tmp_path / "fc", "--fusion", "fc", "--layers", "enc:all")
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "fc" / "metrics.json").read_text())
    assert metrics["fusion"] == "fc" and metrics["layers"] == ["enc0"] and len(metrics["folds"]) == 3


@pytest.mark.parametrize("fusion", ["single", "mean-fc"])
def test_frame_heads_train_on_mel(mel_cache, tmp_path, fusion):
    res = train(mel_cache, tmp_path / fusion, "--fusion", fusion, "--layers", "enc:0")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / fusion / "metrics.json").read_text())["fusion"] == fusion


@pytest.mark.parametrize("cache,fusion,advice", [
    ("egemaps_cache", "single", "use --fusion fc"),
    ("egemaps_cache", "l-adapter", "use --fusion fc"),
    ("mel_cache", "fc", "use --fusion mean-fc"),
])
def test_heads_that_cannot_take_the_source_are_refused_before_training(request, tmp_path, cache, fusion, advice):
    res = train(request.getfixturevalue(cache), tmp_path / "r", "--fusion", fusion, "--layers", "enc:all")
    assert res.exit_code != 0 and advice in res.output and "Traceback" not in res.output
    assert not (tmp_path / "r" / "config.json").exists()


def test_default_paper_layers_on_a_decoderless_source_say_what_to_select(egemaps_cache, tmp_path):
    res = train(egemaps_cache, tmp_path / "d", "--fusion", "fc")
    assert res.exit_code != 0 and "enc:all" in res.output


def test_fc_standardises_with_the_statistics_it_was_fitted_on():
    torch.manual_seed(0)
    model = build_fusion("fc", n_layers=1, d_in=3, n_classes=2, hidden=4, dropout=0.5).eval()
    train_part = torch.tensor([[[1.0, 10.0, 5.0]], [[3.0, 30.0, 5.0]], [[5.0, 50.0, 5.0]]])
    model.fit_input_stats([{"layers": [train_part], "lengths": [torch.ones(3, dtype=torch.long)]}])
    assert torch.allclose(model.mean, torch.tensor([3.0, 30.0, 5.0]))
    # population std; the constant feature keeps std 1
    assert torch.allclose(model.std, torch.tensor([np.sqrt(8 / 3), 10 * np.sqrt(8 / 3), 1.0]).float())
    assert "mean" in model.state_dict() and "std" in model.state_dict()
    with pytest.raises(ValueError, match="one vector per utterance"):
        model([torch.zeros(2, 4, 3)], [torch.full((2,), 4)])
