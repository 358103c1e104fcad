"""Run records (`nser-grid --records DIR`): a grid's finished runs kept apart from their run dirs,
taken back by a grid in another folder without training, and refused when they are not the record
of the run with their key."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from pipeline.cli.grid import grid_command
from pipeline.grid.records import RECORD_FILES
from pipeline.grid.spec import expand, load_grid
from tests.helpers import make_cache

TINY = {"epochs": 1, "hidden": 8, "batch_size": 4, "lr": 0.01}
SCORES = ["run_key", "status", "fusion", "layers", "uar", "macro_f1", "fold_uar", "confusion", "best_layer"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> dict[str, Path]:
    """One grid (two single runs and the `best` derived from them) trained once with --records."""
    root = tmp_path_factory.mktemp("records")
    cache = make_cache(root / "cache.zarr")
    grid = root / "grid.yaml"
    grid.write_text(yaml.safe_dump({"out": str(root / "first"), "caches": [str(cache)], "train": TINY,
                                    "subgrids": [{"fusions": ["single"], "layers": ["each:enc:blocks"]},
                                                 {"fusions": ["best"], "layers": ["enc:blocks"]}]}))
    res = CliRunner().invoke(grid_command, [str(grid), "--workers", "1", "--quiet", "--records", str(root / "rec")])
    assert res.exit_code == 0, res.output
    return {"grid": grid, "first": root / "first", "records": root / "rec"}


def _grid(finished, tmp_path, records: Path, *extra: str):
    return CliRunner().invoke(grid_command, [str(finished["grid"]), "--out", str(tmp_path / "again"), "--workers",
                                             "1", "--quiet", "--records", str(records), *extra])


def test_every_finished_run_leaves_a_record_without_checkpoints(finished):
    runs = expand(load_grid(finished["grid"]))
    assert len(runs) == 3 and sum(r.derived for r in runs) == 1
    for run in runs:
        rec = finished["records"] / run.key
        assert sorted(p.name for p in rec.iterdir()) == sorted(RECORD_FILES)
        assert (rec / "metrics.json").read_text() == (run.run_dir / "metrics.json").read_text()
    assert (runs[0].run_dir / "log.jsonl").is_file()  # the training log stays in the run dir


def test_a_grid_in_another_folder_takes_the_records_and_trains_nothing(finished, tmp_path):
    res = _grid(finished, tmp_path, finished["records"], "--dry-run")
    assert res.exit_code == 0 and res.output.count("record  ") == 2, res.output  # the derived one: derived
    assert "0 already finished, 2 more in" in res.output and not (tmp_path / "again").exists()
    assert "0 runs in 0 tasks" in res.output  # nothing to train
    res = _grid(finished, tmp_path, finished["records"])
    assert res.exit_code == 0, res.output
    # the two trained runs from their records; `best` derived here again from them
    assert "3 runs: 3 done (2 finished before, 2 of them from records, 1 now)" in res.output
    first = pd.read_csv(finished["first"] / "results.csv")[SCORES]
    again = pd.read_csv(tmp_path / "again" / "results.csv")[SCORES]
    pd.testing.assert_frame_equal(first, again)
    assert not list((tmp_path / "again").rglob("log.jsonl"))  # nothing trained here


def test_a_record_of_another_run_or_an_incomplete_one_is_refused(finished, tmp_path):
    runs = {r.layers: r for r in expand(load_grid(finished["grid"]))}
    enc1, enc2 = runs["enc:1"].key, runs["enc:2"].key
    wrong = tmp_path / "wrong"
    shutil.copytree(finished["records"], wrong)
    shutil.rmtree(wrong / enc2)
    shutil.copytree(wrong / enc1, wrong / enc2)  # enc:1's record filed under enc:2's key
    res = _grid(finished, tmp_path, wrong)
    assert res.exit_code == 1 and "is not the record of run" in res.output and "Traceback" not in res.output
    assert "key" in res.output and "result settings" in res.output
    assert not (tmp_path / "again" / "runs" / enc2 / "done.json").exists()

    shutil.rmtree(wrong / enc2)
    shutil.copytree(finished["records"] / enc2, wrong / enc2)
    shutil.copy(wrong / enc1 / "metrics.json", wrong / enc2 / "metrics.json")  # another run's scores
    res = _grid(finished, tmp_path, wrong)
    assert res.exit_code == 1 and "metrics.json layers" in res.output and "metrics.json scores" in res.output
    assert not (tmp_path / "again" / "runs" / enc2 / "done.json").exists()

    (wrong / enc2 / "metrics.json").unlink()  # done.json without the scores
    res = _grid(finished, tmp_path, wrong)
    assert res.exit_code == 1 and "is incomplete: metrics.json" in res.output
    assert not (tmp_path / "again" / "runs" / enc2 / "done.json").exists()


def test_a_derived_run_is_derived_from_the_sources_here_not_taken_from_its_record(finished, tmp_path):
    """A `best` record from sources that trained elsewhere (here: edited to a score no source has)
    is not taken: the grid derives `best` from the source runs it has, and reports the disagreement."""
    best = next(r for r in expand(load_grid(finished["grid"])) if r.derived)
    records = tmp_path / "rec"
    shutil.copytree(finished["records"], records)
    for name in ("metrics.json", "done.json"):  # a consistent record, so only its provenance is wrong
        data = json.loads((records / best.key / name).read_text())
        data["uar"] = 0.99
        (records / best.key / name).write_text(json.dumps(data))
    res = _grid(finished, tmp_path, records)
    assert res.exit_code == 0, res.output
    assert f"warning: the record of run {best.key}" in res.output and "other scores" in res.output
    table = pd.read_csv(tmp_path / "again" / "results.csv").set_index("run_key")
    first = pd.read_csv(finished["first"] / "results.csv").set_index("run_key")
    assert table.loc[best.key, "uar"] == first.loc[best.key, "uar"] != 0.99


def test_a_record_that_disagrees_with_the_run_dir_is_kept_and_reported(finished, tmp_path):
    key = expand(load_grid(finished["grid"]))[0].key
    records = tmp_path / "rec"
    shutil.copytree(finished["records"], records)
    metrics = json.loads((records / key / "metrics.json").read_text())
    metrics["uar"] = 0.01
    edited = json.dumps(metrics)
    (records / key / "metrics.json").write_text(edited)
    res = CliRunner().invoke(grid_command, [str(finished["grid"]), "--collect", "--quiet", "--records", str(records)])
    assert res.exit_code == 0, res.output
    assert f"warning: the record of run {key}" in res.output and "other scores" in res.output
    assert (records / key / "metrics.json").read_text() == edited  # written once, never overwritten


def test_timing_alone_is_no_disagreement_and_a_broken_record_does_not_stop_the_table(finished, tmp_path):
    runs = expand(load_grid(finished["grid"]))
    records = tmp_path / "rec"
    shutil.copytree(finished["records"], records)
    metrics = json.loads((records / runs[0].key / "metrics.json").read_text())
    metrics["seconds"] += 12.5  # the same run trained again, as fast or slow as it was
    (records / runs[0].key / "metrics.json").write_text(json.dumps(metrics))
    (records / runs[1].key / "metrics.json").unlink()  # a record half deleted (or half synced)
    (finished["first"] / "results.csv").unlink()
    res = CliRunner().invoke(grid_command, [str(finished["grid"]), "--collect", "--quiet", "--records", str(records)])
    assert res.exit_code == 0, res.output
    assert f"record of run {runs[0].key}" not in res.output
    assert f"warning: the record of run {runs[1].key} in {records} is unreadable" in res.output
    assert (pd.read_csv(finished["first"] / "results.csv")["status"] == "done").all()
