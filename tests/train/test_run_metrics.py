"""metrics.json as RunMetrics: the same JSON as the trainer wrote before the record existed.

data/metrics_best.json and data/metrics_weighted-sum.json were written by that trainer (1 epoch on
tests.helpers.make_cache): `best` has the layer choice, `weighted-sum` per-fold layer weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.grid.runner import run_row
from pipeline.grid.spec import expand, parse_grid
from pipeline.report.aggregate import class_names
from pipeline.train.run_metrics import FoldMetrics, LayerChoice, RunMetrics, choose_on_validation
from pipeline.train.trainer import train_on_cache
from tests.helpers import make_cache

DATA = Path(__file__).parent / "data"
WRITTEN_BEFORE = [DATA / "metrics_best.json", DATA / "metrics_weighted-sum.json"]


def shape(value):
    """The JSON's structure, key order included, without its numbers."""
    if isinstance(value, dict):
        return [(k, shape(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [shape(v) for v in value]
    return type(value).__name__


@pytest.mark.parametrize("path", WRITTEN_BEFORE, ids=lambda p: p.stem)
def test_metrics_written_before_read_back_field_for_field(path):
    text = path.read_text()
    record = RunMetrics.read(path)
    assert json.dumps(record.to_dict(), indent=2) == text
    assert RunMetrics.from_dict(record.to_dict()) == record
    assert record.classes == ["a", "b"] and set(record.folds) == {"0", "1", "2"}
    if record.fusion == "best":
        assert record.layer_choice.best_layer == "enc1" and set(record.layer_choice.layer_val_uar) == set(record.layers)
        assert all(m.layer_weights is None for m in record.folds.values())
    else:
        assert record.layer_choice is None and list(record.folds["0"].layer_weights) == ["enc0", "enc1", "enc2"]


def test_record_round_trip():
    fold = FoldMetrics(uar=0.5, macro_f1=0.4, confusion=[[1, 1], [0, 2]], n=4, best_epoch=2, val_uar=0.75,
                       n_train=10, n_val=3)
    record = RunMetrics(uar=0.5, uar_std=0.0, macro_f1=0.4, macro_f1_std=0.0, confusion=[[1, 1], [0, 2]],
                        folds={"s1": fold, "s2": FoldMetrics(**{**fold.to_dict(), "layer_weights": {"enc3": 1.0}})},
                        classes=["x", "y"], layers=["enc3"], fusion="best", epochs=3, seed=1, cache_identity="c",
                        seconds=2.5, left_out={"s2": 1}, warnings=["w"], data={"mode": "memory"},
                        layer_choice=LayerChoice("enc3", {"enc3": 0.75}, {"enc3": {"s1": 0.75, "s2": 0.75}}))
    as_json = json.loads(json.dumps(record.to_dict()))
    assert RunMetrics.from_dict(as_json) == record
    assert "layer_weights" not in as_json["folds"]["s1"] and as_json["folds"]["s2"]["layer_weights"] == {"enc3": 1.0}
    assert list(as_json)[8:12] == ["fusion", "best_layer", "layer_val_uar", "layer_val_uar_folds"]


def test_records_of_older_runs_and_other_json():
    older = json.loads(WRITTEN_BEFORE[1].read_text())
    for key in ("left_out", "warnings", "data"):  # added to metrics.json after its first version
        del older[key]
    record = RunMetrics.from_dict(older)
    assert (record.left_out, record.warnings, record.data) == ({}, [], {})
    for bad in ({"classes": ["a"]}, [1, 2], {**older, "extra": 1}):
        with pytest.raises(ValueError, match="not a metrics record"):
            RunMetrics.from_dict(bad)


def test_trainer_writes_what_the_grid_and_report_read(tmp_path):
    cache = make_cache(tmp_path / "c.zarr")
    (run,) = expand(parse_grid({"out": str(tmp_path / "grid"), "caches": [str(cache)], "fusions": ["best"],
                                "layers": ["enc:all,dec:all"], "train": {"epochs": 1, "batch_size": 4,
                                                                           "hidden": 4}}))
    returned = train_on_cache(cache, run.run_dir, run.config, progress=False)
    written = json.loads((run.run_dir / "metrics.json").read_text())
    assert written == returned
    validation = written.pop("validation")  # recorded since the files written before
    assert set(written.pop("best_layer_folds")) == set(written["folds"])  # `best` chooses per fold since
    assert shape(written) == shape(json.loads(WRITTEN_BEFORE[0].read_text()))
    (run.run_dir / "done.json").write_text("{}")
    row = run_row(run)
    assert row["status"] == "done" and row["best_layer"] == written["best_layer"]
    assert validation == row["validation"] == "speaker-carve"  # the default, paper, on a cv cache
    assert json.loads(row["fold_uar"]) == {f: m["uar"] for f, m in written["folds"].items()}
    assert class_names({"classes": None, "run_dir": str(run.run_dir)}, None, 2) == ["a", "b"]


def test_one_fold_chooses_as_the_mean_did():
    """On one test fold (a per-fold grid's runs) the per-fold choice is the choice by the mean over
    folds that runs made before, ties to the earlier candidate included; on several, each fold
    takes its own."""
    for vals in ([0.5, 0.75, 0.75], [0.9, 0.5, 0.9], [0.5, 0.5, 0.5], [0.25, 0.5, 0.75]):
        uar = {f"enc{i}": {"3": v} for i, v in enumerate(vals)}
        means = {name: sum(f.values()) / len(f) for name, f in uar.items()}
        choice = choose_on_validation(uar)
        assert choice.best_layer == max(means, key=means.__getitem__) == choice.best_layer_folds["3"]
    choice = choose_on_validation({"enc0": {"a": 0.9, "b": 0.5}, "enc1": {"a": 0.6, "b": 0.6}})
    assert choice.best_layer_folds == {"a": "enc0", "b": "enc1"} and choice.best_layer == "a:enc0, b:enc1"

