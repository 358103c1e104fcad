"""Round trips through real Zarr v3 stores written by CacheWriter."""


import numpy as np
import pytest
import zarr

from pipeline.cache.reader import CacheReader
from pipeline.cache.records import REJECTED, ErrorRecord
from pipeline.cache.schema import ATTR_KEY
from pipeline.cache.writer import CacheWriter
from pipeline.errors import CacheError
from tests.helpers import LAYOUT, attrs, fake_states, row, write_cache


def test_round_trip_values_and_table(tmp_path):
    path = tmp_path / "c.zarr"
    data = write_cache(path, 25)
    r = CacheReader(path)
    assert r.n == 25
    sel = r.selection("enc:all,dec:all")
    for k in range(25):
        got = r.read_states(k, sel)
        for a, b in zip(got, data[k][0] + data[k][1]):
            assert a.dtype == np.float16 and np.array_equal(a, b)
        assert np.array_equal(r.tokens(k), data[k][2])
    assert list(r.table["utt_id"]) == [f"u{k}" for k in range(25)]
    assert r.table["transcript"][3] == "text 3" and r.table["duration"][4] == 5.0
    info = r.info()
    assert info["n_utterances"] == 25 and info["classes"] == {"a": 13, "b": 12}
    assert info["encoder_layers"] == 3 and info["decoder_layers"] == 2 and info["dims"] == 8
    assert info["bytes"] > sum(d[0][0].nbytes * 3 for d in data)


def test_resume_drops_uncommitted_rows_and_continues(tmp_path):
    path = tmp_path / "c.zarr"
    data = write_cache(path, 10)
    # A crash after array writes but before the commit: rows exist past n_committed.
    g = zarr.open_group(str(path), mode="r+")
    g["encoder/layer_00"].resize((g["encoder/layer_00"].shape[0] + 50, 8))
    g["encoder/layer_00"][-50:] = 7
    g["utterances/utt_id"].resize((11,))
    meta = dict(g.attrs[ATTR_KEY])
    assert meta["n_committed"] == 10
    data = write_cache(path, 14)
    r = CacheReader(path)
    assert r.n == 14 and list(r.table["utt_id"])[-1] == "u13"
    sel = r.selection("enc:0")
    for k in range(14):
        assert np.array_equal(r.read_states(k, sel)[0], data[k][0][0])


def test_reopen_takes_the_current_manifest_count(tmp_path):
    """n_manifest is not identity: a rerun after the class map excluded an entry updates it."""
    path = tmp_path / "c.zarr"
    with CacheWriter(path, dict(attrs(), n_manifest=5), layout=LAYOUT) as w:
        w.add(row(0), *fake_states(np.random.default_rng(0), 0))
        w.set_errors([ErrorRecord("u9", "/x.wav", "0", "c", "outside", REJECTED)])
    assert CacheReader(path).info()["complete"] is False  # 1 row + 1 error < 5
    with CacheWriter(path, dict(attrs(), n_manifest=1), layout=LAYOUT) as w:
        w.set_errors([])
    assert CacheReader(path).attrs["n_manifest"] == 1 and CacheReader(path).info()["complete"] is True


def test_other_settings_refused(tmp_path):
    path = tmp_path / "c.zarr"
    write_cache(path, 2)
    with pytest.raises(CacheError, match="other settings"):
        CacheWriter(path, attrs(identity={"k": 2}), layout=LAYOUT)


def test_schema_checks_on_open(tmp_path):
    with pytest.raises(CacheError, match="no cache"):
        CacheReader(tmp_path / "missing.zarr")
    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w")
    with pytest.raises(CacheError, match="not an nser-pipeline cache"):
        CacheReader(tmp_path / "plain.zarr")
    path = tmp_path / "c.zarr"
    write_cache(path, 3)
    g = zarr.open_group(str(path), mode="r+")
    meta = dict(g.attrs[ATTR_KEY])
    g.attrs[ATTR_KEY] = dict(meta, schema_version=99)
    with pytest.raises(CacheError, match="schema version 99"):
        CacheReader(path)
    g.attrs[ATTR_KEY] = dict(meta, model=dict(meta["model"], frame_rate="fast"))
    with pytest.raises(CacheError, match="model/frame_rate"):
        CacheReader(path)
    g.attrs[ATTR_KEY] = dict(meta, errors=[{"utt_id": "u9", "path": "/x.wav", "label": "a", "error": "corrupt"}])
    with pytest.raises(CacheError, match="fold"):  # an error record must say which fold it leaves incomplete
        CacheReader(path)
    g.attrs[ATTR_KEY] = meta
    del g["decoder/layer_01"]
    with pytest.raises(CacheError, match="missing array decoder/layer_01"):
        CacheReader(path)


def test_one_utterance_reads_few_chunks(tmp_path):
    """Reading one utterance of one layer touches only the inner chunks it overlaps."""
    from pipeline.cache.counting_store import CountingStore
    path = tmp_path / "c.zarr"
    data = write_cache(path, 25)
    store = CountingStore.open(path)
    r = CacheReader(store)
    k = 12
    store.reset()
    r.read_states(k, r.selection("enc:1"))
    utt_bytes = data[k][0][1].nbytes
    read = store.bytes_for("encoder/layer_01")
    assert 0 < read <= utt_bytes + 2 * 16 * 8 * 2 + 1024  # <= 2 extra chunks + shard index
    assert store.bytes_outside("encoder/layer_01") == 0
