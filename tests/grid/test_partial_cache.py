"""A run trained on an unfinished cache (allow_missing) is another run than the one on the finished
cache: its own key (the cache's identity hash stays as the extraction appends to it), and
metrics.json counts the entries never extracted."""

from __future__ import annotations

import json
from pathlib import Path

import zarr

from pipeline.cache.reader import CacheReader
from pipeline.cache.schema import ATTR_KEY
from pipeline.grid.runner import execute_run, is_done, run_grid, run_row
from pipeline.grid.spec import expand, parse_grid, run_key
from pipeline.report.aggregate import layerwise, load_results, method_cells
from pipeline.train.run_metrics import NOT_EXTRACTED
from tests.helpers import row, write_cache

TINY = {"epochs": 1, "hidden": 8, "batch_size": 4, "lr": 0.01}
N = 18


def extract(path: Path, n: int) -> Path:
    """Utterances 0..n-1 of an N-entry manifest, as an extraction stopped after n (a rerun appends)."""
    write_cache(path, n, rows=lambda k: row(k, speaker=f"s{k // 2 % 3}", fold=str(k // 2 % 3), transcript="t",
                                            hypothesis="h"),
                lengths=lambda rng, k: (6 + k % 5, 3), identity={"fake": "partial"})
    g = zarr.open_group(str(path), mode="r+")
    g.attrs[ATTR_KEY] = dict(g.attrs[ATTR_KEY], n_manifest=N)
    return path


def test_allow_missing_run_on_an_unfinished_cache_has_its_own_key(tmp_path):
    cache = extract(tmp_path / "c.zarr", 12)
    grid = {"out": str(tmp_path / "out"), "caches": [str(cache)], "fusions": ["mean"], "layers": ["enc:blocks"]}
    (partial,) = expand(parse_grid({**grid, "train": {**TINY, "allow_missing": True}}))
    with CacheReader(cache) as reader:
        assert reader.complete is False and reader.n_unextracted == 6
        identity = reader.identity_hash
    assert partial.key != run_key(partial.config, identity)  # not the full cache's key
    assert execute_run(partial)["status"] == "done"
    metrics = json.loads((partial.run_dir / "metrics.json").read_text())
    assert metrics["left_out"] == {NOT_EXTRACTED: 6}
    assert json.loads((partial.run_dir / "config.json").read_text())["cache"]["n_utterances"] == 12

    extract(cache, N)  # the extraction finished: same identity, 18 utterances
    (full,) = expand(parse_grid({**grid, "train": TINY}))
    with CacheReader(cache) as reader:
        assert reader.complete is True and reader.identity_hash == identity and reader.partial_hash is None
    # the complete cache keeps the key runs always had, and the partial run is not taken for it
    assert full.key == run_key(full.config, identity) != partial.key and not is_done(full)
    # nor pooled with it in a report cell: its setting differs by the utterances it held
    assert run_row(full)["settings_key"] != run_row(partial)["settings_key"]


def _trained_grid(out: Path, spec: dict) -> Path:
    grid = parse_grid({"out": str(out), **spec})
    runs = expand(grid)
    for run in runs:
        assert execute_run(run)["status"] == "done"
    run_grid(runs, grid.out, train=False, progress=False)
    return grid.out


def test_report_keeps_an_unfinished_caches_runs_apart(tmp_path):
    """A layer sweep on the unfinished cache (seed 0) and on the finished one (seed 1) pooled into
    one report: other data, so two curves and two columns (each of its own 3 folds), never one
    curve pooling 6 scores of two datasets as if seeds of one."""
    cache = extract(tmp_path / "c.zarr", 12)
    spec = {"caches": [str(cache)], "fusions": ["single"], "layers": ["each:enc:blocks"]}
    part = _trained_grid(tmp_path / "part", {**spec, "train": {**TINY, "allow_missing": True}})
    extract(cache, N)
    full = _trained_grid(tmp_path / "full", {**spec, "seeds": [1], "train": TINY})
    df, _ = load_results(part, full)
    hashes = dict(zip(df["seed"], df["partial"]))
    assert hashes[1] == "" and len(hashes[0]) > 8
    identity = df["cache_identity"].iloc[0][:8]
    condition = df["condition"].iloc[0]
    curves = layerwise(df)
    assert sorted(curves) == sorted([f"{condition} [cache {identity}]",
                                     f"{condition} [cache {identity}, partial {hashes[0][:8]}]"])
    assert all((c["n"] == 3).all() for c in curves.values())
    _, cells = method_cells(df)
    assert {w: c.uar.n for w, c in cells[("enc", "single, last")].items()} == {w: 3 for w in curves}
