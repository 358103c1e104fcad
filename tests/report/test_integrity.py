"""nser-report never pools what is not one setting, never counts a fold twice, never shows the
test-set oracle as the paper's "Best", and says where a cell pools fewer scores than its runs are
meant to give: each on a real grid (tiny real caches, 1-epoch runs, the grid's own results table)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from pipeline.cli.report import report_command
from pipeline.grid.runner import execute_run, run_grid
from pipeline.grid.spec import expand, parse_grid
from pipeline.report import aggregate as agg
from tests.helpers import make_cache

TINY = {"epochs": 1, "hidden": 8, "batch_size": 4, "lr": 0.01}


@pytest.fixture(scope="module")
def caches(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("integrity")
    return {"c1": make_cache(root / "c1.zarr"),
            "c2": make_cache(root / "c2.zarr", seed=1),  # babble_0dB too: another extraction
            "c5": make_cache(root / "c5.zarr", condition="babble_5dB", snr_db=5.0, seed=2)}


def _grid(out: Path, spec: dict, skip=lambda run: False) -> Path:
    """Train the grid's runs (all but `skip`) as a worker does, then collect its table as --collect does."""
    grid = parse_grid({"out": str(out), "train": TINY, **spec})
    runs = expand(grid)
    for run in runs:
        if not run.derived and not skip(run):
            assert execute_run(run)["status"] == "done"
    run_grid(runs, grid.out, train=False, progress=False)
    return grid.out


def _report(source: Path, out: Path, *args: str):
    return CliRunner().invoke(report_command, [str(source), "--out", str(out), *args])


def test_cells_of_other_selections_settings_or_caches_are_not_pooled(caches, tmp_path):
    out = _grid(tmp_path / "g", {"subgrids": [
        {"caches": [str(caches["c1"])], "fusions": ["mean"], "layers": ["enc:all", "enc:blocks"]},
        {"caches": [str(caches["c1"])], "fusions": ["mean"], "layers": ["enc:blocks"], "train": {"lr": 0.0001}},
        {"caches": [str(caches["c1"]), str(caches["c2"])], "fusions": ["attention"], "layers": ["enc:blocks"]}]})
    res = _report(out, tmp_path / "rep")
    assert res.exit_code == 0, res.output
    table = pd.read_csv(out / "results.csv", dtype={"cache_identity": str})
    idents = sorted(table.loc[table["fusion"] == "attention", "cache_identity"].str[:8])
    fc = pd.read_csv(tmp_path / "rep" / "fusion_comparison.csv")
    uar = fc[fc["metric"] == "uar"].set_index(["method", "where"])
    # the condition's two caches (extractions) are two columns: never one cell, nor one column of cells
    c1 = f"babble_0dB [cache {table.loc[table['cache'] == str(caches['c1']), 'cache_identity'].iloc[0][:8]}]"
    assert sorted(uar.index) == sorted([(m, c1) for m in ("mean [enc:all, lr=0.01]", "mean [enc:blocks, lr=0.01]",
                                                          "mean [enc:blocks, lr=0.0001]")]
                                       + [("attention", f"babble_0dB [cache {i}]") for i in idents])
    assert (uar["n"] == 3).all()  # one run of 3 folds each, none pooled with another
    lr = table["settings"].map(lambda v: json.loads(v)["lr"])
    runs = {(f"{f} [{layers}, lr={r}]", c1): (table["fusion"] == f) & (table["layers"] == layers) & (lr == r)
            for f, layers, r in (("mean", "enc:all", 0.01), ("mean", "enc:blocks", 0.01), ("mean", "enc:blocks", 0.0001))}
    runs.update({("attention", f"babble_0dB [cache {i}]"): (table["fusion"] == "attention")
                 & (table["cache_identity"].str[:8] == i) for i in idents})
    for cell, hit in runs.items():  # each cell is its one run
        assert hit.sum() == 1 and uar.loc[cell, "mean"] == pytest.approx(table.loc[hit, "uar"].iloc[0]), cell
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "[n=" not in md and "no `settings_key`" not in md
    # a table written before settings_key: the selections are still told apart; the lr runs cannot
    # be, and as they score the same seed and folds their cell is refused
    old = table.drop(columns=["settings_key", "settings"])
    old.to_csv(tmp_path / "old.csv", index=False)
    res = _report(tmp_path / "old.csv", tmp_path / "old")
    assert res.exit_code == 1 and f"mean [enc:blocks] on {c1}: two runs score seed 0" in res.output
    old[lr != 0.0001].to_csv(tmp_path / "old.csv", index=False)
    res = _report(tmp_path / "old.csv", tmp_path / "old")
    assert res.exit_code == 0, res.output
    cells = pd.read_csv(tmp_path / "old" / "fusion_comparison.csv")
    cells = cells[cells["metric"] == "uar"].set_index("method")["n"].to_dict()
    assert cells["mean [enc:all]"] == cells["mean [enc:blocks]"] == 3
    assert "no `settings_key`" in (tmp_path / "old" / "report.md").read_text()


