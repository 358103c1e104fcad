"""Text caches through the real `nser-extract --text-from`: the real MiniLM (BERT architecture) over
the transcripts and the tiny.en hypotheses of a real Whisper cache of EmoDB in babble noise. Cache
facts and stored values, what is taken from the Whisper cache (rows, condition, identity), training
through the real `nser-train`, an empty hypothesis as a per-utterance error, and refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.cache.reader import CacheReader
from pipeline.cli.extract import extract_command
from pipeline.cli.train import train_command
from pipeline.extract.text_layers import TextLayerExtractor
from pipeline.models.hf_encoder import load_text_encoder
from tests.extract.test_sources import info
from tests.helpers import row, write_cache


@pytest.fixture(scope="module")
def whisper_cache(tmp_path_factory, emodb_root, noise_root, cache_dir):
    """bundled:tiny.en on one utterance per class from each of three folds (12), babble 0 dB."""
    from pipeline.corpora.manifest import read_corpus
    from pipeline.extract.run import ExtractionOptions, run_extraction

    corpus = read_corpus("emodb", emodb_root)
    seen: set = set()
    corpus.utterances = [u for u in corpus.utterances if u.fold in ("0", "1", "2")
                         and (u.fold, u.label) not in seen and not seen.add((u.fold, u.label))]
    out = tmp_path_factory.mktemp("whisper") / "tiny.zarr"
    run_extraction(corpus, out, ExtractionOptions(model="bundled:tiny.en", noise=str(noise_root / "babble"),
                                                  snr_db=0.0, context="trimmed", batch_size=12), progress=False)
    return out


def extract_text(source, field, model_dir, out, *extra):
    return CliRunner().invoke(extract_command, ["--text-from", str(source), "--text", field, "--model",
                                                f"text:{model_dir}", "--out", str(out), "--quiet", *extra])


@pytest.fixture(scope="module")
def text_caches(tmp_path_factory, whisper_cache, minilm_dir):
    root = tmp_path_factory.mktemp("text")
    for field in ("transcript", "hypothesis"):
        res = extract_text(whisper_cache, field, minilm_dir, root / f"{field}.zarr")
        assert res.exit_code == 0, res.output
    return {f: root / f"{f}.zarr" for f in ("transcript", "hypothesis")}


@pytest.mark.parametrize("field", ["transcript", "hypothesis"])
def test_text_cache_holds_every_layer_per_token_of_the_whisper_caches_texts(text_caches, whisper_cache, minilm_dir,
                                                                             field):
    got = info(text_caches[field])
    assert (got["source"], got["encoder_layers"], got["decoder_layers"], got["dims"]) == ("text", 7, 0, 384)
    assert got["per_utterance"] is False and got["token_source"] == "none" and got["decoder_tokens"] == 0
    extractor = TextLayerExtractor(load_text_encoder(str(minilm_dir)))
    with CacheReader(whisper_cache) as w, CacheReader(text_caches[field]) as t:
        assert got["n_utterances"] == w.n == 12 and got["condition"] == "babble_0dB"
        assert t.meta.condition == w.meta.condition and t.meta.corpus == w.meta.corpus
        assert t.attrs["identity"]["text"] == {"from_identity_hash": w.identity_hash, "field": field}
        for col in ("utt_id", "label", "fold", "speaker", "duration", "transcript", "hypothesis", "noise_file"):
            assert list(t.table[col]) == list(w.table[col]), col
        k = 5
        (expected,) = extractor.extract(None, [str(w.table[field][k]).strip()])
        stored = t.read_states(k, t.selection("enc:all"))
        # [CLS] + word pieces + [SEP], one row each.
        assert stored[0].shape == (len(extractor.token_ids(str(w.table[field][k]).strip())), 384)
        assert all(np.array_equal(s, e) for s, e in zip(stored, expected.encoder))


@pytest.mark.parametrize("field", ["transcript", "hypothesis"])
def test_weighted_sum_trains_on_a_text_cache_and_decoder_layers_are_refused(text_caches, tmp_path, field):
    def train(out, layers):
        return CliRunner().invoke(train_command, ["--cache", str(text_caches[field]), "--out", str(out),
                                                  "--epochs", "1", "--threads", "1", "--quiet",
                                                  "--fusion", "weighted-sum", "--layers", layers])
    res = train(tmp_path / "ok", "enc:all")
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "ok" / "metrics.json").read_text())
    assert metrics["fusion"] == "weighted-sum" and len(metrics["layers"]) == 7 and len(metrics["folds"]) == 3
    res = train(tmp_path / "dec", "dec:all")
    assert res.exit_code != 0 and "text source stores no decoder states" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "dec" / "config.json").exists()


def test_an_empty_hypothesis_is_that_utterances_error_not_the_caches(tmp_path, minilm_dir):
    source = tmp_path / "w.zarr"
    write_cache(source, 4, rows=lambda k: row(k, hypothesis="" if k == 2 else f"a hypothesis {k}"))
    res = extract_text(source, "hypothesis", minilm_dir, tmp_path / "t.zarr")
    assert res.exit_code == 0, res.output
    with CacheReader(tmp_path / "t.zarr") as t:
        assert list(t.table["utt_id"]) == ["u0", "u1", "u3"]
        (err,) = t.errors
        assert (err.utt_id, err.kind, err.fold, err.label) == ("u2", "failed", "2", "a")
        assert "empty hypothesis" in err.error
    # A rerun resumes: nothing new, the same error table.
    res = extract_text(source, "hypothesis", minilm_dir, tmp_path / "t.zarr")
    assert res.exit_code == 0 and "3 utterances cached (0 new)" in res.output
    with CacheReader(tmp_path / "t.zarr") as t:
        assert t.n == 3 and [e.utt_id for e in t.errors] == ["u2"]
    # --strict makes any failure an exit status, as for audio sources.
    res = extract_text(source, "hypothesis", minilm_dir, tmp_path / "s.zarr", "--strict")
    assert res.exit_code != 0 and "1 file(s) failed" in res.output


def test_nonfinite_text_states_are_that_utterances_error(tmp_path, minilm_dir, monkeypatch):
    """The text run applies the audio run's non-finite check: NaN in one text's states (injected)
    is that utterance's error, with the same message, and the others are cached."""
    real = TextLayerExtractor.extract

    def faulty(self, audios, texts):
        out = real(self, audios, texts)
        if texts == ["a transcript 1"]:
            out[0].encoder[3][0, 0] = np.nan
        return out

    monkeypatch.setattr(TextLayerExtractor, "extract", faulty)
    source = tmp_path / "w.zarr"
    write_cache(source, 3, rows=lambda k: row(k, transcript=f"a transcript {k}"))
    res = extract_text(source, "transcript", minilm_dir, tmp_path / "t.zarr")
    assert res.exit_code == 0, res.output
    with CacheReader(tmp_path / "t.zarr") as t:
        assert list(t.table["utt_id"]) == ["u0", "u2"]
        (err,) = t.errors
        assert err.utt_id == "u1" and err.error == ("non-finite hidden states: 1 NaN/Inf value(s) in encoder state 3 "
                                                    "(computed in float32, stored as float16)")


