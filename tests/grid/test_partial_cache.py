"""A run trained on an unfinished cache (allow_missing) is another run than the one on the finished
cache: its own key (the cache's identity hash stays as the extraction appends to it), and
metrics.json counts the entries never extracted."""

from __future__ import annotations

import json
from pathlib import Path

import zarr

from pipeline.cache.reader import CacheReader
from pipeline.cache.schema import ATTR_KEY
from pipeline.grid.runner import execute_run, is_done, run_row
from pipeline.grid.spec import expand, parse_grid, run_key
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
