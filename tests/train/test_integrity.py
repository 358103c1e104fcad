"""Training refuses what would end in a meaningless number: NaN/Inf states or losses, checkpoints of
another fold or not written by nser-train, settings no run can use, one-class data, unknown folds.
Every test injects the fault into a real Zarr cache (tests/helpers.py) or a real run dir."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.errors import NserError
from pipeline.folds import ClassCoverageWarning
from pipeline.train.checkpoint import CheckpointError, RunCheckpoints
from pipeline.train.config import ConfigError, TrainConfig
from pipeline.train.dataset import NonFiniteError
from pipeline.train.trainer import train_on_cache
from tests.helpers import make_cache, poison

REPO = Path(__file__).resolve().parents[2]
SPEAKERS = ["张三", "李四", "王五"]  # differ only outside ASCII: one name each once sanitised to ASCII


def tiny(**kw) -> TrainConfig:
    return TrainConfig(**{"layers": "enc:all", "epochs": 2, "batch_size": 4, "lr": 1e-2, "hidden": 8,
                          "threads": 1, **kw})


def cli(*args: str) -> "CliRunner.Result":
    return CliRunner().invoke(main, ["train", *args])


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return make_cache(tmp_path_factory.mktemp("integrity") / "c.zarr")


@pytest.fixture
def fresh_cache(tmp_path) -> Path:
    """A cache of this test's own, to poison."""
    return make_cache(tmp_path / "c.zarr")


# --- A: NaN / Inf ---------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_state_stops_training_naming_the_utterance(fresh_cache, tmp_path, value):
    poison(fresh_cache, "u4", "encoder", 1, value)  # u4 is in fold 2: the training part of test fold 0
    with pytest.raises(NonFiniteError, match=r"layer enc1 of utterance\(s\) u4 \(training part of fold 0\)"):
        train_on_cache(fresh_cache, tmp_path / "run", tiny(), progress=False)
    assert not (tmp_path / "run" / "metrics.json").exists()
    res = cli("--cache", str(fresh_cache), "--out", str(tmp_path / "cli"), "--layers", "enc:all", "--epochs", "1",
              "--quiet")
    assert res.exit_code == 1 and "non-finite (NaN/Inf) states in layer enc1 of utterance(s) u4" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "cli" / "metrics.json").exists()


def test_non_finite_state_in_a_test_fold_is_caught_when_scoring(fresh_cache, tmp_path):
    """--folds 2: u4 is only in the test part, read once, after training: still refused."""
    poison(fresh_cache, "u4", "encoder", 0)
    with pytest.raises(NonFiniteError, match=r"utterance\(s\) u4 \(test fold 2\)"):
        train_on_cache(fresh_cache, tmp_path / "run", tiny(folds="2"), progress=False)
    # a layer selection without the bad layer is the way out, and works
    assert train_on_cache(fresh_cache, tmp_path / "ok", tiny(folds="2", layers="enc:1,enc:2"), progress=False)


def test_diverging_lr_stops_with_fold_and_epoch(cache, tmp_path):
    """A huge (finite, accepted) lr drives the weights to NaN within the first epoch."""
    with pytest.raises(NonFiniteError, match=r"fold 0, epoch 1: the training loss is nan.*\(--lr, now 1e\+20\)"):
        train_on_cache(cache, tmp_path / "run", tiny(lr=1e20), progress=False)
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_non_finite_loss_names_fold_and_epoch(cache, tmp_path, monkeypatch):
    real = torch.nn.functional.cross_entropy
    calls = []

    def loss_goes_inf(*args, **kwargs):  # fold 0 has 6 training utterances: 2 batches per epoch
        calls.append(1)
        loss = real(*args, **kwargs)
        return loss * float("inf") if len(calls) == 4 else loss

    monkeypatch.setattr(torch.nn.functional, "cross_entropy", loss_goes_inf)
    with pytest.raises(NonFiniteError, match=r"^fold 0, epoch 2: the training loss is inf"):
        train_on_cache(cache, tmp_path / "run", tiny(epochs=3), progress=False)


def test_non_finite_outputs_are_not_predictions(cache, tmp_path, monkeypatch):
    """NaN weights after the last step make NaN logits, whose argmax would still 'predict' a class."""
    from pipeline.train import trainer

    real = trainer.build_fusion

    def nan_head(*args, **kwargs):
        model = real(*args, **kwargs)
        model.classifier.register_forward_hook(lambda m, i, out: out * float("nan") if not m.training else out)
        return model

    monkeypatch.setattr(trainer, "build_fusion", nan_head)
    with pytest.raises(NonFiniteError, match=r"outputs are not finite on the validation part of fold 0"):
        train_on_cache(cache, tmp_path / "run", tiny(fusion="mean"), progress=False)


# --- B: checkpoint names --------------------------------------------------------------------------

