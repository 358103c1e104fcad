"""Table III from real baseline caches: the session's mel and eGeMAPS caches of EmoDB audio (skipped
without the data), trained 1 epoch with the paper's heads by nser-grid's runner, then nser-report."""

from __future__ import annotations

import pandas as pd

from pipeline.cache.reader import CacheReader
from pipeline.grid.runner import run_grid
from pipeline.grid.spec import expand, parse_grid
from pipeline.report.build import build_report


def test_baseline_rows_name_source_model_and_head(tmp_path, mel_cache, egemaps_cache):
    from dask.distributed import Client, LocalCluster

    spec = parse_grid({"out": str(tmp_path / "out"),
                       "train": {"epochs": 1, "hidden": 8, "batch_size": 4, "validation": "next-fold"},
                       "subgrids": [{"caches": [str(mel_cache)], "fusions": ["single"], "layers": ["enc:0"]},
                                    {"caches": [str(egemaps_cache)], "fusions": ["fc"], "layers": ["enc:all"]}]})
    with LocalCluster(n_workers=1, processes=False, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        outcome = run_grid(expand(spec), spec.out, client=client, progress=False)
    assert not outcome.failed, outcome.table["error"].tolist()
    t = outcome.table.set_index("cache")
    for cache in (mel_cache, egemaps_cache):  # the results' source is the one the cache records
        with CacheReader(cache) as r:
            assert t.loc[str(cache), "source"] == r.meta.model.source
    rep = build_report(spec.out)
    assert "sources" in rep.written
    rows = pd.read_csv(rep.path.parent / "sources.csv")[["source", "model", "method"]].drop_duplicates()
    # mel has one state: enc:0 is its whole stack, so the method carries no [selection]
    assert sorted(map(tuple, rows.values)) == [("mel", "mel", "single"),
                                               ("opensmile", "opensmile:eGeMAPSv02", "fc")]