@pytest.mark.parametrize("args,message", [
    (["--corpus", "emodb"], "leave out --corpus"),
    (["--snr", "0"], "leave out --snr"),
    (["--tokens", "transcript"], "leave out --tokens"),
])
def test_options_a_text_cache_takes_from_its_source_are_refused(tmp_path, minilm_dir, args, message):
    source = tmp_path / "w.zarr"
    write_cache(source, 2)
    res = extract_text(source, "transcript", minilm_dir, tmp_path / "t.zarr", *args)
    assert res.exit_code != 0 and message in res.output and not (tmp_path / "t.zarr").exists()


def test_a_text_cache_needs_a_text_model_and_a_field(tmp_path):
    source = tmp_path / "w.zarr"
    write_cache(source, 2)
    runner = CliRunner()
    res = runner.invoke(extract_command, ["--text-from", str(source), "--text", "transcript", "--model", "bundled:base",
                                          "--out", str(tmp_path / "t.zarr")])
    assert res.exit_code != 0 and "text:<BERT-style id or dir>" in res.output
    res = runner.invoke(extract_command, ["--text-from", str(source), "--model", "text:x",
                                          "--out", str(tmp_path / "t")])
    assert res.exit_code != 0 and "--text transcript|hypothesis" in res.output
    res = runner.invoke(extract_command, ["--model", "mel", "--out", str(tmp_path / "t")])
    assert res.exit_code != 0 and "Missing option --corpus" in res.output
