"""Feature sources through the real `nser-extract` on real EmoDB audio: `mel` frames and
`opensmile:<set>` functionals, their cache facts (`nser cache info --json`) and stored values,
the openSMILE sets' dimensions (paper Table I), and refusals of unknown sources."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from pipeline.cache.reader import CacheReader
from pipeline.cli.cache import cache_group
from pipeline.cli.extract import extract_command
from pipeline.corpora.manifest import read_corpus
from pipeline.errors import LayerSelectionError
from pipeline.extract import sources
from pipeline.extract.run import ExtractionOptions, run_extraction
from pipeline.extract.opensmile_source import SETS

def info(cache: Path) -> dict:
    res = CliRunner().invoke(cache_group, ["info", str(cache), "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


def test_mel_cache_holds_whisper_log_mel_frames_of_each_utterance(mel_cache, source_corpus):
    got = info(mel_cache)
    assert (got["source"], got["model"], got["dims"], got["encoder_layers"], got["decoder_layers"]) == (
        "mel", "mel", 80, 1, 0)
    assert got["frame_rate"] == 100.0 and got["per_utterance"] is False and got["dtype"] == "float16"
    assert got["n_utterances"] == 12 and got["decoder_tokens"] == 0
    from transformers import WhisperFeatureExtractor
    with CacheReader(mel_cache) as r:
        k = 0
        (frames,) = r.read_states(k, r.selection("enc:0"))
        audio, _ = sf.read(source_corpus / f"{r.table['utt_id'][k]}.flac", dtype="float32")
        # The utterance's own length (2 s: 200 frames), no 30 s padding.
        assert frames.shape == (len(audio) // 160, 80) == (200, 80)
        expected = WhisperFeatureExtractor()(audio, sampling_rate=16000, return_tensors="np", padding="longest")
        assert np.allclose(frames, expected["input_features"][0].T, atol=2e-3)
        assert r.table["hypothesis"][k] == "" and r.table["n_tokens"][k] == 0
        with pytest.raises(LayerSelectionError, match="mel source stores no decoder states"):
            r.selection("dec:last")


def test_opensmile_cache_holds_one_functionals_vector_per_utterance(egemaps_cache, source_corpus):
    import opensmile
    got = info(egemaps_cache)
    assert (got["source"], got["dims"], got["encoder_layers"], got["decoder_layers"]) == ("opensmile", 88, 1, 0)
    assert got["per_utterance"] is True and got["frame_rate"] == 0.0 and got["dtype"] == "float32"
    assert got["encoder_frames"] == got["n_utterances"] == 12
    smile = opensmile.Smile(opensmile.FeatureSet.eGeMAPSv02, opensmile.FeatureLevel.Functionals)
    with CacheReader(egemaps_cache) as r:
        (vec,) = r.read_states(3, r.selection("enc:all"))
        audio, _ = sf.read(source_corpus / f"{r.table['utt_id'][3]}.flac", dtype="float32")
        assert vec.dtype == np.float32 and np.array_equal(vec, smile.process_signal(audio, 16000).to_numpy())


@pytest.mark.parametrize("name", list(SETS))
def test_opensmile_set_dimensions_match_paper_table_one(name):
    source = sources.open_source(f"opensmile:{name}", None, None)
    assert source.model.d_model == SETS[name][1]
    assert (source.model.source, source.extraction.dtype, source.model.n_decoder_states) == ("opensmile", "float32", 0)


def test_unknown_sources_are_refused_with_the_choices(source_corpus, tmp_path):
    res = CliRunner().invoke(extract_command, ["--corpus", "csv", "--data-root", str(source_corpus), "--model",
                                               "opensmile:IS14", "--out", str(tmp_path / "x.zarr"), "--quiet"])
    assert res.exit_code != 0 and "unknown openSMILE set 'IS14'" in res.output
    assert "opensmile:eGeMAPSv02" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "x.zarr").exists()
    assert sources.source_of("bundled:base") == ("whisper", "bundled:base")
    assert sources.source_of("opensmile:IS09_emotion") == ("opensmile", "IS09_emotion")
    help_text = CliRunner().invoke(extract_command, ["--help"]).output
    assert "mel" in help_text and "opensmile:<set>" in help_text


def test_a_text_model_outside_the_cli_is_refused_not_taken_for_a_whisper_id(source_corpus, tmp_path):
    """Only `nser-extract --text-from` makes text caches: through the API a `text:` value names no audio
    source, and loading it as a Whisper model id would fail with a misleading message (or worse)."""
    with pytest.raises(sources.SourceError, match="--text-from"):
        sources.source_of("text:google-bert/bert-base-uncased")
    out = tmp_path / "c.zarr"
    with pytest.raises(sources.SourceError, match=r"nser-extract --text-from CACHE --text transcript\|hypothesis "
                                                  r"--model text:x"):
        run_extraction(read_corpus("csv", source_corpus), out, ExtractionOptions(model="text:x"), progress=False)
    assert not out.exists()
