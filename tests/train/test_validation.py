"""Validation protocols through training, on a real fake cache: what each fold trains and picks
on, what config.json and metrics.json record, and that run dirs from before --validation resume."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.errors import NserError
from pipeline.train.config import TrainConfig
from pipeline.train.trainer import train_on_cache
from tests.helpers import Signal, row, write_cache

N = 24  # 3 folds x 2 speakers x 4 utterances


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("val") / "c.zarr"
    write_cache(path, N, rows=lambda k: row(k, fold=str(k % 3), speaker=f"s{k % 3}{k // 3 % 2}", label="ab"[k // 6 % 2]),
                lengths=lambda rng, k: (5, 2), signal=Signal("encoder", 1, {"b": 3.0}), n_enc=2, n_dec=1, d=4)
    return path


def cfg(**kw) -> TrainConfig:
    return TrainConfig(fusion="mean", layers="enc:1", epochs=3, batch_size=8, hidden=4, threads=1, **kw)


def test_none_keeps_the_last_epoch_and_records_the_protocol(cache, tmp_path):
    metrics = train_on_cache(cache, tmp_path / "run", cfg(validation="none"), progress=False)
    assert metrics["validation"] == "none"
    for fold in metrics["folds"].values():
        assert (fold["best_epoch"], fold["val_uar"], fold["n_val"], fold["n_train"]) == (3, None, 0, N - N // 3)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert len(log) == 9 and {e["val_uar"] for e in log} == {None}
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["validation"] == "none" and config["config"]["validation"] == "none"


def test_speaker_carve_trains_on_both_other_folds(cache, tmp_path):
    metrics = train_on_cache(cache, tmp_path / "run", cfg(validation="paper"), progress=False)
    assert metrics["validation"] == "speaker-carve"  # the resolved protocol, not what was asked
    for fold in metrics["folds"].values():
        # 4 training speakers (2 folds), 1/(3-1) of them carved: 2 speakers, 8 utterances
        assert (fold["n_train"], fold["n_val"]) == (8, 8) and 1 <= fold["best_epoch"] <= 3
    default = train_on_cache(cache, tmp_path / "default", cfg(), progress=False)
    assert default["validation"] == "speaker-carve"  # the default is the paper's reading
    before = train_on_cache(cache, tmp_path / "before", cfg(validation="next-fold"), progress=False)
    assert before["validation"] == "next-fold"
    assert {(f["n_train"], f["n_val"]) for f in before["folds"].values()} == {(8, 8)}


def test_run_dirs_from_before_the_setting_resume(cache, tmp_path):
    """A run dir whose config.json has no validation (written before it existed) and that holds
    checkpoints is the same run as next-fold (the default then), and another run than any other
    protocol, today's default included."""
    out = tmp_path / "run"
    train_on_cache(cache, out, cfg(validation="next-fold"), progress=False)
    info = json.loads((out / "config.json").read_text())
    del info["config"]["validation"], info["validation"]
    (out / "checkpoints").mkdir()
    (out / "config.json").write_text(json.dumps(info))
    for other in ("speaker-carve", "paper"):
        with pytest.raises(NserError, match="holds checkpoints of a run with other settings"):
            train_on_cache(cache, out, cfg(validation=other), progress=False)
    again = train_on_cache(cache, out, cfg(validation="next-fold"), progress=False)
    assert np.isfinite(again["uar"]) and again["validation"] == "next-fold"


def test_grid_specs_set_the_protocol_and_key_it(cache, tmp_path):
    from pipeline.grid.spec import expand, parse_grid

    def runs(train):
        spec = {"out": str(tmp_path / "grid"), "caches": [str(cache)], "fusions": ["mean"], "layers": ["enc:1"],
                "train": {"epochs": 1, **train}}
        return expand(parse_grid(spec))

    (default,), (carve,), (before,) = runs({}), runs({"validation": "speaker-carve"}), runs({"validation": "next-fold"})
    assert (default.config.validation, carve.config.validation) == ("paper", "speaker-carve")
    assert len({default.key, carve.key, before.key}) == 3
    with pytest.raises(NserError, match="validation must be one of"):
        runs({"validation": "sessions"})
