"""What an epoch checkpoint holds, and where a resumed run finds its best model."""

from __future__ import annotations

import torch

from pipeline.train.checkpoint import RunCheckpoints
from pipeline.train.config import TrainConfig
from pipeline.train.trainer import train_on_cache
from tests.helpers import make_cache


def _model(v: float) -> dict:
    return {"w": torch.full((3,), v)}


def test_best_model_comes_from_the_epoch_file_or_the_best_file_of_the_same_epoch(tmp_path):
    ckpt = RunCheckpoints(tmp_path)
    old_style = {"epoch": 4, "best_epoch": 2, "best_val": 0.5, "best_model": _model(2.0)}  # before .best files
    assert torch.equal(ckpt.best_model("k", old_style)["w"], _model(2.0)["w"])
    state = {"epoch": 4, "best_epoch": 2, "best_val": 0.5}
    assert ckpt.best_model("k", state) is None  # no .best file
    ckpt.save_best("k", 2, _model(2.0))
    assert torch.equal(ckpt.best_model("k", state)["w"], _model(2.0)["w"])
    ckpt.save_best("k", 5, _model(5.0))  # written, then killed before epoch 5's checkpoint
    assert ckpt.best_model("k", state) is None
    ckpt.save_done("k", {"model": _model(5.0)})
    assert not ckpt.path("k", "best").exists() and ckpt.load_done("k") is not None


def test_epochs_write_the_model_and_optimizer_and_the_best_model_only_when_it_improves(tmp_path, monkeypatch):
    saved: list[tuple[str, dict]] = []
    real_save = RunCheckpoints._save

    def record(self, path, key, state):
        saved.append((path.name.split(".")[-2], state))
        real_save(self, path, key, state)

    monkeypatch.setattr(RunCheckpoints, "_save", record)
    cache = make_cache(tmp_path / "c.zarr")
    cfg = TrainConfig(fusion="mean", layers="enc:1", epochs=5, batch_size=4, hidden=4, threads=1, folds="0")
    metrics = train_on_cache(cache, tmp_path / "run", cfg, progress=False)
    epochs = [s for kind, s in saved if kind == "epoch"]
    assert [s["epoch"] for s in epochs] == [1, 2, 3, 4] and all("best_model" not in s for s in epochs)
    assert set(epochs[0]) == {"epoch", "model", "optimizer", "best_val", "best_epoch", "torch_rng", "shuffle_rng",
                              "entries"}
    best_epochs = [s["epoch"] for kind, s in saved if kind == "best"]
    val = [e["val_uar"] for e in epochs[-1]["entries"]] + [None]
    improved = [e for e in range(1, 5) if val[e - 1] > max([-1.0] + val[:e - 1])]
    assert best_epochs == improved and metrics["folds"]["0"]["best_epoch"] in improved + [5]
