"""The report's learned layer weights: read from each run's own metrics.json (its run dir, or a
records folder when the table was moved), never from a metrics.json of another run."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from pipeline.cli.grid import grid_command
from pipeline.cli.report import report_command
from pipeline.report.layer_weights import summary, uniform
from tests.helpers import make_cache

TINY = {"epochs": 2, "hidden": 8, "batch_size": 4, "lr": 0.01}
LEARNED = {"weighted-sum", "l-adapter"}


@pytest.fixture(scope="module")
def grid(tmp_path_factory) -> dict[str, Path]:
    """A real grid: weighted-sum and l-adapter over the encoder blocks, weighted-sum over both
    stacks (one softmax per stack), and one single layer (no learned weights), with --records."""
    root = tmp_path_factory.mktemp("weights")
    cache = make_cache(root / "cache.zarr", signal=("encoder", 2))
    spec = root / "grid.yaml"
    spec.write_text(yaml.safe_dump({"out": str(root / "grid"), "caches": [str(cache)], "train": TINY,
                                    "subgrids": [{"fusions": ["weighted-sum", "l-adapter"], "layers": ["enc:blocks"],
                                                  "train": {"layer_weight_lr": 0.05}},
                                                 {"fusions": ["weighted-sum"], "layers": ["enc:blocks,dec:blocks"]},
                                                 {"fusions": ["single"], "layers": ["enc:2"]}]}))
    res = CliRunner().invoke(grid_command, [str(spec), "--workers", "1", "--quiet", "--records", str(root / "rec")])
    assert res.exit_code == 0, res.output
    return {"grid": root / "grid", "records": root / "rec", "root": root}


def _report(*args: str) -> str:
    res = CliRunner().invoke(report_command, list(args))
    assert res.exit_code == 0, res.output
    return res.output


def _results(grid) -> pd.DataFrame:
    return pd.read_csv(grid["grid"] / "results.csv", dtype={"run_key": str, "cache_identity": str})


def _metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def test_weights_of_each_run_and_fold_as_its_metrics_json_has_them(grid, tmp_path):
    _report(str(grid["grid"]), "--out", str(tmp_path))
    md = (tmp_path / "report.md").read_text()
    assert "## Learned layer weights" in md and "layer_weights_babble_0dB.png" in md and "Not shown" not in md
    assert (tmp_path / "layer_weights_babble_0dB.png").read_bytes()[:4] == b"\x89PNG"
    long = pd.read_csv(tmp_path / "layer_weights_babble_0dB.csv", dtype={"fold": str, "run_key": str})
    results = _results(grid)
    learned = results[results["fusion"].isin(LEARNED)]
    assert set(long["run_key"]) == set(learned["run_key"]) and len(learned) == 3  # `single` learns no weights
    for run in learned.itertuples():
        mine = long[long["run_key"] == run.run_key]
        for fold, fm in _metrics(Path(run.run_dir))["folds"].items():
            got = dict(zip(mine[mine["fold"] == fold]["layer"], mine[mine["fold"] == fold]["weight"]))
            assert got == pytest.approx(fm["layer_weights"])
            stacks = {layer.rstrip("0123456789") for layer in got}
            assert sum(got.values()) == pytest.approx(len(stacks) if run.fusion == "weighted-sum" else 1.0)
    # at layer_weight_lr 0.05 the l-adapter's weights left uniform; the table names what uniform is
    adapter = long[long["method"] == "l-adapter"]
    n = adapter["layer"].nunique()
    assert n >= 2 and adapter["weight"].max() > 1 / n + 1e-3 and f"| l-adapter | 3 | {1 / n:.3f} |" in md
    # the two-stack weighted sum has one softmax per stack: uniform is per stack
    assert re.search(r"\| enc\+dec \| weighted-sum \| 3 \| (enc [\d.]+, dec [\d.]+|[\d.]+ in each stack) \|", md)


def test_a_moved_table_needs_the_records_and_says_so(grid, tmp_path):
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.copy(grid["grid"] / "results.csv", moved / "results.csv")
    saved = grid["root"] / "runs_away"
    shutil.move(grid["grid"] / "runs", saved)  # the run dirs are gone (a scratch disk, another machine)
    try:
        _report(str(moved), "--out", str(tmp_path / "without"))
        md = (tmp_path / "without" / "report.md").read_text()
        assert "## Learned layer weights" in md and "_Skipped: no finished run of" in md
        assert "3 run(s) with no metrics.json found" in md and "--records DIR" in md
        assert not (tmp_path / "without" / "layer_weights_babble_0dB.csv").exists()
        _report(str(moved), "--out", str(tmp_path / "with"), "--records", str(grid["records"]))
        long = pd.read_csv(tmp_path / "with" / "layer_weights_babble_0dB.csv", dtype={"run_key": str})
        assert long["run_key"].nunique() == 3 and "Not shown" not in (tmp_path / "with" / "report.md").read_text()
    finally:
        shutil.move(saved, grid["grid"] / "runs")


def _tamper(metrics: dict, run_json: dict, what: str) -> None:
    fold = next(iter(metrics["folds"]))
    if what == "scores":
        metrics["folds"][fold]["uar"] = metrics["folds"][fold]["uar"] / 2 + 0.01
    elif what == "fusion":
        metrics["fusion"] = "scalar-mix"
    elif what == "seed":
        metrics["seed"] += 1
    elif what == "cache":
        metrics["cache_identity"] = "0" * 16
    elif what == "key":
        run_json["key"] = "f" * 16


@pytest.mark.parametrize("what", ["scores", "fusion", "seed", "cache", "key"])
def test_a_metrics_json_of_another_run_lends_no_weights(grid, tmp_path, what):
    """A run dir whose files are not the row's run (trained again after the table was written, or
    another run's dir) is refused, the run named; with --records the record is read instead."""
    table = tmp_path / "t"
    table.mkdir()
    results = _results(grid)
    ws = results[(results["fusion"] == "weighted-sum") & (results["layers"] == "enc:blocks")].iloc[0]
    fake = tmp_path / "fake_run"
    shutil.copytree(ws["run_dir"], fake)
    metrics, run_json = _metrics(fake), json.loads((fake / "run.json").read_text())
    _tamper(metrics, run_json, what)
    (fake / "metrics.json").write_text(json.dumps(metrics))
    (fake / "run.json").write_text(json.dumps(run_json))
    results.loc[results["run_key"] == ws["run_key"], "run_dir"] = str(fake)
    results.to_csv(table / "results.csv", index=False)
    _report(str(table), "--out", str(tmp_path / "r"))
    md = (tmp_path / "r" / "report.md").read_text()
    long = pd.read_csv(tmp_path / "r" / "layer_weights_babble_0dB.csv", dtype={"run_key": str})
    assert ws["run_key"] not in set(long["run_key"]) and long["run_key"].nunique() == 2
    assert "Not shown: 1 run(s) with the metrics.json found is another run's" in md and ws["run_key"] in md
    _report(str(table), "--out", str(tmp_path / "r2"), "--records", str(grid["records"]))
    long = pd.read_csv(tmp_path / "r2" / "layer_weights_babble_0dB.csv", dtype={"run_key": str})
    assert ws["run_key"] in set(long["run_key"])  # the refused run dir, then its record


