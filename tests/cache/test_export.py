"""`nser cache export`: HDF5 and .npy round trips against the cache's own values."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from pipeline.cache.export import export_cache
from pipeline.cache.reader import CacheReader
from pipeline.errors import CacheError
from tests.helpers import write_cache


@pytest.fixture
def cache(tmp_path):
    path = tmp_path / "c.zarr"
    write_cache(path, 25)  # utterances of 10..178 frames: blocks of whole utterances span shard edges
    return path


def test_hdf5_round_trip(cache, tmp_path):
    r = CacheReader(cache)
    out = export_cache(cache, tmp_path / "x.h5", fmt="hdf5", layers="enc:0,2,dec:all")
    sel = r.selection("enc:0,2,dec:all")
    with h5py.File(out, "r") as f:
        meta = json.loads(f.attrs["nser_export"])
        assert meta["layers"] == ["enc0", "enc2", "dec0", "dec1"] and meta["identity_hash"] == r.identity_hash
        assert "enc1" not in f
        assert [s.decode() for s in f["utterances/utt_id"][:]] == list(r.table["utt_id"])
        np.testing.assert_array_equal(f["utterances/n_frames"][:], r.table["n_frames"])
        for k, utt in enumerate(r.table["utt_id"]):
            for name, expected in zip(sel.names, r.read_states(k, sel)):
                got = f[name][utt][:]
                assert got.dtype == np.float16
                np.testing.assert_array_equal(got, expected)


def test_npy_round_trip_mean_pooled(cache, tmp_path):
    r = CacheReader(cache)
    out = export_cache(cache, tmp_path / "npy", fmt="npy", layers="enc:1,dec:1", pool="mean")
    sel = r.selection("enc:1,dec:1")
    with (out / "index.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [row["utt_id"] for row in rows] == list(r.table["utt_id"])
    assert [row["label"] for row in rows] == list(r.table["label"])
    for k, row in enumerate(rows):
        for name, states in zip(sel.names, r.read_states(k, sel)):
            vec = np.load(out / row[name])
            assert vec.shape == (8,)
            np.testing.assert_allclose(vec, states.astype(np.float32).mean(axis=0), rtol=0, atol=0)


def test_refuses_to_replace_what_is_not_an_export(cache, tmp_path):
    precious = tmp_path / "thesis"
    precious.mkdir()
    (precious / "chapter1.tex").write_text("x")
    with pytest.raises(CacheError, match="exists"):
        export_cache(cache, precious, fmt="npy")
    with pytest.raises(CacheError, match="not an earlier npy export"):
        export_cache(cache, precious, fmt="npy", overwrite=True)
    assert (precious / "chapter1.tex").read_text() == "x"
    first = export_cache(cache, tmp_path / "e", fmt="npy", layers="enc:0")
    export_cache(cache, first, fmt="npy", layers="dec:0", overwrite=True)
    assert sorted(p.name for p in first.iterdir()) == ["dec0", "export.json", "index.csv"]


def test_cli(cache, tmp_path):
    exe = Path(sys.executable).with_name("nser")
    if not exe.exists():
        pytest.skip("console script nser not installed (pip install -e .)")
    res = subprocess.run([str(exe), "cache", "export", str(cache), "--format", "hdf5", "--layers", "enc:last",
                          "--out", str(tmp_path / "o.h5")], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    with h5py.File(tmp_path / "o.h5", "r") as f:
        assert list(f) == ["enc2", "utterances"] and len(f["enc2"]) == 25
    bad = subprocess.run([str(exe), "cache", "export", str(cache), "--format", "npy", "--layers", "enc:7",
                          "--out", str(tmp_path / "o")], capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "not in the cache" in bad.stderr and not (tmp_path / "o").exists()


def test_export_says_what_of_the_corpus_it_holds(cache, tmp_path):
    """An export of a cache with failed entries, or an unfinished one, says so, as metrics.json does."""
    import zarr

    from pipeline.cache.schema import ATTR_KEY

    g = zarr.open_group(str(cache), mode="r+")
    g.attrs[ATTR_KEY] = dict(g.attrs[ATTR_KEY], n_manifest=25)
    out = export_cache(cache, tmp_path / "whole", fmt="npy", layers="enc:1")
    meta = json.loads((out / "export.json").read_text())
    assert meta["complete"] is True and meta["left_out"] == {} and meta["partial"] is None
    g.attrs[ATTR_KEY] = dict(g.attrs[ATTR_KEY], n_manifest=30, errors=[
        {"utt_id": "x", "path": "x.wav", "fold": "1", "label": "a", "error": "gone"}])
    out = export_cache(cache, tmp_path / "part.h5", fmt="hdf5", layers="enc:1")
    with h5py.File(out, "r") as f:
        meta = json.loads(f.attrs["nser_export"])
    assert meta["complete"] is False and meta["left_out"] == {"1": 1, "not extracted": 4}
    assert meta["partial"] == CacheReader(cache).partial_hash and meta["n_manifest"] == 30

