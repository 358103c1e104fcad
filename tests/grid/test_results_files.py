"""The results table's two files: written parquet first, and the report reads the one that is current."""

from __future__ import annotations

import os

import pandas as pd
import pytest

from pipeline.grid.runner import results_frame, write_results
from pipeline.report.aggregate import load_results, results_file
from pipeline.report.build import build_report
from tests.report.test_compare import MEAN, _row


def test_a_failed_parquet_write_leaves_the_old_pair(tmp_path, monkeypatch):
    write_results(results_frame([_row("mean", 0, MEAN[0])]), tmp_path)
    before = {p: p.read_bytes() for p in (tmp_path / "results.csv", tmp_path / "results.parquet")}

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", boom)
    with pytest.raises(OSError, match="disk full"):
        write_results(results_frame([_row("mean", 0, MEAN[0]), _row("mean", 1, MEAN[1])]), tmp_path)
    assert {p: p.read_bytes() for p in before} == before  # no new CSV beside the old parquet
    assert results_file(tmp_path) == (tmp_path / "results.parquet", "")


def test_a_csv_edited_after_the_grid_wrote_it_is_the_one_read(tmp_path):
    write_results(results_frame([_row("mean", s, MEAN[s]) for s in range(3)]), tmp_path)
    assert results_file(tmp_path)[0].name == "results.parquet"  # the grid's own pair: the parquet
    csv = tmp_path / "results.csv"
    pd.read_csv(csv).query("seed != 2").to_csv(csv, index=False)  # a hand edit: drop a bad run
    stamp = (tmp_path / "results.parquet").stat().st_mtime_ns + 1_000_000
    os.utime(csv, ns=(stamp, stamp))
    assert results_file(tmp_path)[0] == csv
    df, _ = load_results(tmp_path)
    assert sorted(df["seed"]) == [0, 1]
    text = build_report(tmp_path, tmp_path / "report").path.read_text()
    assert f"Source: `{csv}` (newer than the results.parquet beside it, which was not read)" in text
