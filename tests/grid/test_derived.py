"""`best` and `last` runs a grid derives from its `single` runs instead of training them: the
equivalence that allows it, the derived runs' results and the grid's training count."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from pipeline.cache.writer import CacheWriter
from pipeline.cli.grid import grid_command
from pipeline.grid import runner
from pipeline.grid.derive import derived_metrics
from pipeline.grid.runner import DONE, ERROR, run_grid
from pipeline.grid.spec import GridSpec, GridSpecError, expand, parse_grid
from pipeline.train.config import TrainConfig
from pipeline.train.fusion_specs import fusion_spec
from pipeline.train.run_metrics import RunMetrics
from pipeline.train.trainer import format_metrics_table, train_on_cache
from tests.helpers import LAYOUT, attrs, make_cache, random_states, row

TINY = {"epochs": 2, "hidden": 8, "batch_size": 4, "lr": 0.01}


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return make_cache(tmp_path_factory.mktemp("derive") / "c.zarr")


def _fold_scores(metrics: dict) -> dict:
    """Per fold: what the model scored on validation and test, and the data it saw."""
    return {fold: {k: m[k] for k in ("uar", "macro_f1", "confusion", "n", "best_epoch", "val_uar", "n_train",
                                     "n_val")}
            for fold, m in metrics["folds"].items()}


def test_best_and_last_train_each_candidate_as_a_single_run(cache, tmp_path):
    """The premise of derived runs: `best`'s model for candidate L is `single` on L (validation per
    fold, and test for the chosen one), and `last` is `single` on the last layer."""
    single = {f"enc{i}": train_on_cache(cache, tmp_path / f"single{i}", TrainConfig(
        fusion="single", layers=f"enc:{i}", **TINY), progress=False) for i in range(3)}
    best = train_on_cache(cache, tmp_path / "best", TrainConfig(fusion="best", layers="enc:all", **TINY),
                          progress=False)
    last = train_on_cache(cache, tmp_path / "last", TrainConfig(fusion="last", layers="enc:all", **TINY),
                          progress=False)
    assert best["layer_val_uar_folds"] == {name: {f: m["val_uar"] for f, m in s["folds"].items()}
                                           for name, s in single.items()}
    assert _fold_scores(best) == {f: _fold_scores(single[layer])[f] for f, layer in best["best_layer_folds"].items()}
    assert _fold_scores(last) == _fold_scores(single["enc2"])
    assert last["uar"] == single["enc2"]["uar"] and last["confusion"] == single["enc2"]["confusion"]


def fold_signal_cache(path: Path) -> Path:
    """3 folds x 12 utterances where the label is in encoder layer 1 in fold 0, layer 2 in fold 1
    and both in fold 2. Under next-fold validation, test fold 0 (trained on fold 2, validated on
    fold 1) can only do well with enc2 and test fold 1 (trained on 0, validated on 2) only with
    enc1: their validation parts favour different layers."""
    layers = {"0": (1,), "1": (2,), "2": (1, 2)}
    rng = np.random.default_rng(0)
    with CacheWriter(path, attrs(3, 2, 8, identity={"test": "per-fold best"}), layout=LAYOUT) as w:
        for k in range(36):
            fold, label = str(k % 3), "ab"[(k // 3) % 2]
            enc, dec, tokens = random_states(rng, 8 + k % 5, 3, label=label, first_token=k)
            for i in layers[fold]:
                enc[i] += np.float16(2.0 if label == "a" else -2.0)
            w.add(row(k, label=label, fold=fold, speaker=f"s{fold}"), enc, dec, tokens)
    return path


def test_best_chooses_per_test_fold(tmp_path):
    """Each test fold's layer is the best on its own validation part (which holds other folds' test
    data: a mean over folds would choose with the test labels of the folds it is scored on); its
    test scores are that layer's. A derived run gives the same, and so does the fold alone."""
    cache = fold_signal_cache(tmp_path / "c.zarr")
    kw = {**TINY, "epochs": 3, "validation": "next-fold"}
    single = {f"enc{i}": train_on_cache(cache, tmp_path / f"single{i}", TrainConfig(
        fusion="single", layers=f"enc:{i}", **kw), progress=False) for i in range(3)}
    best = train_on_cache(cache, tmp_path / "best", TrainConfig(fusion="best", layers="enc:all", **kw), progress=False)
    chosen = best["best_layer_folds"]
    assert (chosen["0"], chosen["1"]) == ("enc2", "enc1") and best["best_layer"] == ", ".join(
        f"{f}:{layer}" for f, layer in chosen.items())
    for fold, layer in chosen.items():
        assert layer == max(single, key=lambda name: single[name]["folds"][fold]["val_uar"])
        assert _fold_scores(best)[fold] == _fold_scores(single[layer])[fold]
    assert best["uar"] == pytest.approx(np.mean([m["uar"] for m in best["folds"].values()]))
    assert best["confusion"] == np.sum([m["confusion"] for m in best["folds"].values()], axis=0).tolist()
    derived = derived_metrics(fusion_spec("best"), {f"key{i}": RunMetrics.from_dict(single[f"enc{i}"]) for i in range(3)})
    assert _without_timing(derived.metrics.to_dict()) == _without_timing(best)
    alone = train_on_cache(cache, tmp_path / "alone", TrainConfig(fusion="best", layers="enc:all", folds="0", **kw),
                           progress=False)
    assert alone["best_layer"] == "enc2" and alone["folds"]["0"] == best["folds"]["0"]
    assert "best layer by each test fold's validation UAR: fold 0: enc2" in format_metrics_table(best)


