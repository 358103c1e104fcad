"""Training on a real cache (bundled:base states of real EmoDB speech in real babble noise)."""

import json

from pipeline.cache.reader import CacheReader
from pipeline.train.config import TrainConfig
from pipeline.train.trainer import fold_plan, train_on_cache
from pipeline.cache.counting_store import CountingStore


def test_layer_subset_reads_only_those_layers(small_cache, tmp_path):
    store = CountingStore.open(small_cache)
    reader = CacheReader(store)
    store.reset()
    metrics = train_on_cache(reader, tmp_path / "run", TrainConfig(layers="enc:5-6", epochs=1, hidden=16),
                             progress=False)
    assert metrics["layers"] == ["enc5", "enc6"]
    read = dict(store.counts)
    assert read.get("encoder/layer_05", 0) > 0 and read.get("encoder/layer_06", 0) > 0
    others = {k: v for k, v in read.items() if k not in ("encoder/layer_05", "encoder/layer_06")}
    assert others == {}, f"bytes read from other arrays: {others}"
    # One epoch per fold reads every utterance once per fold; chunk granularity costs at most 2x.
    utt_bytes = int(reader.table["n_frames"].sum()) * reader.d_model * 2
    assert read["encoder/layer_05"] <= len(metrics["folds"]) * 2 * utt_bytes


def test_folds_are_speaker_independent(small_cache):
    reader = CacheReader(small_cache)
    spk = reader.table["speaker"]
    for test, train, val, tst in fold_plan(reader):
        assert not set(spk[train]) & set(spk[tst]) and not set(spk[val]) & set(spk[tst])
        assert not set(spk[train]) & set(spk[val])


def test_same_seed_same_result(small_cache, tmp_path):
    cfg = TrainConfig(layers="enc:6,dec:2", epochs=2, hidden=16, seed=7)
    a = train_on_cache(small_cache, tmp_path / "a", cfg, progress=False)
    b = train_on_cache(small_cache, tmp_path / "b", cfg, progress=False)
    assert a["folds"] == b["folds"]
    saved = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert {"uar", "macro_f1", "folds", "confusion"} <= set(saved)
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["seed"] == 7 and config["cache"]["identity_hash"] == CacheReader(small_cache).identity_hash
    log = [json.loads(line) for line in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert len(log) == 2 * len(a["folds"]) and {"fold", "epoch", "train_loss", "val_uar"} <= set(log[0])
