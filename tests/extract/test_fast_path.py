"""The fast extraction path stores exactly what the reference path stores (fp32 compute on CPU).

The reference (`WhisperLayerExtractor.extract_reference`, `ExtractionOptions(fast=False)`) is the
straightforward implementation: encoder on the batch, `generate()`, a full teacher-forced decoder
pass. The fast path shares the cross-attention keys/values, runs its own greedy loop, chunks the
encoder. Real EmoDB audio (clean and in babble), real tiny.en weights; equality is bitwise."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from pipeline.audio import load_audio
from pipeline.corpora.manifest import read_corpus
from pipeline.extract.run import ExtractionOptions, run_extraction
from pipeline.extract.whisper_layers import WhisperLayerExtractor
from pipeline.models.loader import load_whisper
from pipeline.noise import NoiseBank

MODEL = "bundled:tiny.en"


def _arrays(path) -> dict[str, np.ndarray]:
    group = zarr.open_group(str(path), mode="r")
    return {name: arr[...] for name, arr in group.members(max_depth=None) if isinstance(arr, zarr.Array)}


def _same(ref, new) -> None:
    assert len(ref) == len(new)
    for r, f in zip(ref, new):
        assert f.hypothesis == r.hypothesis
        assert np.array_equal(f.tokens, r.tokens) and f.tokens.dtype == r.tokens.dtype
        assert (f.hyp_loop, f.hyp_capped) == (r.hyp_loop, r.hyp_capped)
        for stack in ("encoder", "decoder"):
            a, b = getattr(r, stack), getattr(f, stack)
            assert len(a) == len(b)
            for i, (x, y) in enumerate(zip(a, b)):
                assert x.dtype == y.dtype == np.float16 and x.shape == y.shape, (stack, i)
                assert np.array_equal(x.view(np.uint16), y.view(np.uint16)), f"{stack} state {i} differs"


@pytest.fixture(scope="module")
def whisper(cache_dir):
    return load_whisper(MODEL)


@pytest.fixture(scope="module")
def clips(emodb_root, noise_root) -> list[np.ndarray]:
    """Six EmoDB clips: three clean, three in babble at 0 dB (other hypotheses, other lengths)."""
    corpus = read_corpus("emodb", emodb_root.parent)
    utts = corpus.utterances[:6]
    bank = NoiseBank(str(noise_root / "babble"), seed=0)
    out = []
    for k, u in enumerate(utts):
        x = load_audio(u.path).samples
        out.append(x if k < 3 else bank.mix(x, u.utt_id, 0.0).samples)
    return out


def test_fast_path_cache_equals_reference_cache(emodb_root, noise_root, tmp_path, cache_dir):
    """run_extraction with fast=True and fast=False write the same arrays (states, tokens, table)."""
    corpus = read_corpus("emodb", emodb_root.parent)
    corpus.utterances = corpus.utterances[:5]  # batches of 3 and 2
    paths = {}
    for fast in (False, True):
        paths[fast] = tmp_path / f"fast{fast}.zarr"
        run_extraction(corpus, paths[fast], ExtractionOptions(
            model=MODEL, noise=str(noise_root / "babble"), snr_db=5.0, batch_size=3, fast=fast), progress=False)
    ref, new = _arrays(paths[False]), _arrays(paths[True])
    assert sorted(ref) == sorted(new)
    for name in ref:
        assert ref[name].dtype == new[name].dtype, name
        if ref[name].dtype.kind == "f":
            assert np.array_equal(ref[name].view(np.uint8), new[name].view(np.uint8)), name
        else:
            assert np.array_equal(ref[name], new[name]), name
    assert len(ref["utterances/hypothesis"]) == 5 and any(h for h in ref["utterances/hypothesis"])


def test_fast_extract_equals_reference_padded_hypothesis(whisper, clips):
    """Six clips, the encoder one clip at a time (the cache test above runs the default, 4)."""
    ex = WhisperLayerExtractor(whisper, encoder_batch=1)
    assert ex._own_loop  # the own greedy loop, not generate(), is what is compared
    _same(ex.extract_reference(clips, [""] * len(clips)), ex.extract_fast(clips, [""] * len(clips)))


def test_fast_extract_equals_reference_transcripts(whisper, clips):
    ex = WhisperLayerExtractor(whisper, token_source="transcript")
    texts = ["The rag lies on the fridge.", "", "What is the matter with you, and why is this so long?", "Now."]
    _same(ex.extract_reference(clips[2:], texts), ex.extract_fast(clips[2:], texts))


def test_fast_extract_equals_reference_trimmed(whisper, clips):
    """Trimmed context, one length for all (one decoder batch) and mixed lengths (one per clip)."""
    ex = WhisperLayerExtractor(whisper, context="trimmed")
    _same(ex.extract_reference(clips[:3], [""] * 3), ex.extract_fast(clips[:3], [""] * 3))
    mixed = [clips[0][:16000], clips[1], clips[4][:24000]]
    _same(ex.extract_reference(mixed, [""] * 3), ex.extract_fast(mixed, [""] * 3))


def test_own_loop_only_for_rules_it_knows(whisper, clips, monkeypatch):
    """A generation setting the own loop does not implement sends the fast path back to generate()."""
    monkeypatch.setattr(whisper.model.generation_config, "no_repeat_ngram_size", 3)
    ex = WhisperLayerExtractor(whisper)
    assert not ex._own_loop
    _same(ex.extract_reference(clips[:2], ["", ""]), ex.extract_fast(clips[:2], ["", ""]))