def train_cli(cache: Path, out: Path, failpoint: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "NSER_FAILPOINT"}
    env["PYTHONPATH"] = str(REPO)
    if failpoint:
        env["NSER_FAILPOINT"] = failpoint
    cmd = [sys.executable, "-m", "pipeline.cli", "train", "--cache", str(cache), "--out", str(out),
           "--layers", "enc:all", "--epochs", "2", "--batch-size", "4", "--lr", "0.01", "--seed", "1", "--quiet",
           "--threads", "1"]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def test_folds_named_outside_ascii_get_their_own_checkpoints(tmp_path):
    cache = make_cache(tmp_path / "speakers.zarr", fold_names=SPEAKERS)
    ref = train_cli(cache, tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr
    log = [json.loads(x) for x in (tmp_path / "ref" / "log.jsonl").read_text().splitlines()]
    assert [e["fold"] for e in log] == [f for f in SPEAKERS for _ in range(2)]  # each fold trained, none reused

    run = tmp_path / "run"
    killed = train_cli(cache, run, "train:epoch-end:5")  # 2 folds finished, the 3rd after its first epoch
    assert killed.returncode == -9, killed.stderr
    files = sorted((run / "checkpoints").glob("*.pt"))
    recorded = {p.name: torch.load(p, weights_only=True)["key"] for p in files}
    # the 3rd fold's epoch checkpoint and its best model so far (epoch 1), written apart
    assert len(files) == 4 and sorted(recorded.values()) == sorted([f"fold-{s}" for s in SPEAKERS] + [f"fold-{SPEAKERS[2]}"])
    assert sorted(p.name.split(".")[1] for p in files) == ["best", "done", "done", "epoch"]
    assert all(name.startswith("fold-__-") for name in recorded)  # readable prefix, then the hash

    resumed = train_cli(cache, run)
    assert resumed.returncode == 0, resumed.stderr
    a = json.loads((tmp_path / "ref" / "metrics.json").read_text())
    b = json.loads((run / "metrics.json").read_text())
    assert a["folds"] == b["folds"] and list(b["folds"]) == SPEAKERS


def test_a_checkpoint_of_another_key_is_refused(tmp_path):
    cache = make_cache(tmp_path / "speakers.zarr", fold_names=SPEAKERS)
    ckpt = RunCheckpoints(tmp_path / "run")
    assert len({ckpt.path(f"fold-{s}", "done") for s in SPEAKERS}) == 3
    assert len(ckpt.path("fold-" + "x" * 5000, "epoch").name) < 100  # long fold names still make a file name
    # 张三's finished model, placed where 李四's would be (as the old ASCII-only names did)
    ckpt.save_done("fold-张三", {"model": {}, "best_val": 1.0, "best_epoch": 1, "entries": []})
    os.replace(ckpt.path("fold-张三", "done"), ckpt.path("fold-李四", "done"))
    with pytest.raises(CheckpointError, match=r"belongs to 'fold-张三', not to 'fold-李四'.*delete"):
        train_on_cache(cache, tmp_path / "run", tiny(epochs=1), progress=False)


# --- C: checkpoints are data, not code ------------------------------------------------------------

def _leave_marker(path: str) -> None:
    Path(path).write_text("code from a checkpoint ran")


class RunsCodeWhenUnpickled:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return _leave_marker, (self.marker,)


def test_crafted_checkpoint_is_refused_without_running_it(cache, tmp_path):
    marker = tmp_path / "marker"
    run = tmp_path / "run"
    ckpt = RunCheckpoints(run)
    ckpt.dir.mkdir(parents=True)
    crafted = ckpt.path("fold-0", "done")
    torch.save({"key": "fold-0", "model": {}, "best_val": 1.0, "best_epoch": 1,
                "entries": [RunsCodeWhenUnpickled(marker)]}, crafted)
    with pytest.raises(CheckpointError, match=r"objects other than tensors and plain values.*_leave_marker"):
        train_on_cache(cache, run, tiny(epochs=1), progress=False)
    assert not marker.exists()
    torch.load(crafted, weights_only=False)  # the payload is live: an unrestricted load runs it
    assert marker.read_text() == "code from a checkpoint ran"


def test_unreadable_checkpoint_is_refused(cache, tmp_path):
    ckpt = RunCheckpoints(tmp_path / "run")
    ckpt.dir.mkdir(parents=True)
    ckpt.path("fold-0", "epoch").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"unreadable.*delete"):
        train_on_cache(cache, tmp_path / "run", tiny(epochs=1), progress=False)