def test_a_fold_scored_twice_in_one_cell_is_refused(caches, tmp_path):
    """The same run per fold (per_fold) and on all folds: fold 0 would count twice."""
    out = _grid(tmp_path / "g", {"caches": [str(caches["c1"])], "fusions": ["mean"], "layers": ["enc:blocks"],
                                 "subgrids": [{"per_fold": True, "folds": ["0"]}, {}]})
    res = _report(out, tmp_path / "rep")
    assert res.exit_code == 1
    assert "mean on babble_0dB: two runs score seed 0, test fold 0" in res.output, res.output


def test_paper_best_row_is_the_validation_choice_whatever_is_pending(caches, tmp_path):
    """`best` derived from the layer sweep, one `attention` run pending: Table IV's Best row is `best`
    (chosen on validation), never the sweep's test-set oracle, and the Mean row stays."""
    out = _grid(tmp_path / "g", {"caches": [str(caches["c1"])], "subgrids": [
        {"fusions": ["single"], "layers": ["each:enc:all"]},
        {"fusions": ["best", "mean", "attention"], "layers": ["enc:all"]}]},
                skip=lambda run: run.config.fusion == "attention")
    assert set(pd.read_csv(out / "results.csv")["status"]) == {"done", "pending"}
    res = _report(out, tmp_path / "rep")
    assert res.exit_code == 0, res.output
    iv = pd.read_csv(tmp_path / "rep" / "paper_table_iv.csv")
    methods = iv.groupby("row_id")["method"].first().to_dict()
    assert methods["enc-best"] == "enc best" and methods["enc-mean"] == "enc mean"
    assert not iv["method"].str.contains("†").any()
    # pending runs record no validation protocol: they do not relabel the finished ones
    fc = pd.read_csv(tmp_path / "rep" / "fusion_comparison.csv")
    assert {"best", "mean"} <= set(fc["method"])


@pytest.fixture(scope="module")
def partial(caches, tmp_path_factory) -> Path:
    """A per_fold grid finished in parts: layer enc:2 and the 5 dB cache have fold 0 only so far."""
    out = tmp_path_factory.mktemp("partial") / "g"
    return _grid(out, {"per_fold": True, "subgrids": [
        {"caches": [str(caches["c1"])], "fusions": ["single"], "layers": ["each:enc:all"]},
        {"caches": [str(caches["c1"]), str(caches["c5"])], "fusions": ["mean"], "layers": ["enc:blocks"]}]},
                 skip=lambda run: (run.layers == "enc:2" or run.condition == "babble_5dB") and run.config.folds != "0")


def test_partly_finished_cells_are_marked_in_every_table(partial, tmp_path):
    res = _report(partial, tmp_path / "rep")
    assert res.exit_code == 0, res.output
    md = (tmp_path / "rep" / "report.md").read_text()

    def section(head: str) -> str:
        return md.split(head)[1].split("\n## ")[0]

    def line(text: str, start: str) -> str:
        return next(ln for ln in text.splitlines() if ln.startswith(start))

    note = "**Cells pool different numbers of scores** (runs x folds, 1 to 3)"
    layers = section("## Layer-wise performance")
    assert line(layers, "| 2 |").count("[n=1]") == 2 and "[n=" not in line(layers, "| 1 |") and note in layers
    fusions = section("## Fusion comparison")
    last, best = line(fusions, "| enc | single, last"), line(fusions, "| enc | single, best†")
    assert "(enc2)" in last and "[n=1]" in last
    assert "enc2" not in best and "[n=" not in best  # ranked among the layers with all their folds
    snr = section("## SNR robustness")
    # columns: single, last (enc2: 1 fold); single, best†; mean (0 dB: 3 folds, 5 dB: 1)
    assert "[n=1]" in line(snr, "| 5 dB").split(" | ")[-1]
    zero = line(snr, "| 0 dB").split(" | ")
    assert "[n=1] (enc2)" in zero[1] and "[n=" not in zero[2] + zero[3] and note in snr
    paper = section("## Paper Table IV layout")
    assert "[n=1]" in line(paper, "|  | Mean |") and note in paper


def test_best_confusion_is_a_whole_cell_not_its_luckiest_fold(partial):
    df, _ = agg.load_results(partial)
    best = agg.best_cells(df)["babble_0dB"]
    assert best.uar.n == 3 and len(best.runs) == 3  # the per-fold runs of one method, all three folds
    assert best.confusion.sum() == 18  # every utterance of the cache tested once
    whole = [c for c in ("single [enc:0]", "single [enc:1]", "mean") if c == best.method]
    assert whole, best.method  # never the 1-fold enc:2 cell