# --- derived runs in a grid -----------------------------------------------------------------------

def _grid(tmp_path, cache, **top) -> GridSpec:
    return parse_grid({"out": str(tmp_path / "out"), "caches": [str(cache)], "train": TINY, **top,
                       "subgrids": [{"fusions": ["single"], "layers": ["each:enc:all"]},
                                    {"fusions": ["best", "last", "mean"], "layers": ["enc:all"]},
                                    {"fusions": ["best", "last"], "layers": ["dec:all"]}]})


def test_expansion_derives_runs_whose_candidates_the_grid_trains(tmp_path, cache):
    runs = {(r.config.fusion, r.layers): r for r in expand(_grid(tmp_path, cache))}
    singles = [runs["single", f"enc:{i}"].key for i in range(3)]
    assert runs["best", "enc:all"].sources == tuple(singles)
    assert runs["last", "enc:all"].sources == (singles[2],)
    # mean trains a model of its own; the grid has no single runs on the decoder
    assert not any(runs[k].derived for k in [("mean", "enc:all"), ("best", "dec:all"), ("last", "dec:all")])
    assert "derived from 3 runs" in runs["best", "enc:all"].describe()
    assert "derived from 1 run" in runs["last", "enc:all"].describe()
    # the keys do not change: a derived run and a trained one are the same run
    assert {r.key for r in runs.values()} == {r.key for r in expand(_grid(tmp_path, cache), derive=False)}
    assert not any(r.derived for r in expand(_grid(tmp_path, cache), derive=False))
    assert not any(r.derived for r in expand(_grid(tmp_path, cache, derive=False)))
    with pytest.raises(GridSpecError, match="derive must be true or false"):
        expand(_grid(tmp_path, cache, derive="no"))


def _without_timing(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in ("seconds", "data")}