# --- D: settings, classes, folds ------------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["--epochs", "0"], "'--epochs': 0 is not in the range x>=1"),
    (["--epochs", "-1"], "'--epochs': -1 is not in the range x>=1"),
    (["--batch-size", "0"], "'--batch-size': 0 is not in the range x>=1"),
    (["--lr", "0"], "'--lr': must be a finite number > 0, got 0.0"),
    (["--lr", "-0.001"], "'--lr': must be a finite number > 0"),
    (["--lr", "nan"], "'--lr': must be a finite number > 0, got nan"),
    (["--lr", "inf"], "'--lr': must be a finite number > 0, got inf"),
    (["--seed", "-1"], "'--seed': -1 is not in the range"),
    (["--threads", "-2"], "'--threads': -2 is not in the range x>=0"),
])
def test_cli_refuses_unusable_settings(cache, tmp_path, args, message):
    res = cli("--cache", str(cache), "--out", str(tmp_path / "run"), *args)
    assert res.exit_code == 2 and message in res.output, res.output
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args, message", [
    (["--layers", "enc:-3-5"], "negative layer index in 'enc:-3-5'"),
    (["--layers", "enc:0-5000000"], "encoder layer(s) 0-5000000 not in the cache: it stores encoder states 0..2"),
    (["--folds", "0,7"], "--folds '0,7': unknown fold(s) ['7']; the cache's test folds are ['0', '1', '2']"),
    (["--folds", ","], "folds must be 'all' or comma-separated fold names, got ','"),
])
def test_cli_refuses_bad_layers_and_folds(cache, tmp_path, args, message):
    res = cli("--cache", str(cache), "--out", str(tmp_path / "run"), "--epochs", "1", *args)
    assert res.exit_code == 1 and message in res.output and "Traceback" not in res.output, res.output
    assert not (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.parametrize("change, message", [
    ({"epochs": 0}, "epochs must be a whole number >= 1, got 0"),
    ({"batch_size": 0}, "batch_size must be a whole number >= 1, got 0"),
    ({"lr": 0.0}, "lr must be a finite number > 0, got 0.0"),
    ({"lr": float("nan")}, "lr must be a finite number > 0, got nan"),
    ({"lr": "1e-4"}, "lr must be a finite number > 0, got '1e-4'"),
    ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
    ({"hidden": 0}, "hidden must be"),
    ({"seed": -1}, "seed must be"),
    ({"fusion": "nope"}, "fusion must be one of"),
    ({"epochs": 0, "batch_size": 0}, "epochs must .*; batch_size must"),
])
def test_api_refuses_unusable_settings(cache, tmp_path, change, message):
    with pytest.raises(ConfigError, match=message):
        train_on_cache(cache, tmp_path / "run", tiny(**change), progress=False)
    assert not (tmp_path / "run").exists()


def test_unknown_fold_is_refused(cache, tmp_path):
    with pytest.raises(NserError, match=r"unknown fold\(s\) \['9'\]; the cache's test folds are \['0', '1', '2'\]"):
        train_on_cache(cache, tmp_path / "run", tiny(folds="0,9"), progress=False)
    assert list(train_on_cache(cache, tmp_path / "ok", tiny(folds=" 2, 0", epochs=1), progress=False)["folds"]) \
        == ["0", "2"]


def test_one_class_is_refused(tmp_path):
    cache = make_cache(tmp_path / "one_class.zarr", labels="a")
    with pytest.raises(NserError, match=r"test fold 0: the training part holds only class\(es\) \['a'\] of "
                                        r"\['a', 'b'\]"):
        train_on_cache(cache, tmp_path / "run", tiny(), progress=False)
    res = cli("--cache", str(cache), "--out", str(tmp_path / "cli"), "--epochs", "1")
    assert res.exit_code == 1 and "holds only class(es) ['a']" in res.output and "Traceback" not in res.output


def test_a_fold_missing_a_class_warns(tmp_path):
    # 4 folds; fold 3 (u6, u7, u14, u15, u22, u23) loses its b utterances
    cache = make_cache(tmp_path / "gap.zarr", n=24, n_folds=4, relabel={"u7": "a", "u15": "a", "u23": "a"})
    expected = ["test fold 2: the validation part has no utterance of class(es) ['b']",
                "test fold 3: the test fold has no utterance of class(es) ['b']"]
    # next-fold: fold 3 is fold 2's validation part (a carved part would hold other speakers)
    with pytest.warns(ClassCoverageWarning) as caught:
        metrics = train_on_cache(cache, tmp_path / "run", tiny(epochs=1, validation="next-fold"), progress=False)
    assert [str(w.message) for w in caught if w.category is ClassCoverageWarning] == expected
    assert metrics["warnings"] == expected and len(metrics["folds"]) == 4
    res = cli("--cache", str(cache), "--out", str(tmp_path / "cli"), "--layers", "enc:1", "--epochs", "1",
              "--batch-size", "4", "--validation", "next-fold", "--quiet")
    assert res.exit_code == 0, res.output
    assert all(f"warning: {w}" in res.output for w in expected)

