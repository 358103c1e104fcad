"""Caches of non-Whisper sources: encoder-only, one row per utterance, float32 storage; and Whisper
caches keep their attributes and identity hashes (the new record fields are left out at their
Whisper defaults)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.cache.reader import CacheReader
from pipeline.cache.records import ExtractionRecord, ModelRecord
from pipeline.cache.verify import verify_cache
from pipeline.cache.writer import CacheWriter, identity_hash
from pipeline.errors import CacheError, LayerSelectionError
from tests.helpers import LAYOUT, attrs, row


def vector_attrs(dtype: str = "float32", d: int = 5) -> dict:
    a = attrs(n_enc=1, n_dec=0, d=d)
    a["model"].update(frame_rate=0.0, source="opensmile", name="opensmile:test")
    a["extraction"].update(context="trimmed", token_source="none", dtype=dtype)
    return a


def test_whisper_records_and_identity_hash_unchanged():
    model = ModelRecord("bundled:base", "h", 7, 7, 512, 50.0)
    assert model.source == "whisper" and "source" not in model.to_dict()
    assert ModelRecord.from_dict(model.to_dict()) == model
    # The identity hash these records gave before sources existed (computed with the earlier records.py).
    extraction = ExtractionRecord(context="padded", token_source="hypothesis", max_seconds=30.0)
    assert identity_hash({"model": model.to_dict(), "extraction": extraction.to_dict()}) == "0d4f1d4da9b57960"
    other = ModelRecord("mel", "h", 1, 0, 80, 100.0, source="mel")
    assert other.to_dict()["source"] == "mel" and ModelRecord.from_dict(other.to_dict()) == other


def test_per_utterance_float32_vectors_round_trip(tmp_path):
    """Values beyond float16's range (openSMILE functionals reach ~6.5e11) are stored exactly as
    float32; no decoder arrays, no tokens; verify passes."""
    rng = np.random.default_rng(0)
    vectors = [rng.normal(size=(1, 5)).astype(np.float32) * 1e11 for _ in range(4)]
    path = tmp_path / "v.zarr"
    with CacheWriter(path, vector_attrs(), layout=LAYOUT) as w:
        for k, v in enumerate(vectors):
            w.add(row(k), [v], [], np.zeros(0, dtype=np.int32))
    with CacheReader(path) as r:
        assert r.source == "opensmile" and r.storage_dtype == np.float32
        sel = r.selection("enc:all")
        for k, v in enumerate(vectors):
            (got,) = r.read_states(k, sel)
            assert got.dtype == np.float32 and np.array_equal(got, v)
        assert list(r.table["n_frames"]) == [1] * 4 and list(r.table["n_tokens"]) == [0] * 4
        info = r.info()
        assert (info["source"], info["dims"], info["decoder_layers"], info["per_utterance"], info["dtype"]) == (
            "opensmile", 5, 0, True, "float32")
        with pytest.raises(LayerSelectionError, match="opensmile source stores no decoder states"):
            r.selection("enc:all,dec:0")
    assert verify_cache(str(path)).ok


def test_float16_cache_refuses_values_beyond_its_range(tmp_path):
    with CacheWriter(tmp_path / "h.zarr", vector_attrs("float16"), layout=LAYOUT) as w:
        with pytest.raises(CacheError, match="after the cast to float16"):
            w.add(row(0), [np.full((1, 5), 1e6, dtype=np.float32)], [], np.zeros(0, dtype=np.int32))


def test_schema_refuses_a_storage_dtype_it_does_not_know(tmp_path):
    with pytest.raises(CacheError, match="extraction/dtype"):
        CacheWriter(tmp_path / "x.zarr", vector_attrs("float64"), layout=LAYOUT)
