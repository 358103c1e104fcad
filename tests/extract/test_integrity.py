"""Extraction refuses what would leave a wrong or never-finishing cache, and turns one bad utterance
into one error record instead of a crash or silent garbage. Real audio, real tiny.en forwards,
real Zarr stores; faults are injected into options, model outputs, transcripts and noise files."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from pipeline.cache.reader import CacheReader
from pipeline.cli.extract import extract_command
from pipeline.corpora.manifest import read_corpus
from pipeline.errors import CacheError, NserError
from pipeline.extract import whisper_layers
from pipeline.extract.run import ExtractionOptions, nonfinite_reason, run_extraction
from tests.helpers import write_manifest

MODEL = "bundled:tiny.en"
FAST = dict(context="trimmed", token_source="transcript")  # what is tested does not need Whisper's 30 s context
FILES = [("03", "03a01Fa"), ("03", "03a01Nc"), ("08", "08a01Ab"), ("08", "08a01Na")]


def make_corpus(root: Path, emodb_root: Path, transcripts: dict[str, str] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for spk, stem in FILES:
        shutil.copy(emodb_root / f"{stem}.flac", root / f"{stem}.flac")
        rows.append({"path": f"{stem}.flac", "label": stem[5], "speaker": spk,
                     "transcript": (transcripts or {}).get(stem, "Der Lappen liegt auf dem Eisschrank.")})
    write_manifest(root, rows)
    return root


@pytest.fixture(scope="module")
def corpus_root(tmp_path_factory, emodb_root) -> Path:
    return make_corpus(tmp_path_factory.mktemp("corpus"), emodb_root)


# --- 1. absurd or non-finite options ------------------------------------------------------------

@pytest.mark.parametrize("snr", [math.nan, math.inf, -math.inf, 1e9, 50.5, -51.0])
def test_api_refuses_snr_outside_range(corpus_root, noise_root, tmp_path, snr):
    corpus = read_corpus("csv", corpus_root)
    with pytest.raises(NserError, match=r"SNR .* outside -50\.\.50 dB"):
        run_extraction(corpus, tmp_path / "c.zarr", ExtractionOptions(model=MODEL, noise=str(noise_root / "babble"),
                                                                       snr_db=snr), progress=False)
    assert not (tmp_path / "c.zarr").exists()


@pytest.mark.parametrize("field, value, message", [
    ("batch_size", 0, "batch size must be an integer >= 1"),
    ("batch_size", -2, "batch size must be an integer >= 1"),
    ("batch_size", 2.5, "batch size must be an integer >= 1"),
    ("seed", 0.5, "seed must be an integer"),  # hashed as "0.5", recorded as 0: refused
    ("commit_frames", 0, "commit frames must be an integer >= 1"),
    ("context", "full", "context must be padded or trimmed"),
    ("token_source", "text", "token source must be hypothesis or transcript"),
    ("dtype", "float64", "dtype must be auto, float32, float16, bfloat16"),
    ("device", "gpu0", "not a torch device"),
])
def test_api_refuses_bad_options(corpus_root, tmp_path, field, value, message):
    corpus = read_corpus("csv", corpus_root)
    opts = ExtractionOptions(model=MODEL, **{field: value})
    with pytest.raises(NserError, match=message):
        run_extraction(corpus, tmp_path / "c.zarr", opts, progress=False)
    assert not (tmp_path / "c.zarr").exists()


@pytest.mark.parametrize("args, message", [
    (["--snr", "nan"], "outside -50..50 dB"),
    (["--snr", "inf"], "outside -50..50 dB"),
    (["--snr", "1e9"], "outside -50..50 dB"),
    (["--batch-size", "0"], "--batch-size"),
    (["--batch-size", "-1"], "--batch-size"),
    (["--limit", "0"], "--limit"),
    (["--limit", "-3"], "--limit"),
    (["--seed", "1.5"], "--seed"),
])
def test_cli_refuses_bad_options(corpus_root, noise_root, tmp_path, args, message):
    base = ["--corpus", "csv", "--data-root", str(corpus_root), "--model", MODEL, "--out", str(tmp_path / "c.zarr"),
            "--quiet"]
    if args[0] == "--snr":
        base += ["--noise", str(noise_root / "babble")]
    res = CliRunner().invoke(extract_command, base + args)
    assert res.exit_code == 2, res.output  # a usage error, before any model or audio is touched
    assert message in res.output
    assert not (tmp_path / "c.zarr").exists()


def test_cli_refuses_duplicate_ids(tmp_path, emodb_root):
    """a/b.flac and a__b.flac: nser-extract stops before extracting, naming both files."""
    root = tmp_path / "dup"
    (root / "a").mkdir(parents=True)
    shutil.copy(emodb_root / "03a01Fa.flac", root / "a" / "b.flac")
    shutil.copy(emodb_root / "08a01Ab.flac", root / "a__b.flac")
    (root / "manifest.csv").write_text("path,label,speaker\na/b.flac,F,03\na__b.flac,A,08\n")
    res = CliRunner().invoke(extract_command, ["--corpus", "csv", "--data-root", str(root), "--model", MODEL,
                                               "--out", str(tmp_path / "c.zarr"), "--quiet"])
    assert res.exit_code == 1
    assert "utterance id 'a__b' is given to both" in res.output and "a/b.flac" in res.output
    assert not (tmp_path / "c.zarr").exists()


# --- 2. non-finite states -> per-file error ------------------------------------------------------

def test_nonfinite_reason_judges_states_as_stored():
    """The one check every run (audio and text) applies: an fp16 overflow is caught in the storage
    dtype, and the same values stored as float32 pass."""
    from pipeline.cache.records import ExtractionRecord
    from pipeline.extract.sources import encoder_only

    fp16 = ExtractionRecord(context="trimmed", token_source="none", dtype="float16", compute_dtype="float16",
                            device="cpu", max_seconds=30.0)
    big = encoder_only([np.ones((3, 4), np.float32), np.full((3, 4), 7e4, np.float32)])
    assert nonfinite_reason(encoder_only([np.ones((3, 4), np.float32)]), fp16) is None
    assert nonfinite_reason(big, fp16) == ("non-finite hidden states: 12 NaN/Inf value(s) in encoder state 1 "
                                           "(computed in float16, stored as float16); --dtype float32 may avoid "
                                           "an overflow")
    fp32 = ExtractionRecord(context="trimmed", token_source="none", dtype="float32", compute_dtype="float32",
                            device="cpu", max_seconds=30.0)
    assert nonfinite_reason(big, fp32) is None


def test_nonfinite_states_are_per_file_errors(corpus_root, tmp_path, monkeypatch, cache_dir):
    """NaN in one utterance's encoder state and Inf in another's decoder state (as an fp16 overflow
    would give): both become error records, the other two are cached, and a rerun without the fault
    caches them."""
    real = whisper_layers.WhisperLayerExtractor.extract
    poisoned: list[int] = []

    def faulty(self, audios, transcripts):
        out = real(self, audios, transcripts)
        if not poisoned:  # the first batch: utterances 0 and 1
            out[0].encoder[2][0, 0] = np.nan
            out[1].decoder[-1][-1, 5] = np.inf
            poisoned.append(1)
        return out

    monkeypatch.setattr(whisper_layers.WhisperLayerExtractor, "extract", faulty)
    corpus = read_corpus("csv", corpus_root)
    out = tmp_path / "c.zarr"
    rep = run_extraction(corpus, out, ExtractionOptions(model=MODEL, batch_size=2, **FAST), progress=False)
    ids = [u.utt_id for u in corpus.utterances]
    assert rep.n_done == 2
    errors = {e["utt_id"]: e for e in rep.errors}
    assert set(errors) == set(ids[:2])
    assert "1 NaN/Inf value(s) in encoder state 2 (computed in float32, stored as float16)" in errors[ids[0]]["error"]
    assert "NaN/Inf value(s) in decoder state 4" in errors[ids[1]]["error"]
    assert errors[ids[0]]["label"] == corpus.utterances[0].label and errors[ids[0]]["fold"] == corpus.utterances[0].fold
    reader = CacheReader(out)
    assert sorted(reader.table["utt_id"]) == sorted(ids[2:])
    assert {e["utt_id"] for e in reader.errors} == set(ids[:2]) and reader.complete
    for i in range(reader.n):
        assert all(np.isfinite(s).all() for s in reader.read_states(i, reader.selection("enc:all,dec:all")))

    monkeypatch.setattr(whisper_layers.WhisperLayerExtractor, "extract", real)
    again = run_extraction(corpus, out, ExtractionOptions(model=MODEL, batch_size=2, **FAST), progress=False)
    assert (again.n_new, again.errors) == (2, [])
    assert CacheReader(out).errors == [] and CacheReader(out).n == 4


# --- 6. a transcript longer than the decoder -----------------------------------------------------

def test_transcript_over_decoder_positions_is_a_per_file_error(tmp_path, emodb_root, cache_dir):
    long_text = " ".join(["Der Lappen liegt auf dem Eisschrank."] * 80)  # ~900 tokens > 448 positions
    root = make_corpus(tmp_path / "corpus", emodb_root, {"03a01Nc": long_text})
    corpus = read_corpus("csv", root)
    out = tmp_path / "c.zarr"
    opts = ExtractionOptions(model=MODEL, token_source="transcript", batch_size=4, context="trimmed")
    rep = run_extraction(corpus, out, opts, progress=False)
    assert rep.n_done == 3
    [err] = rep.errors
    assert err["utt_id"] == "03a01Nc"
    assert "decoder positions, over the model's limit of 448 (max_target_positions)" in err["error"]
    reader = CacheReader(out)
    assert sorted(reader.table["utt_id"]) == ["03a01Fa", "08a01Ab", "08a01Na"] and reader.complete
    # A rerun does not crash either: the same file fails the same way, the rest is done.
    again = run_extraction(corpus, out, opts, progress=False)
    assert again.n_new == 0 and [e["utt_id"] for e in again.errors] == ["03a01Nc"]


# --- 4. cache identity: noise content, compute dtype ---------------------------------------------

def write_noise(folder: Path, noise_root: Path, sign: float = 1.0) -> None:
    """Two 20 s WAV recordings cut from the shared babble noise (PCM16: size depends only on length)."""
    folder.mkdir(exist_ok=True)
    for k, src in enumerate(sorted((noise_root / "babble").glob("*.flac"))[:2]):
        x, rate = sf.read(src, frames=20 * 16000, dtype="float32")
        sf.write(folder / f"n{k}.wav", sign * x, rate, subtype="PCM_16")


def test_resume_refuses_other_noise_content_and_compute_dtype(tmp_path, corpus_root, noise_root, cache_dir):
    noise = tmp_path / "babble"
    write_noise(noise, noise_root)
    sizes = {p.name: p.stat().st_size for p in noise.iterdir()}
    corpus = read_corpus("csv", corpus_root)
    corpus.utterances = corpus.utterances[:2]
    out = tmp_path / "c.zarr"
    opts = ExtractionOptions(model=MODEL, noise=str(noise), snr_db=5.0, batch_size=2, **FAST)
    run_extraction(corpus, out, opts, progress=False)
    ident = CacheReader(out).attrs["identity"]
    assert ident["extraction"]["compute_dtype"] == "float32" and ident["extraction"]["device"] == "cpu"

    write_noise(noise, noise_root, sign=-1.0)  # other audio, same names and sizes
    assert {p.name: p.stat().st_size for p in noise.iterdir()} == sizes
    with pytest.raises(CacheError, match=r"other settings \(condition\.noise_fingerprint: '[0-9a-f]+' -> '[0-9a-f]+'\)"):
        run_extraction(corpus, out, opts, progress=False)

    write_noise(noise, noise_root)  # the original recordings again: accepted
    assert run_extraction(corpus, out, opts, progress=False).n_new == 0

    with pytest.raises(CacheError, match=r"other settings \(extraction\.compute_dtype: 'float32' -> 'bfloat16'\)"):
        run_extraction(corpus, out, ExtractionOptions(model=MODEL, noise=str(noise), snr_db=5.0, batch_size=2,
                                                      dtype="bfloat16", **FAST), progress=False)
