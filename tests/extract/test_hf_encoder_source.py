"""The `hf-encoder` source through the real `nser-extract` on real EmoDB audio in babble noise, with a
tiny random wav2vec2 (tests/ssl_models.py): cache facts (`nser cache info --json`), stored states equal
HFEncoderLayerExtractor on the same noisy audio, the model's own frame count, training through the
real `nser-train`, and refusals (no decoder; no encoder named)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.audio import load_audio
from pipeline.cache.reader import CacheReader
from pipeline.cli.extract import extract_command
from pipeline.cli.train import train_command
from pipeline.errors import LayerSelectionError
from pipeline.extract.hf_encoder_layers import HFEncoderLayerExtractor
from pipeline.models.hf_encoder import load_speech_encoder
from pipeline.noise import NoiseBank
from tests.extract.test_sources import info


@pytest.fixture(scope="module")
def ssl_cache(tmp_path_factory, source_corpus, tiny_ssl_dirs, noise_root):
    out = tmp_path_factory.mktemp("ssl_cache") / "w2v.zarr"
    res = CliRunner().invoke(extract_command, [
        "--corpus", "csv", "--data-root", str(source_corpus), "--model", f"hf-encoder:{tiny_ssl_dirs['wav2vec2']}",
        "--noise", str(noise_root / "babble"), "--snr", "0", "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    return out


def test_ssl_cache_holds_every_encoder_state_of_the_noisy_audio(ssl_cache, source_corpus, tiny_ssl_dirs, noise_root):
    got = info(ssl_cache)
    assert (got["source"], got["encoder_layers"], got["decoder_layers"], got["dims"]) == ("hf-encoder", 3, 0, 32)
    assert got["frame_rate"] == 50.0 and got["per_utterance"] is False and got["token_source"] == "none"
    assert got["n_utterances"] == 12 and got["decoder_tokens"] == 0 and got["condition"] == "babble_0dB"
    extractor = HFEncoderLayerExtractor(load_speech_encoder(str(tiny_ssl_dirs["wav2vec2"])))
    bank = NoiseBank(noise_root / "babble", seed=0)
    with CacheReader(ssl_cache) as r:
        for k in (0, 7):
            utt = str(r.table["utt_id"][k])
            clean = load_audio(source_corpus / f"{utt}.flac").samples
            (expected,) = extractor.extract([bank.mix(clean, utt, 0.0).samples])
            stored = r.read_states(k, r.selection("enc:all"))
            # The model's own conv frame count (2 s: 99), not ceil(2 s x 50) = 100.
            assert stored[0].shape == (extractor.frames(len(clean)), 32) == (99, 32)
            assert all(np.array_equal(s, e) for s, e in zip(stored, expected.encoder))
        with pytest.raises(LayerSelectionError, match="hf-encoder source stores no decoder states"):
            r.selection("dec:all")


@pytest.mark.parametrize("fusion", ["weighted-sum", "mean-fc"])
def test_heads_train_on_the_ssl_cache(ssl_cache, tmp_path, fusion):
    layers = "enc:all" if fusion == "weighted-sum" else "enc:last"
    res = CliRunner().invoke(train_command, ["--cache", str(ssl_cache), "--out", str(tmp_path), "--epochs", "1",
                                             "--threads", "1", "--quiet", "--fusion", fusion, "--layers", layers])
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["fusion"] == fusion and len(metrics["folds"]) == 3


def test_hf_encoder_without_a_model_is_refused(source_corpus, tmp_path):
    res = CliRunner().invoke(extract_command, ["--corpus", "csv", "--data-root", str(source_corpus), "--model",
                                               "hf-encoder", "--out", str(tmp_path / "x.zarr"), "--quiet"])
    assert res.exit_code != 0 and "hf-encoder:facebook/wav2vec2-base" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "x.zarr").exists()


def test_audio_shorter_than_one_frame_is_that_files_error(tmp_path, source_corpus, tiny_ssl_dirs):
    """15 ms loads (above the loader's minimum) but gives a wav2vec2 front end no frame: the file is
    recorded as failed before its batch runs, and the other files are cached."""
    import shutil

    import soundfile as sf

    corpus = tmp_path / "corpus"
    shutil.copytree(source_corpus, corpus)
    first = sorted(corpus.glob("*.flac"))[0]
    samples, rate = sf.read(first, dtype="float32")
    sf.write(first, samples[: int(0.015 * rate)], rate)
    out = tmp_path / "w2v.zarr"
    res = CliRunner().invoke(extract_command, ["--corpus", "csv", "--data-root", str(corpus), "--model",
                                               f"hf-encoder:{tiny_ssl_dirs['wav2vec2']}", "--out", str(out),
                                               "--batch-size", "4", "--quiet"])
    assert res.exit_code == 0, res.output
    with CacheReader(out) as r:
        assert r.n == 11 and first.stem not in set(map(str, r.table["utt_id"]))
        (err,) = r.errors
        assert err.utt_id == first.stem and err.kind == "failed" and "shorter than one frame" in err.error
