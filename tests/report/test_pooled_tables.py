"""`nser-report A B`: the results tables of a grid finished in parts (one per test fold, tabled on
different machines) pooled into one report, each run once, and refused where one run has two results."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from pipeline.cli.report import report_command
from pipeline.grid.runner import results_frame, write_results
from pipeline.report.aggregate import ReportError, load_results, method_cells

UAR = {("mean", "0"): 0.60, ("mean", "1"): 0.70, ("l-adapter", "0"): 0.64, ("l-adapter", "1"): 0.80}


def _row(fusion, fold, status="done", uar=None):
    row = {"run_key": f"{fusion}-fold{fold}", "status": status, "corpus": "emodb", "condition": "babble_0dB",
           "model": "m", "fusion": fusion, "layers": "enc:blocks", "stack": "enc", "selection": "enc:blocks",
           "seed": 0, "folds": fold, "validation": "speaker-carve"}
    if status == "done":
        u = UAR[(fusion, fold)] if uar is None else uar
        row.update(uar=u, uar_std=0.0, macro_f1=u - 0.01, macro_f1_std=0.0, fold_uar=json.dumps({fold: u}),
                   fold_macro_f1=json.dumps({fold: u - 0.01}))
    return row


def _table(path, rows):
    write_results(results_frame(rows), path)
    return path


@pytest.fixture
def parts(tmp_path):
    # fold 0 tabled where fold 1 was still pending, and fold 1 tabled alone elsewhere
    first = _table(tmp_path / "fold0", [_row(f, "0") for f in ("mean", "l-adapter")]
                   + [_row(f, "1", status="pending") for f in ("mean", "l-adapter")])
    second = _table(tmp_path / "fold1", [_row(f, "1") for f in ("mean", "l-adapter")])
    return first, second


def test_parts_pool_into_one_cell_per_method_each_run_once(parts):
    df, base = load_results(*parts)
    assert base == parts[0] and len(df) == 4 and (df["status"] == "done").all()
    _, cells = method_cells(df)
    adapter = cells[("enc", "l-adapter")]["babble_0dB"]
    assert adapter.uar.n == 2 and adapter.uar.mean == pytest.approx(0.72)
    assert cells[("enc", "mean")]["babble_0dB"].uar.mean == pytest.approx(0.65)
    alone, _ = load_results(parts[0])  # one table: as before, fold 1 pending
    assert (alone["status"] == "pending").sum() == 2


def test_the_cli_reports_and_compares_pooled_parts(parts, tmp_path):
    res = CliRunner().invoke(report_command, [str(parts[0]), str(parts[1]), "--out", str(tmp_path / "rep")])
    assert res.exit_code == 0, res.output
    text = (tmp_path / "rep" / "report.md").read_text()
    assert f"`{parts[0] / 'results.parquet'}`, `{parts[1] / 'results.parquet'}`" in text
    assert "Runs: 4 (4 done, 0 failed, 0 pending)" in text
    res = CliRunner().invoke(report_command, [str(parts[0]), str(parts[1]), "--compare", "l-adapter", "mean"])
    assert res.exit_code == 0, res.output
    assert "n = 2 pairs" in res.output and "mean difference (A - B) = +7.00 points" in res.output


def test_one_run_with_two_results_is_refused(parts, tmp_path):
    other = _table(tmp_path / "again", [_row("mean", "1", uar=0.55)])
    with pytest.raises(ReportError, match="mean-fold1 is done with other scores"):
        load_results(*parts, other)
    res = CliRunner().invoke(report_command, [str(parts[1]), str(other), "--out", str(tmp_path / "rep")])
    assert res.exit_code == 1 and "one run cannot have two results" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "rep").exists()


def test_a_table_without_status_pools_as_done_and_is_checked_like_the_others(parts, tmp_path):
    """A hand-made table (no `status` column) is all done alone, and stays so pooled: its rows are
    neither dropped nor exempt from the one-run-one-result check."""
    handmade = tmp_path / "handmade.csv"
    rows = [{k: v for k, v in _row(f, "1").items() if k != "status"} for f in ("mean", "l-adapter")]
    results_frame(rows).drop(columns=["status"]).to_csv(handmade, index=False)
    df, _ = load_results(parts[0], handmade)
    assert len(df) == 4 and (df["status"] == "done").all()
    conflicting = tmp_path / "conflicting.csv"
    results_frame([{k: v for k, v in _row("mean", "1", uar=0.99).items() if k != "status"}]) \
        .drop(columns=["status"]).to_csv(conflicting, index=False)
    with pytest.raises(ReportError, match="mean-fold1 is done with other scores"):
        load_results(parts[1], conflicting)


def test_a_failed_row_outranks_a_pending_one_and_keeps_its_error(parts, tmp_path):
    failed = _row("mean", "1", status="failed")
    failed["error"] = "RuntimeError: out of memory"
    other = _table(tmp_path / "failed", [failed])
    df, _ = load_results(parts[0], other)
    row = df.set_index("run_key").loc["mean-fold1"]
    assert row["status"] == "failed" and row["error"] == "RuntimeError: out of memory"
