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
