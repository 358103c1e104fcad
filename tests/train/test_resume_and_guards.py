"""A training run SIGKILLed mid-way resumes to the same metrics; caches unfit for a run are refused."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import zarr

from pipeline.cache.schema import ATTR_KEY
from pipeline.errors import NserError
from pipeline.train.config import TrainConfig
from pipeline.train.trainer import train_on_cache
from tests.helpers import Signal, row, write_cache


@pytest.fixture
def signal_cache(tmp_path):
    """3 folds x 12 utterances, d=8; the label is visible in encoder layer 1."""
    path = tmp_path / "c.zarr"
    shift = 2.0 * np.eye(8)[0]
    write_cache(path, 36, rows=lambda k: row(k, label="ab"[(k // 3) % 2]), lengths=lambda rng, k: (12 + k % 5, 5),
                signal=Signal("encoder", 1, {"a": shift, "b": -shift}))
    return path


def train_cli(cache, out, failpoint=None, extra=()):
    env = dict(os.environ)
    env.pop("NSER_FAILPOINT", None)
    if failpoint:
        env["NSER_FAILPOINT"] = failpoint
    cmd = [sys.executable, "-m", "pipeline.cli", "train", "--cache", str(cache), "--out", str(out),
           "--layers", "enc:all,dec:all", "--epochs", "4", "--batch-size", "8", "--seed", "3", "--quiet",
           "--threads", "1", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def test_killed_training_resumes_to_identical_metrics(signal_cache, tmp_path):
    ref = train_cli(signal_cache, tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr
    run = tmp_path / "run"
    # Killed after epoch 2 of fold 0, then after the 3rd epoch of the resumed run (fold 1, epoch 1).
    assert train_cli(signal_cache, run, "train:epoch-end:2").returncode == -9
    assert train_cli(signal_cache, run, "train:epoch-end:3").returncode == -9
    assert (run / "checkpoints").is_dir() and not (run / "metrics.json").exists()
    done = train_cli(signal_cache, run)
    assert done.returncode == 0, done.stderr
    a = json.loads((tmp_path / "ref" / "metrics.json").read_text())
    b = json.loads((run / "metrics.json").read_text())
    assert a["folds"] == b["folds"]
    log_a = [json.loads(x) for x in (tmp_path / "ref" / "log.jsonl").read_text().splitlines()]
    log_b = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    strip = lambda log: [{k: v for k, v in e.items() if not k.endswith("seconds")} for e in log]  # noqa: E731
    assert strip(log_a) == strip(log_b) and len(log_b) == 3 * 4
    assert not (run / "checkpoints").exists()


def test_other_settings_do_not_resume_a_run_dir(signal_cache, tmp_path):
    run = tmp_path / "run"
    assert train_cli(signal_cache, run, "train:epoch-end:1").returncode == -9
    with pytest.raises(NserError, match="other settings"):
        train_on_cache(signal_cache, run, TrainConfig(layers="enc:1", epochs=2, hidden=8), progress=False)


def test_guards(signal_cache, tmp_path):
    cfg = TrainConfig(layers="enc:1", epochs=1, hidden=8, batch_size=8)
    with pytest.raises(NserError, match="extracted with m, not openai/whisper-small"):
        train_on_cache(signal_cache, tmp_path / "a", TrainConfig(expect_model="openai/whisper-small"))
    g = zarr.open_group(str(signal_cache), mode="r+")
    meta = dict(g.attrs[ATTR_KEY])
    g.attrs[ATTR_KEY] = dict(meta, errors=[{"utt_id": "u99", "path": "x.wav", "fold": "1", "label": "a",
                                                "error": "x.wav: file not found"}])
    with pytest.raises(NserError, match="1 utterance.*failed extraction.*--allow-missing"):
        train_on_cache(signal_cache, tmp_path / "b", cfg, progress=False)
    cfg.allow_missing = True
    metrics = train_on_cache(signal_cache, tmp_path / "c", cfg, progress=False)
    assert metrics["folds"] and metrics["left_out"] == {"1": 1}
    g.attrs[ATTR_KEY] = dict(meta, n_manifest=40)
    with pytest.raises(NserError, match=r"incomplete \(36 of 40"):
        train_on_cache(signal_cache, tmp_path / "d", TrainConfig(layers="enc:1", epochs=1, hidden=8), progress=False)


def test_finished_run_dir_is_not_replaced_by_another_run(signal_cache, tmp_path):
    """A finished run dir (its checkpoints gone) is refused to other settings or another cache, as
    one with checkpoints is; a rerun with its own settings killed mid-way leaves no old metrics.json
    beside its new config.json."""
    run = tmp_path / "run"
    assert train_cli(signal_cache, run).returncode == 0
    finished = {name: (run / name).read_text() for name in ("config.json", "metrics.json", "log.jsonl")}
    assert not (run / "checkpoints").exists()
    other = train_cli(signal_cache, run, extra=["--epochs", "2"])
    assert other.returncode == 1 and "holds the finished results (metrics.json) of a run with other settings (epochs)" \
        in other.stderr
    other_cache = tmp_path / "other.zarr"
    write_cache(other_cache, 36, rows=lambda k: row(k, label="ab"[(k // 3) % 2]), lengths=lambda rng, k: (12 + k % 5, 5),
                identity={"k": 2})
    with pytest.raises(NserError, match=r"other settings \(cache identity\)"):
        train_on_cache(other_cache, run, TrainConfig(layers="enc:all,dec:all", epochs=4, batch_size=8, seed=3),
                       progress=False)
    assert {name: (run / name).read_text() for name in finished} == finished  # nothing touched
    # The same run again, killed after its first epoch: no finished results are left to misread.
    (run / "done.json").write_text("{}")  # as a grid run dir has
    assert train_cli(signal_cache, run, "train:epoch-end:1").returncode == -9
    assert not (run / "metrics.json").exists() and not (run / "done.json").exists()
    assert json.loads((run / "config.json").read_text()) == json.loads(finished["config.json"])
    done = train_cli(signal_cache, run)
    assert done.returncode == 0, done.stderr
    assert json.loads((run / "metrics.json").read_text())["folds"] == json.loads(finished["metrics.json"])["folds"]


def test_run_on_an_unfinished_cache_does_not_resume_after_it_grows(tmp_path):
    """An --allow-missing run killed on an unfinished cache is refused once the extraction has
    appended the rest (the identity hash stays): its checkpoints were trained on other folds' data."""
    def extract(n):
        write_cache(tmp_path / "c.zarr", n, rows=lambda k: row(k, label="ab"[(k // 3) % 2]),
                    lengths=lambda rng, k: (12 + k % 5, 5), identity={"k": "partial"})
        g = zarr.open_group(str(tmp_path / "c.zarr"), mode="r+")
        g.attrs[ATTR_KEY] = dict(g.attrs[ATTR_KEY], n_manifest=36)

    extract(24)
    run = tmp_path / "run"
    assert train_cli(tmp_path / "c.zarr", run, "train:epoch-end:1", extra=["--allow-missing"]).returncode == -9
    assert (run / "checkpoints").is_dir()
    extract(36)
    again = train_cli(tmp_path / "c.zarr", run, extra=["--allow-missing"])
    assert again.returncode == 1, again.stderr
    assert "holds checkpoints of a run with other settings (cached utterances: 24 then, 36 now)" in again.stderr


def test_a_fold_whose_every_utterance_failed_is_refused(signal_cache, tmp_path):
    """A speaker fold with no cached utterance (all its audio failed) is still a fold of the corpus:
    training without it needs --allow-missing, as one failed utterance does, and says so in left_out."""
    g = zarr.open_group(str(signal_cache), mode="r+")
    meta = dict(g.attrs[ATTR_KEY])
    g.attrs[ATTR_KEY] = dict(meta, errors=[{"utt_id": f"v{k}", "path": f"v{k}.wav", "fold": "3", "label": "a",
                                            "error": "permission denied"} for k in range(6)])
    cfg = TrainConfig(layers="enc:1", epochs=1, hidden=8, batch_size=8)
    with pytest.raises(NserError, match="6 utterance.*failed extraction.*--allow-missing"):
        train_on_cache(signal_cache, tmp_path / "a", cfg, progress=False)
    cfg.allow_missing = True
    metrics = train_on_cache(signal_cache, tmp_path / "b", cfg, progress=False)
    assert metrics["left_out"] == {"3": 6} and sorted(metrics["folds"]) == ["0", "1", "2"]
