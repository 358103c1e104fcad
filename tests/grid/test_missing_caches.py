"""A grid whose caches are not all built: every missing one named in one refusal, or, with
`missing_caches: skip`, the other caches' runs expanded and the missing ones named in a warning."""

from __future__ import annotations

import pytest

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
