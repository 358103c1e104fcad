"""Packed grid tasks (pipeline/grid/packing.py, runner.execute_pack): which runs share a task, the
same results as one run per task, one read of each layer per pack, and one run's failure in a pack."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from pipeline.cache.counting_store import CountingStore
from pipeline.cache.reader import CacheReader
from pipeline.cli.grid import grid_command
from pipeline.grid.packing import plan_packs, training_cost
from pipeline.grid.runner import DONE, ERROR, run_grid, train_pack
from pipeline.grid.spec import GridSpec, expand, parse_grid
from pipeline.train.trainer import run_candidates, shared_run_data
from tests.helpers import make_cache, poison

TINY = {"epochs": 2, "hidden": 8, "batch_size": 4, "lr": 0.01, "threads": 1}
FUSIONS = [{"fusions": ["single"], "layers": ["each:enc:all"]},
           {"fusions": ["mean", "weighted-sum", "l-adapter"], "layers": ["enc:all", "enc:1,dec:all"]}]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return make_cache(tmp_path_factory.mktemp("pack") / "c.zarr")


def _grid(out: Path, cache: Path, subgrids: list[dict], **top) -> GridSpec:
    return parse_grid({"out": str(out), "caches": [str(cache)], "train": TINY, "subgrids": subgrids, **top})


@pytest.fixture
def client():
    from dask.distributed import Client, LocalCluster

    # one in-process worker thread: runs one after another, as in a worker process
    with LocalCluster(n_workers=1, processes=False, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster) as c:
        yield c


def test_runs_sharing_layers_pack_and_split_over_workers(tmp_path, cache):
    runs = expand(_grid(tmp_path / "out", cache, FUSIONS, seeds=[0, 1]))
    assert len(runs) == 2 * (3 + 3 * 2)
    one = plan_packs(runs, 1)
    # per seed: every run shares a layer with another (enc:1 links the selections), so one task
    assert len(one) == 2 and {len(p) for p in one} == {9}
    assert all(len({r.config.seed for r in p}) == 1 for p in one)
    two = plan_packs(runs, 2)
    assert len(two) == 4 and sorted(r.key for p in two for r in p) == sorted(r.key for r in runs)
    loads = sorted(sum(training_cost(r) for r in p) for p in two)
    # per seed: l-adapter enc:all 3 x 8, enc:1,dec:all 8 + 2 x 1; mean and weighted-sum one adapter per
    # stack, 8 and 8 + 1; three singles 8 each. Longest first onto the lighter pack: 48 / 44 of 92
    assert loads == [44.0, 44.0, 48.0, 48.0]
    assert plan_packs(runs, 2, pack=False) == [[r] for r in runs]
    # one-layer runs on different layers share nothing: one task each, as without packing
    singles = [r for r in runs if r.config.fusion == "single" and r.config.seed == 0]
    assert plan_packs(singles, 1) == [[r] for r in singles]

    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"out": str(tmp_path / "out"), "caches": [str(cache)], "train": TINY,
                                    "subgrids": FUSIONS}))
    res = CliRunner().invoke(grid_command, [str(grid), "--dry-run", "--workers", "2"])
    assert res.exit_code == 0 and "9 runs in 2 tasks (9 runs in 2 packed tasks, 0 alone) for 2 worker(s)" in res.output
    res = CliRunner().invoke(grid_command, [str(grid), "--dry-run", "--workers", "2", "--no-pack"])
    assert res.exit_code == 0 and "9 runs in 9 tasks (0 runs in 0 packed tasks, 9 alone)" in res.output


def _scores(run) -> dict:
    m = json.loads((run.run_dir / "metrics.json").read_text())
    return {k: m[k] for k in ("uar", "macro_f1", "uar_std", "macro_f1_std", "confusion", "folds", "layers",
                              "layer_weights") if k in m}


def test_packed_grid_gives_the_results_of_one_run_per_task(tmp_path, cache, client):
    # two of the three test folds: per-fold results compared, at two thirds of the training
    packed_spec = _grid(tmp_path / "packed", cache, FUSIONS, folds=["0", "1"])
    alone_spec = _grid(tmp_path / "alone", cache, FUSIONS, folds=["0", "1"])
    packed = run_grid(expand(packed_spec), packed_spec.out, client=client, progress=False)
    alone = run_grid(expand(alone_spec), alone_spec.out, client=client, progress=False, pack=False)
    assert (packed.table["status"] == "done").all() and (alone.table["status"] == "done").all()
    cols = ["run_key", "uar", "macro_f1", "uar_std", "fold_uar", "fold_macro_f1", "confusion", "best_layer"]
    assert packed.table[cols].equals(alone.table[cols])
    for p, a in zip(expand(packed_spec), expand(alone_spec)):
        assert _scores(p) == _scores(a), p.describe()  # per fold: test and validation scores, epochs, weights
        shared = json.loads((p.run_dir / "metrics.json").read_text())["data"].get("shared_by")
        assert shared == 9 and "shared_by" not in json.loads((a.run_dir / "metrics.json").read_text())["data"]
    assert (packed.table["peak_rss_mb"] > 10).all() and "largest worker peak memory" in packed.summary()


def test_a_pack_reads_each_selected_array_once(tmp_path, cache):
    runs = expand(_grid(tmp_path / "out", cache, [{"fusions": ["single"], "layers": ["each:enc:all"]},
                                                 {"fusions": ["mean"], "layers": ["enc:all", "enc:1,dec:all"]}],
                        folds=["0"]))
    store = CountingStore.open(cache)
    with CacheReader(store) as reader:
        store.reset()
        assert all(s["status"] == "done" for s in train_pack(reader, runs))
        read = {k: v for k, v in store.counts.items() if k.startswith(("encoder/", "decoder/"))}
        store.reset()
        shared_run_data(reader, [r.config for r in runs]).prepare()  # one read of the union
        once = {k: v for k, v in store.counts.items() if k.startswith(("encoder/", "decoder/"))}
        layers = {s for r in runs for sel in run_candidates(reader, r.config) for s in sel.names}
    assert layers == {"enc0", "enc1", "enc2", "dec0", "dec1"} and len(read) == 5 and read == once


def test_one_failing_run_leaves_the_rest_of_its_pack_and_reruns_only_it(tmp_path, tmp_path_factory, client):
    bad_cache = shutil.copytree(make_cache(tmp_path_factory.mktemp("bad") / "c.zarr"), tmp_path / "c.zarr")
    poison(bad_cache, "u4", "encoder", 1)  # a NaN in enc1: found while training a run that selects it
    s = _grid(tmp_path / "out", bad_cache, [
        {"fusions": ["mean"], "layers": ["enc:0,1", "enc:0,2"]},
        {"fusions": ["single"], "layers": ["enc:0"]},
        {"fusions": ["l-adapter"], "layers": ["enc:0,2"], "train": {"expect_model": "another-model"}}])
    runs = {(r.config.fusion, r.layers): r for r in expand(s)}
    assert len(plan_packs(list(runs.values()), 1)) == 1  # all share enc0: one task
    first = run_grid(list(runs.values()), s.out, client=client, progress=False)
    status = dict(zip(first.table["run_key"], first.table["status"]))
    nan_run, bad_setting = runs[("mean", "enc:0,1")], runs[("l-adapter", "enc:0,2")]
    assert sorted(first.failed) == sorted([nan_run.key, bad_setting.key])
    assert "enc1" in (nan_run.run_dir / ERROR).read_text() and not (nan_run.run_dir / DONE).exists()
    assert "another-model" in (bad_setting.run_dir / ERROR).read_text()
    finished = [r for r in runs.values() if status[r.key] == "done"]
    assert len(finished) == 2
    stamps = {r.key: (r.run_dir / DONE).stat().st_mtime_ns for r in finished}
    second = run_grid(list(runs.values()), s.out, client=client, progress=False)
    assert sorted(second.ran) == sorted(first.failed) and sorted(second.skipped) == sorted(stamps)
    assert stamps == {r.key: (r.run_dir / DONE).stat().st_mtime_ns for r in finished}


def test_the_longest_runs_start_first(tmp_path, cache, client):
    """A per-layer adapter over both stacks costs most, decoder-only one-layer runs least: tasks are
    submitted longest first, so one worker runs them in that order (a grid stopped early has its
    long runs done), whatever the spec's order."""
    subgrids = [{"fusions": ["single"], "layers": ["each:dec:all", "enc:0"]},
                {"fusions": ["mean", "l-adapter"], "layers": ["enc:all,dec:all", "dec:all"]}]
    runs = expand(_grid(tmp_path / "out", cache, subgrids))
    outcome = run_grid(runs, tmp_path / "out", client=client, pack=False, progress=False)
    by_key = {r.key: r for r in runs}
    order = [(by_key[k].config.fusion, by_key[k].layers) for k in outcome.ran]
    # the test cache has 3 encoder and 2 decoder states; an encoder adapter counts 8 decoder ones
    assert order == [("l-adapter", "enc:all,dec:all"),  # 3 x 8 + 2
                     ("mean", "enc:all,dec:all"),       # 8 + 1: one adapter per stack after mixing
                     ("single", "enc:0"),               # 8
                     ("l-adapter", "dec:all"),          # 2
                     ("single", "dec:0"), ("single", "dec:1"), ("mean", "dec:all")]  # 1 each, spec order


def test_cost_counts_the_models_a_run_trains(tmp_path, cache):
    """`best` trains a model per candidate layer, `last` one on its stack's last state, whatever the
    stack it names; the per-utterance-style heads (mean-fc) no recurrent adapter."""
    subgrids = [{"fusions": ["best", "last", "l-adapter", "mean"], "layers": ["enc:all"]},
                {"fusions": ["mean-fc"], "layers": ["enc:0"]}]
    runs = expand(_grid(tmp_path / "out", cache, subgrids), derive=False)
    cost = {r.config.fusion: training_cost(r) for r in runs}
    assert cost == {"best": 24.0, "last": 8.0, "l-adapter": 24.0, "mean": 8.0, "mean-fc": 0.1}
