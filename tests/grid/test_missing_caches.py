"""A grid whose caches are not all built: every missing one named in one refusal, or, with
`missing_caches: skip`, the other caches' runs expanded and the missing ones named in a warning."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.grid.spec import GridSpecError, MissingCacheWarning, expand, parse_grid
from tests.helpers import make_cache


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return make_cache(tmp_path_factory.mktemp("missing") / "c.zarr", n=6)


def _spec(tmp_path, cache, **extra):
    return parse_grid({"out": str(tmp_path / "out"), "fusions": ["mean"], "layers": ["enc:all"], **extra,
                       "subgrids": [{"caches": [str(cache), str(tmp_path / "ssl.zarr")]},
                                    {"caches": [str(tmp_path / "bert_*.zarr")]}]})


def test_every_missing_cache_is_named_in_one_refusal(tmp_path, cache):
    with pytest.raises(GridSpecError, match=r"2 missing cache\(s\)") as err:
        expand(_spec(tmp_path, cache))
    assert f"no cache at {tmp_path / 'ssl.zarr'}" in str(err.value)
    assert "bert_*.zarr' matches nothing" in str(err.value) and "missing_caches: skip" in str(err.value)
    assert not (tmp_path / "out").exists()


def test_skip_runs_the_rest_and_warns(tmp_path, cache):
    with pytest.warns(MissingCacheWarning, match=r"skipping the runs of 2 missing") as record:
        runs = expand(_spec(tmp_path, cache, missing_caches="skip"))
    assert [r.cache for r in runs] == [str(cache)]
    assert str(tmp_path / "ssl.zarr") in str(record[0].message)


def test_missing_caches_takes_refuse_or_skip(tmp_path, cache):
    with pytest.raises(GridSpecError, match=r"missing_caches must be one of \['refuse', 'skip'\], got 'ignore'"):
        _spec(tmp_path, cache, missing_caches="ignore")


def test_the_paper_specs_parse_and_skip_what_is_not_built(tmp_path, monkeypatch):
    from pathlib import Path

    from pipeline.grid.spec import load_grid

    repo = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(tmp_path)  # cache paths are relative to the working directory: none exist here
    for name, n_sub in (("paper.yaml", 9), ("casia_crosslingual.yaml", 3)):
        spec = load_grid(repo / "grids" / name, out=tmp_path / "out")
        assert spec.missing_caches == "skip" and len(spec.subgrids) == n_sub
        with pytest.warns(MissingCacheWarning):  # no caches here: every run left out, none refused
            assert expand(spec) == []


def test_the_cli_reports_skipped_caches_as_one_clean_notice(tmp_path, cache):
    """Through the real nser-grid (a fresh process: pytest would catch the warning before it printed):
    the message, without Python's `file:line: MissingCacheWarning` header and source line."""
    repo = Path(__file__).resolve().parents[2]
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"out": str(tmp_path / "out"), "fusions": ["mean"], "layers": ["enc:all"],
                                    "missing_caches": "skip",
                                    "subgrids": [{"caches": [str(cache), str(tmp_path / "ssl.zarr")]}]}))
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "grid", str(grid), "--dry-run"], cwd=repo,
                          env={**os.environ, "PYTHONPATH": str(repo)}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (f"warning: {grid}: skipping the runs of 1 missing cache(s) (missing_caches: skip):\n"
            f"  no cache at {tmp_path / 'ssl.zarr'}\n") in proc.stderr
    assert "MissingCacheWarning" not in proc.stderr and "warnings.warn" not in proc.stderr
    assert "spec.py" not in proc.stderr