def test_grid_trains_only_the_single_runs_and_derives_best_and_last(tmp_path, cache, monkeypatch):
    from dask.distributed import Client, LocalCluster

    from pipeline.train import trainer

    trained: list[str] = []

    def counting(cache_path, out_dir, cfg, *args, **kwargs):
        trained.append(f"{cfg.fusion} {cfg.layers}")
        return train_on_cache(cache_path, out_dir, cfg, *args, **kwargs)

    monkeypatch.setattr(trainer, "train_on_cache", counting)
    s = parse_grid({"out": str(tmp_path / "out"), "caches": [str(cache)], "train": TINY,
                    "subgrids": [{"fusions": ["single"], "layers": ["each:enc:all"]},
                                 {"fusions": ["best", "last"], "layers": ["enc:all"]}]})
    runs = {r.config.fusion: r for r in expand(s) if r.derived}
    with LocalCluster(n_workers=1, processes=False, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        outcome = run_grid(expand(s), s.out, client=client, progress=False)
        assert sorted(trained) == ["single enc:0", "single enc:1", "single enc:2"]
        assert sorted(outcome.derived) == sorted(r.key for r in runs.values())
        assert (outcome.table["status"] == "done").all() and len(outcome.table) == 5
        again = run_grid(expand(s), s.out, client=client, progress=False)
        assert (again.ran, again.derived, len(trained)) == ([], [], 3)  # a finished grid: nothing new

    t = outcome.table.set_index("run_key")
    for fusion, run in runs.items():
        assert (run.run_dir / DONE).is_file() and json.loads((run.run_dir / DONE).read_text())["derived_from"]
        written = json.loads((run.run_dir / "metrics.json").read_text())
        direct = train_on_cache(cache, tmp_path / f"direct-{fusion}", run.config, progress=False)
        assert _without_timing(written) == _without_timing(direct)
        assert set(written["data"]["derived_from"].values()) == set(run.sources)
        row = t.loc[run.key]
        assert (row["uar"], row["macro_f1"], json.loads(row["confusion"])) == (
            direct["uar"], direct["macro_f1"], direct["confusion"])
        assert row["best_layer"] == direct.get("best_layer") or (pd.isna(row["best_layer"]) and fusion == "last")
        assert json.loads((run.run_dir / "config.json").read_text())["config"]["fusion"] == fusion

    # A derived run whose sources finished before this call is written without a cluster.
    (runs["best"].run_dir / DONE).unlink()
    monkeypatch.setattr(runner, "dask_client", None)  # calling it would fail the test
    third = run_grid(expand(s), s.out, progress=False)
    assert (third.ran, third.derived) == ([], [runs["best"].key]) and (third.table["status"] == "done").all()

    # A source trained again in place (same key, other scores: here its metrics edited as a rerun on a
    # GPU would leave them): `last` follows it; `best` too, or keeps the layer whose scores still win.
    enc2 = Path(t.loc[runs["last"].sources[0], "run_dir"])
    metrics = json.loads((enc2 / "metrics.json").read_text())
    for m in metrics["folds"].values():
        m["uar"], m["macro_f1"] = 0.0, 0.0
    metrics["uar"] = metrics["macro_f1"] = 0.0
    (enc2 / "metrics.json").write_text(json.dumps(metrics))
    assert runs["last"].key in {r.key for r in runner.stale_derived(expand(s))}
    spec_file = tmp_path / "grid.yaml"
    spec_file.write_text(yaml.safe_dump({"out": str(s.out), "caches": [str(cache)], "train": TINY, "subgrids": [
        {"fusions": ["single"], "layers": ["each:enc:all"]}, {"fusions": ["best", "last"], "layers": ["enc:all"]}]}))
    res = CliRunner().invoke(grid_command, [str(spec_file), "--dry-run"])
    stale = [line for line in res.output.splitlines() if line.startswith("stale")]
    assert res.exit_code == 0 and any("  last  " in line for line in stale), res.output
    fourth = run_grid(expand(s), s.out, progress=False)
    assert runs["last"].key in fourth.derived and fourth.ran == []
    assert fourth.table.set_index("run_key").loc[runs["last"].key, "uar"] == 0.0
    assert run_grid(expand(s), s.out, progress=False).derived == []  # in step again: nothing to derive
    # a run that was trained (done.json without derived_from: --no-derive, or before derivation) is
    # never redone, even where its sources now score otherwise (another device's rounding)
    done = json.loads((runs["last"].run_dir / DONE).read_text())
    (runs["last"].run_dir / DONE).write_text(json.dumps({k: v for k, v in done.items() if k != "derived_from"}))
    metrics["folds"]["0"]["uar"] = 0.5
    (enc2 / "metrics.json").write_text(json.dumps(metrics))
    assert run_grid(expand(s), s.out, progress=False).derived == []
    (runs["last"].run_dir / DONE).write_text(json.dumps(done))
    # a source gone (its run dir deleted): the derived run is not left standing on its scores
    import shutil

    shutil.rmtree(enc2)
    fifth = run_grid(expand(s), s.out, train=False, progress=False).table.set_index("run_key")
    assert fifth.loc[runs["last"].key, "status"] == "pending" and pd.isna(fifth.loc[runs["last"].key, "uar"])


def test_derived_run_of_failed_sources_fails_with_their_reason(tmp_path, tmp_path_factory):
    # training under next-fold needs 3 folds
    two_folds = make_cache(tmp_path_factory.mktemp("two") / "two.zarr", n_folds=2)
    s = parse_grid({"out": str(tmp_path / "out"), "caches": [str(two_folds)],
                    "train": {**TINY, "validation": "next-fold"},
                    "subgrids": [{"fusions": ["single"], "layers": ["each:enc:all"]},
                                 {"fusions": ["last"], "layers": ["enc:all"]}]})
    runs = expand(s)
    (last,) = [r for r in runs if r.derived]
    from dask.distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, processes=False, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        outcome = run_grid(runs, s.out, client=client, progress=False)
    row = outcome.table.set_index("run_key").loc[last.key]
    assert row["status"] == "failed" and outcome.derived == [last.key]
    assert "1 of the 1 runs it is derived from did not finish" in row["error"] and "at least 3 folds" in row["error"]
    assert not (last.run_dir / DONE).exists() and (last.run_dir / ERROR).is_file()


def test_cli_dry_run_shows_derived_runs(tmp_path, cache):
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"out": str(tmp_path / "out"), "caches": [str(cache)], "train": TINY,
                                    "subgrids": [{"fusions": ["single"], "layers": ["each:enc:all"]},
                                                 {"fusions": ["best", "last"], "layers": ["enc:all"]}]}))
    res = CliRunner().invoke(grid_command, [str(grid), "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "5 runs (3 trained, 2 derived from them)" in res.output
    assert "derived from 3 runs" in res.output and "derived from 1 run" in res.output
    res = CliRunner().invoke(grid_command, [str(grid), "--dry-run", "--no-derive"])
    assert res.exit_code == 0 and "derived from" not in res.output.split("\n", 1)[1]
    assert not (tmp_path / "out").exists()


def test_fusions_derived_from_one_layer_runs_share_their_model():
    from pipeline.train.fusion import FUSIONS
    from pipeline.train.fusion_specs import FUSION_SPECS

    derivable = {n: s.candidates_train_as for n, s in FUSION_SPECS.items() if s.candidates_train_as}
    assert derivable == {"last": "single", "best": "single"}
    assert all(FUSION_SPECS[source].one_layer and FUSIONS[n] is FUSIONS[source] for n, source in derivable.items())
