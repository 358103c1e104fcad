"""Typed cache records: round trips, the stored JSON they give, error rows with and without a kind,
and a stack's row spans, on real Zarr stores written by CacheWriter."""

import json

import numpy as np
import pytest
import zarr

from pipeline.cache.reader import CacheReader
from pipeline.cache.records import (FAILED, REJECTED, CacheAttrs, ConditionRecord, CorpusRecord, ErrorRecord,
                                    ExtractionRecord, ModelRecord)
from pipeline.cache.schema import ATTR_KEY, committed_rows, layer_array_name
from pipeline.cache.writer import CacheWriter
from pipeline.errors import CacheError
from tests.helpers import LAYOUT, attrs, fake_states, row, write_cache

CORPUS = CorpusRecord("emodb", "cv", "de", "0123456789abcdef")
MODEL = ModelRecord("bundled:base", "feedc0de", 3, 2, 8, 50.0)
EXTRACTION = ExtractionRecord(context="padded", token_source="hypothesis", compute_dtype="float32", device="cpu",
                              max_seconds=30.0, prompt=(50258, 50261, 50359, 50363))
NOISY = ConditionRecord(name="babble_0dB", noise_type="babble", noise_folder="/data/noise/babble",
                        noise_files=("a.flac", "b.flac"), noise_fingerprint="f00d", snr_db=0.0, seed=3)
CLEAN = ConditionRecord(name="clean", noise_type=None, snr_db=None, seed=0)


def cache_attrs(condition=NOISY, n_manifest=5):
    return CacheAttrs(code_version="0.1.0+gtest", corpus=CORPUS, classes=("a", "b"), model=MODEL,
                      extraction=EXTRACTION, condition=condition, n_manifest=n_manifest,
                      identity={"package_version": "0.1.0", "corpus": CORPUS.to_dict(), "model": MODEL.to_dict(),
                                "extraction": EXTRACTION.to_dict(), "condition": condition.identity_dict()})


@pytest.mark.parametrize("record", [CORPUS, MODEL, EXTRACTION, NOISY, CLEAN, cache_attrs(), cache_attrs(CLEAN, None),
                                    ExtractionRecord(context="trimmed", token_source="transcript", max_seconds=8.0),
                                    ErrorRecord("u1", "/a/u1.wav", "2", "angyr", "label outside", REJECTED)])
def test_round_trip(record):
    d = record.to_dict()
    assert type(record).from_dict(json.loads(json.dumps(d))) == record
    assert json.loads(json.dumps(d)) == d  # plain JSON types only


def test_stored_json_is_the_records_dict_in_order(tmp_path):
    """What the cache stores for each record is its to_dict, key order included (zarr.json is
    compared as text), and the reader gives the same records back."""
    path = tmp_path / "c.zarr"
    a = cache_attrs()
    with CacheWriter(path, a.to_dict(), layout=LAYOUT) as w:
        w.add(row(0), *fake_states(np.random.default_rng(0), 0))
    stored = json.loads((path / "zarr.json").read_text())["attributes"][ATTR_KEY]
    for key, value in a.to_dict().items():
        assert json.dumps(stored[key]) == json.dumps(value), key
    assert list(stored)[:8] == list(a.to_dict())  # the writer's bookkeeping comes after
    reader = CacheReader(path)
    assert reader.meta == a
    assert reader.meta.model == MODEL and reader.classes == ["a", "b"] and reader.complete is False
    assert (reader.n_encoder_states, reader.n_decoder_states, reader.d_model) == (3, 2, 8)
    # noise_folder is where the recordings were found: not part of the identity, the rest is
    assert "noise_folder" not in a.identity["condition"] and a.identity["condition"]["noise_fingerprint"] == "f00d"


def test_older_attributes_read_without_optional_fields(tmp_path):
    """A cache without n_manifest, compute dtype, device, prompt or noise details opens, and the
    optional extraction fields stay absent when written back (the schema refuses them as null)."""
    path = tmp_path / "c.zarr"
    write_cache(path, 2)
    reader = CacheReader(path)
    old = attrs()
    assert reader.meta.n_manifest is None and reader.complete is None
    assert (reader.meta.extraction.compute_dtype, reader.meta.extraction.prompt) == (None, None)
    assert reader.meta.extraction.to_dict() == old["extraction"]
    assert reader.meta.condition == ConditionRecord(name="clean", noise_type=None, snr_db=None, seed=0)
    assert reader.meta.corpus.to_dict() == old["corpus"] and reader.meta.model.to_dict() == old["model"]
    assert reader.meta.identity == old["identity"]


def test_error_rows_with_kind_and_older_rows_without(tmp_path):
    path = tmp_path / "c.zarr"
    errors = [ErrorRecord("u8", "/x/u8.wav", "0", "zzz", "label 'zzz' outside the class map", REJECTED),
              ErrorRecord("u9", "/x/u9.wav", "1", "b", "/x/u9.wav: file not found", FAILED)]
    with CacheWriter(path, dict(attrs(), n_manifest=3), layout=LAYOUT) as w:
        w.add(row(0), *fake_states(np.random.default_rng(0), 0))
        w.set_errors(errors)
    stored = json.loads((path / "zarr.json").read_text())["attributes"][ATTR_KEY]["errors"]
    assert stored == [e.to_dict() for e in errors] and [e["kind"] for e in stored] == ["rejected", "failed"]
    reader = CacheReader(path)
    assert reader.errors == errors and reader.complete is True
    assert [e["utt_id"] for e in reader.errors] == ["u8", "u9"]  # rows read by column name too
    assert reader.errors_by_fold({"1", "2"}) == {"1": 1}

    # Rows as written before the kind was stored: the kind comes from the label (in the classes or not).
    g = zarr.open_group(str(path), mode="r+")
    meta = dict(g.attrs[ATTR_KEY])
    g.attrs[ATTR_KEY] = dict(meta, errors=[{k: v for k, v in e.items() if k != "kind"} for e in stored])
    assert CacheReader(path).errors == errors
    assert [e.kind for e in CacheReader(path).errors] == [REJECTED, FAILED]

    g.attrs[ATTR_KEY] = dict(meta, errors=[dict(stored[0], kind="lost")])
    with pytest.raises(CacheError, match="errors/0/kind"):
        CacheReader(path)


def test_spans_match_the_stored_rows(tmp_path):
    """reader.spans gives each utterance's rows in the real arrays: contiguous, in table order, and
    reading them gives back what was written; the committed end agrees for the reader's table and
    the store's table group."""
    path = tmp_path / "c.zarr"
    data = write_cache(path, 25)  # several shards per stack, reopened by nothing: one writer
    reader = CacheReader(path)
    table = zarr.open_group(str(path), mode="r")["utterances"]
    for stack, pick in (("encoder", 0), ("decoder", 1)):
        starts, counts = reader.spans(stack)
        assert starts.dtype == counts.dtype == np.int64 and len(starts) == reader.n == 25
        assert counts.tolist() == [len(d[pick][0]) for d in data]
        np.testing.assert_array_equal(starts, np.concatenate([[0], np.cumsum(counts)[:-1]]))
        end = committed_rows(reader.table, stack, reader.n)
        assert end == committed_rows(table, stack, reader.n) == int(starts[-1] + counts[-1])
        assert end == reader.group[layer_array_name(stack, 0)].shape[0] and committed_rows(table, stack, 0) == 0
        arr = reader.array(stack, 1)
        for k in (0, 11, 24):
            assert reader.utterance_rows(stack, k) == (starts[k], starts[k] + counts[k])
            np.testing.assert_array_equal(arr[starts[k]:starts[k] + counts[k]], data[k][pick][1])