def test_summary_counts_runs_and_folds_and_names_each_folds_largest():
    rows = [("k1", "0", {"enc1": 0.7, "enc2": 0.3}), ("k2", "0", {"enc1": 0.5, "enc2": 0.5}),
            ("k1", "10", {"enc1": 0.2, "enc2": 0.8}), ("k1", "2", {"enc1": 0.6, "enc2": 0.4})]
    long = pd.DataFrame([{"where": "clean", "stack": "enc", "method": "weighted-sum", "run_key": k, "seed": "0",
                          "fold": f, "layer": layer, "weight": w} for k, f, ws in rows for layer, w in ws.items()])
    s = summary(long).iloc[0]
    assert s["n"] == 4 and s["layers"] == ["enc1", "enc2"]
    assert s["mean"] == pytest.approx([0.5, 0.5])
    assert list(s["largest"].items()) == [("0", "enc1"), ("2", "enc1"), ("10", "enc2")]  # seeds averaged, "2" < "10"


def test_uniform_is_per_stack_where_each_stack_is_mixed_on_its_own():
    layers = ["enc1", "enc2", "dec1", "dec2"]
    assert uniform(layers, [0.25, 0.25, 0.25, 0.25]) == "0.250"  # one softmax over four
    assert uniform(layers, [0.7, 0.3, 0.4, 0.6]) == "0.500 in each stack"  # each stack sums to 1
    assert uniform(["enc1", "enc2", "dec1"], [0.5, 0.5, 1.0]) == "enc 0.500, dec 1.000"
