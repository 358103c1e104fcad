"""Training reads its states once (pipeline/train/resident.py): the same batches and results as the
per-utterance path, the bytes it reads (through a byte-counting store), streaming when the states do
not fit the memory budget, and NaN states still refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pipeline.cache.counting_store import CountingStore
from pipeline.cache.reader import CacheReader
from pipeline.errors import NserError
from pipeline.folds import fold_plan
from pipeline.train.dataset import NonFiniteError, PerUtteranceData
from pipeline.train.resident import RunData, parse_size
from pipeline.train.config import TrainConfig
from pipeline.train.trainer import train_on_cache
from tests.helpers import make_cache, poison


def log_without_times(run: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(x).items() if not k.endswith("seconds")}
            for x in (run / "log.jsonl").read_text().splitlines()]


def own_bytes(reader: CacheReader, indices, layers: int, stack: str = "encoder") -> int:
    col = "n_frames" if stack == "encoder" else "n_tokens"
    return int(reader.table[col][list(indices)].sum()) * reader.d_model * 2 * layers


@pytest.fixture(scope="module")
def fake(tmp_path_factory) -> Path:
    return make_cache(tmp_path_factory.mktemp("resident") / "c.zarr", n=30)


def test_read_once_trains_exactly_as_per_utterance_on_a_real_cache(small_cache, tmp_path):
    """Same seed: the same shuffles, batches and float32 values, hence the same log and metrics."""
    cfg = TrainConfig(fusion="l-adapter", layers="enc:4-6,dec:1-2", epochs=2, batch_size=8, hidden=16, seed=3,
                      threads=1)
    old = train_on_cache(small_cache, tmp_path / "old", cfg, progress=False, per_utterance=True)
    new = train_on_cache(small_cache, tmp_path / "new", cfg, progress=False)
    assert new["data"]["mode"] == "memory" and old["data"]["mode"] == "per-utterance"
    assert new["folds"] == old["folds"] and new["confusion"] == old["confusion"]
    assert log_without_times(tmp_path / "new") == log_without_times(tmp_path / "old")


@pytest.mark.parametrize("fusion, layers", [("best", "enc:all,dec:all"), ("mean", "enc:0,2"),
                                            ("weighted-sum", "enc:all,dec:all")])
def test_read_once_equals_per_utterance_for_other_fusions(fake, tmp_path, fusion, layers):
    cfg = TrainConfig(fusion=fusion, layers=layers, epochs=3, batch_size=4, lr=1e-2, hidden=8, threads=1)
    old = train_on_cache(fake, tmp_path / "old", cfg, progress=False, per_utterance=True)
    new = train_on_cache(fake, tmp_path / "new", cfg, progress=False)
    assert new["folds"] == old["folds"] and log_without_times(tmp_path / "new") == log_without_times(tmp_path / "old")


def test_batches_are_bitwise_the_per_utterance_batches(small_cache):
    reader = CacheReader(small_cache)
    sel = reader.selection("enc:0,3,6,dec:0,6")  # not consecutive: the layer axis is indexed, not sliced
    _, train, val, test = fold_plan(reader)[0]
    data = RunData(reader, [reader.selection("enc:all,dec:all")], train + val + test, budget=2**40).prepare()
    ids = {c: i for i, c in enumerate(reader.classes)}
    for idx, shuffled in ((train, True), (test, False)):
        gens = [torch.Generator().manual_seed(5) if shuffled else None for _ in range(2)]
        old = list(PerUtteranceData(reader).loader(idx, sel, ids, 8, "p", gens[0]))
        new = list(data.loader(idx, sel, ids, 8, "p", gens[1]))
        assert len(old) == len(new)
        for a, b in zip(old, new):
            assert torch.equal(a["index"], b["index"]) and torch.equal(a["labels"], b["labels"])
            for x, y, n, m in zip(a["layers"], b["layers"], a["lengths"], b["lengths"]):
                assert x.dtype == y.dtype == torch.float32 and x.shape == y.shape and torch.equal(x, y)
                assert torch.equal(n, m)


def test_a_run_reads_its_layers_once(small_cache, tmp_path):
    """Memory mode: every selected array is read about once for the whole run (all folds, all epochs)
    and unselected arrays not at all."""
    store = CountingStore.open(small_cache)
    reader = CacheReader(store)
    store.reset()
    metrics = train_on_cache(reader, tmp_path / "run", TrainConfig(layers="enc:5-6,dec:3", epochs=2, hidden=8,
                                                                  threads=1), progress=False)
    assert metrics["data"]["mode"] == "memory"
    every = range(reader.n)
    for name, stack in (("encoder/layer_05", "encoder"), ("encoder/layer_06", "encoder"),
                        ("decoder/layer_03", "decoder")):
        assert own_bytes(reader, every, 1, stack) <= store.bytes_for(name) <= 1.25 * own_bytes(reader, every, 1, stack)
    assert store.bytes_outside("encoder/layer_05", "encoder/layer_06", "decoder/layer_03") == 0


def test_streaming_epoch_reads_about_the_utterances_own_bytes(small_cache):
    store = CountingStore.open(small_cache)
    reader = CacheReader(store)
    sel = reader.selection("enc:2,6,dec:1")
    _, train, val, test = fold_plan(reader)[0]
    data = RunData(reader, [sel], train + val + test, budget=1).prepare()
    assert data.mode == "stream" and not hasattr(data, "buf")
    ids = {c: i for i, c in enumerate(reader.classes)}
    loader = data.loader(train, sel, ids, 4, "training part", torch.Generator().manual_seed(0))
    arrays = (("encoder/layer_02", "encoder"), ("encoder/layer_06", "encoder"), ("decoder/layer_01", "decoder"))
    own = {name: own_bytes(reader, train, 1, stack) for name, stack in arrays}
    blocks = len(data.blocks(train))
    for epoch in range(2):
        store.reset()
        seen = [i for batch in loader for i in batch["index"].tolist()]
        assert sorted(seen) == sorted(train)  # every utterance once per epoch
        assert sum(store.bytes_for(name) for name in own) <= 1.25 * sum(own.values())
        for name, stack in arrays:  # each block's span costs at most a chunk at either end, and a shard index
            arr = reader.array(stack, int(name[-2:]))
            edge = 2 * arr.chunks[0] * arr.shape[1] * 2 + 2048
            assert own[name] <= store.bytes_for(name) <= own[name] + blocks * edge, name
        assert store.bytes_outside(*own) == 0
    val_batches = list(data.loader(val, sel, ids, 4, "validation part"))
    assert [i for b in val_batches for i in b["index"].tolist()] == sorted(val)  # unshuffled: index order


def test_streamed_run_is_seeded_and_recorded(fake, tmp_path):
    cfg = TrainConfig(layers="enc:all", epochs=2, batch_size=4, lr=1e-2, hidden=8, threads=1, memory_budget=1)
    a = train_on_cache(fake, tmp_path / "a", cfg, progress=False)
    b = train_on_cache(fake, tmp_path / "b", cfg, progress=False)
    assert a["data"]["mode"] == "stream" and a["folds"] == b["folds"]
    assert json.loads((tmp_path / "a" / "config.json").read_text())["data_mode"] == "stream"


@pytest.mark.parametrize("budget", [0, 1])  # in memory (default budget), streamed
def test_nan_state_still_stops_training_naming_the_utterance(tmp_path, budget):
    cache = make_cache(tmp_path / "c.zarr")
    poison(cache, "u4", "encoder", 1)  # fold 2: the training part of test fold 0
    cfg = TrainConfig(layers="enc:all", epochs=2, batch_size=4, lr=1e-2, hidden=8, threads=1, memory_budget=budget)
    with pytest.raises(NonFiniteError, match=r"layer enc1 of utterance\(s\) u4 \(training part of fold 0\)"):
        train_on_cache(cache, tmp_path / "run", cfg, progress=False)


def test_a_run_is_not_resumed_in_the_other_data_mode(fake, tmp_path):
    run = tmp_path / "run"
    cfg = TrainConfig(layers="enc:all", epochs=1, batch_size=4, hidden=8, threads=1, memory_budget=1)
    train_on_cache(fake, run, cfg, progress=False)
    (run / "checkpoints").mkdir()  # as a run killed mid-way leaves it
    cfg.memory_budget = 0
    with pytest.raises(NserError, match=r"streamed, but now they are in memory.*--memory-budget"):
        train_on_cache(fake, run, cfg, progress=False)


def test_sizes_and_budget_setting():
    assert parse_size("8G") == 8 * 2**30 and parse_size("512m") == 512 * 2**20 and parse_size("1.5GiB") == 3 * 2**29
    assert parse_size("1000") == 1000 and parse_size(0) == 0
    with pytest.raises(NserError, match="use bytes or a number with K, M, G or T"):
        parse_size("lots")
    with pytest.raises(NserError, match="memory_budget must be a whole number of bytes >= 0"):
        TrainConfig(memory_budget=-1).check()


def test_device_auto_says_which_device_runs(fake, tmp_path, capsys):
    cfg = TrainConfig(layers="enc:1", epochs=1, batch_size=4, hidden=8, threads=1, folds="0")
    metrics = train_on_cache(fake, tmp_path / "run", cfg, progress=False)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert f"nser-train: training on {expected}" in capsys.readouterr().err
    assert json.loads((tmp_path / "run" / "config.json").read_text())["device"] == expected
    assert metrics["data"]["on"] == expected
    if not torch.cuda.is_available():
        with pytest.raises(NserError, match="--device cuda: torch .* sees no CUDA GPU here"):
            train_on_cache(fake, tmp_path / "r2", TrainConfig(layers="enc:1", device="cuda"), progress=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (docs/gpu.md says how to run it)")
def test_cuda_run_keeps_states_on_the_gpu(fake, tmp_path):
    cfg = TrainConfig(layers="enc:all,dec:all", epochs=2, batch_size=4, lr=1e-2, hidden=8, device="cuda")
    gpu = train_on_cache(fake, tmp_path / "gpu", cfg, progress=False)
    assert gpu["data"]["on"].startswith("cuda") and gpu["data"]["mode"] == "memory"
    cpu = train_on_cache(fake, tmp_path / "cpu", TrainConfig(**{**cfg.__dict__, "device": "cpu"}), progress=False)
    assert abs(gpu["uar"] - cpu["uar"]) <= 0.2  # same method; float differences only


def test_float16_is_refused_off_cuda_before_the_run_dir_is_claimed(fake, tmp_path):
    """float16 is CUDA mixed precision with loss scaling; on the CPU reduced precision is bfloat16, so
    a float16 run there is refused, naming the device and the way out, and writes nothing."""
    cfg = TrainConfig(layers="enc:1", epochs=1, batch_size=4, hidden=8, threads=1, device="cpu", precision="float16")
    with pytest.raises(NserError, match=r"--precision float16 is for a CUDA device .*trains on cpu: use bfloat16"):
        train_on_cache(fake, tmp_path / "run", cfg, progress=False)
    assert not (tmp_path / "run" / "config.json").exists()


def test_bfloat16_on_the_cpu_runs_the_model_in_reduced_precision_and_repeats_itself(fake, tmp_path):
    """CPU autocast in bfloat16: float32 logits that differ a little from float32's (the GRUs and
    matrix products ran in bfloat16), float32 weights, and the same seed gives the same result."""
    from pipeline.train.fusion import build_fusion
    from pipeline.train.trainer import _forward

    torch.manual_seed(0)
    model = build_fusion("l-adapter", n_layers=2, d_in=64, n_classes=4, hidden=32).eval()
    batch = {"layers": [torch.randn(3, 20, 64) * 4 for _ in range(2)], "lengths": [torch.tensor([20, 15, 9])] * 2}
    exact = _forward(model, batch, TrainConfig(device="cpu"))
    low = _forward(model, batch, TrainConfig(device="cpu", precision="bfloat16"))
    assert low.dtype == torch.float32 and 0 < (low - exact).abs().max() < 0.1

    cfg = TrainConfig(layers="enc:all,dec:all", epochs=2, batch_size=4, lr=1e-2, hidden=8, threads=1, device="cpu",
                      precision="bfloat16")
    first = train_on_cache(fake, tmp_path / "a", cfg, progress=False)
    again = train_on_cache(fake, tmp_path / "b", cfg, progress=False)
    assert first["folds"] == again["folds"]
    assert json.loads((tmp_path / "a" / "config.json").read_text())["config"]["precision"] == "bfloat16"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (docs/gpu.md says how to run it)")
def test_bfloat16_is_refused_on_cuda(fake, tmp_path):
    cfg = TrainConfig(layers="enc:1", epochs=1, batch_size=4, hidden=8, device="cuda", precision="bfloat16")
    with pytest.raises(NserError, match="--precision bfloat16 is for the CPU"):
        train_on_cache(fake, tmp_path / "run", cfg, progress=False)
    assert not (tmp_path / "run" / "config.json").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (docs/gpu.md says how to run it)")
def test_cuda_float16_runs_and_streams_pinned_batches(fake, tmp_path):
    """float16 mixed precision trains on the GPU with float32 weights; a streamed run (budget 1
    byte) builds page-locked batches on the CPU for non_blocking copies."""
    cfg = TrainConfig(layers="enc:all,dec:all", epochs=2, batch_size=4, lr=1e-2, hidden=8, device="cuda",
                      precision="float16")
    low = train_on_cache(fake, tmp_path / "fp16", cfg, progress=False)
    full = train_on_cache(fake, tmp_path / "fp32", TrainConfig(**{**cfg.__dict__, "precision": "float32"}),
                          progress=False)
    assert abs(low["uar"] - full["uar"]) <= 0.2
    reader = CacheReader(fake)
    sel = reader.selection("enc:all,dec:all")
    _, train, val, test = fold_plan(reader)[0]
    streamed = RunData(reader, [sel], train + val + test, budget=1, device="cuda").prepare()
    ids = {c: i for i, c in enumerate(reader.classes)}
    batch = next(iter(streamed.loader(test, sel, ids, 4, "test fold")))
    assert streamed.mode == "stream" and all(x.is_pinned() for x in batch["layers"])
