"""The report's learned layer weights: read from each run's own metrics.json (its run dir, or a
records folder when the table was moved), never from a metrics.json of another run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from pipeline.cli.grid import grid_command
from pipeline.cli.report import report_command
from pipeline.report.layer_weights import uniform
from tests.helpers import make_cache

TINY = {"epochs": 2, "hidden": 8, "batch_size": 4, "lr": 0.01}


@pytest.fixture(scope="module")
def grid(tmp_path_factory) -> dict[str, Path]:
    """A real grid: weighted-sum and l-adapter over the encoder blocks, and one single layer (no
    learned weights), trained with --records."""
    root = tmp_path_factory.mktemp("weights")
    cache = make_cache(root / "cache.zarr", signal=("encoder", 2))
    spec = root / "grid.yaml"
    spec.write_text(yaml.safe_dump({"out": str(root / "grid"), "caches": [str(cache)], "train": TINY,
                                    "subgrids": [{"fusions": ["weighted-sum", "l-adapter"], "layers": ["enc:blocks"],
                                                  "train": {"layer_weight_lr": 0.05}},
                                                 {"fusions": ["single"], "layers": ["enc:2"]}]}))
    res = CliRunner().invoke(grid_command, [str(spec), "--workers", "1", "--quiet", "--records", str(root / "rec")])
    assert res.exit_code == 0, res.output
    return {"grid": root / "grid", "records": root / "rec", "root": root}


def _report(*args: str) -> str:
    res = CliRunner().invoke(report_command, list(args))
    assert res.exit_code == 0, res.output
    return res.output


def _metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def test_weights_of_each_run_and_fold_as_its_metrics_json_has_them(grid, tmp_path):
    _report(str(grid["grid"]), "--out", str(tmp_path))
    md = (tmp_path / "report.md").read_text()
    assert "## Learned layer weights" in md and "layer_weights_babble_0dB.png" in md
    assert (tmp_path / "layer_weights_babble_0dB.png").stat().st_size > 0
    long = pd.read_csv(tmp_path / "layer_weights_babble_0dB.csv", dtype={"fold": str})
    assert set(long["method"]) == {"weighted-sum", "l-adapter"}  # `single` learns no weights
    results = pd.read_csv(grid["grid"] / "results.csv", dtype={"run_key": str})
    for run in results[results["fusion"].isin(["weighted-sum", "l-adapter"])].itertuples():
        mine = long[long["run_key"] == run.run_key]
        for fold, fm in _metrics(Path(run.run_dir))["folds"].items():
            got = dict(zip(mine[mine["fold"] == fold]["layer"], mine[mine["fold"] == fold]["weight"]))
            assert got == pytest.approx(fm["layer_weights"]) and sum(got.values()) == pytest.approx(1.0)
    # the weights left uniform (layer_weight_lr), and the table names what uniform is
    n = long["layer"].nunique()
    assert n >= 2 and long["weight"].max() > 1 / n + 1e-3 and f"| {1 / n:.3f} |" in md


def test_a_moved_table_needs_the_records_and_says_so(grid, tmp_path):
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.copy(grid["grid"] / "results.csv", moved / "results.csv")
    saved = grid["root"] / "runs_away"
    shutil.move(grid["grid"] / "runs", saved)  # the run dirs are gone (a scratch disk, another machine)
    try:
        _report(str(moved), "--out", str(tmp_path / "without"))
        md = (tmp_path / "without" / "report.md").read_text()
        assert "## Learned layer weights" in md and "_Skipped: the metrics.json of none of the 2 finished" in md
        assert "--records" in md and not (tmp_path / "without" / "layer_weights_babble_0dB.csv").exists()
        _report(str(moved), "--out", str(tmp_path / "with"), "--records", str(grid["records"]))
        long = pd.read_csv(tmp_path / "with" / "layer_weights_babble_0dB.csv")
        assert set(long["method"]) == {"weighted-sum", "l-adapter"} and "Not shown" not in (tmp_path / "with" / "report.md").read_text()
    finally:
        shutil.move(saved, grid["grid"] / "runs")


def test_a_metrics_json_of_another_run_lends_no_weights(grid, tmp_path):
    """A run dir holding another training's metrics.json (same key, other scores: trained again
    after the table was written) is not this run's: its weights are left out and the run named."""
    table = tmp_path / "t"
    table.mkdir()
    results = pd.read_csv(grid["grid"] / "results.csv", dtype={"run_key": str})
    ws = results[results["fusion"] == "weighted-sum"].iloc[0]
    fake = tmp_path / "fake_run"
    fake.mkdir()
    metrics = _metrics(Path(ws["run_dir"]))
    fold = next(iter(metrics["folds"]))
    metrics["folds"][fold]["uar"] = metrics["folds"][fold]["uar"] / 2 + 0.01
    (fake / "metrics.json").write_text(json.dumps(metrics))
    results.loc[results["run_key"] == ws["run_key"], "run_dir"] = str(fake)
    results.to_csv(table / "results.csv", index=False)
    _report(str(table), "--out", str(tmp_path / "r"))
    md = (tmp_path / "r" / "report.md").read_text()
    long = pd.read_csv(tmp_path / "r" / "layer_weights_babble_0dB.csv")
    assert set(long["method"]) == {"l-adapter"}
    assert "Not shown: 1 finished run(s) whose own metrics.json was not found" in md and ws["run_key"] in md


def test_uniform_is_per_stack_where_each_stack_is_mixed_on_its_own():
    layers = ["enc1", "enc2", "dec1", "dec2"]
    assert uniform(layers, [0.25, 0.25, 0.25, 0.25]) == "0.250"  # one softmax over four
    assert uniform(layers, [0.7, 0.3, 0.4, 0.6]) == "0.500 in each stack"  # each stack sums to 1
    assert uniform(["enc1", "enc2", "dec1"], [0.5, 0.5, 1.0]) == "enc 0.500, dec 1.000"
