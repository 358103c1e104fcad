"""The synthetic espeak-ng demo corpus: balanced labels, speaker-independent folds, usable audio,
prosody that actually differs by emotion, and builds that are reproducible, skipped when
already done, and never left half-finished."""

from __future__ import annotations

import csv
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipeline.corpora import synthetic
from pipeline.corpora.synthetic import (
    EMOTIONS,
    MANIFEST_COLUMNS,
    EspeakNotFoundError,
    build_demo_corpus,
)

needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None,
    reason="espeak-ng binary not installed (apt-get install espeak-ng); cannot synthesize",
)

TINY = {"n_voices": 2, "n_sentences": 2, "n_folds": 2}


def _manifest(root: Path) -> list[dict]:
    with open(root / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def _mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng binary not installed (apt-get install espeak-ng)")
    return build_demo_corpus(tmp_path_factory.mktemp("corpus") / "demo", seed=0, **TINY)


@needs_espeak
def test_manifest_is_balanced_with_speaker_independent_folds(tiny: Path) -> None:
    with open(tiny / "manifest.csv", newline="") as f:
        assert tuple(next(csv.reader(f))) == MANIFEST_COLUMNS
    rows = _manifest(tiny)
    assert len(rows) == 2 * 2 * len(EMOTIONS)
    assert Counter(r["label"] for r in rows) == {e: 4 for e in EMOTIONS}
    assert sorted(Counter(r["speaker"] for r in rows).values()) == [8, 8]
    assert Counter(r["fold"] for r in rows) == {"0": 8, "1": 8}
    folds_of: dict[str, set[str]] = {}
    for r in rows:
        folds_of.setdefault(r["speaker"], set()).add(r["fold"])
    assert all(len(f) == 1 for f in folds_of.values())  # no speaker spans two folds
    assert {r["language"] for r in rows} == {"en"}
    assert all(r["transcript"] in synthetic.SENTENCES[:2] for r in rows)
    assert all(r["path"].startswith(f"audio/{r['speaker']}/") for r in rows)
    assert "synthetic" in (tiny / "README.txt").read_text().lower()
    assert json.loads((tiny / "corpus.json").read_text())["params"]["seed"] == 0


@needs_espeak
def test_audio_is_16k_mono_pcm_nonsilent_and_sane_length(tiny: Path) -> None:
    for row in _manifest(tiny):
        path = tiny / row["path"]
        info = sf.info(str(path))
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        audio, _ = sf.read(str(path), dtype="float32")
        assert np.max(np.abs(audio)) == pytest.approx(10 ** (-3 / 20), abs=0.01)  # -3 dBFS peak
        assert np.sqrt(np.mean(audio**2)) > 0.02
        assert 1.0 < len(audio) / 16000 < 6.0


@needs_espeak
def test_angry_is_spoken_faster_than_sad(tiny: Path) -> None:
    """Speaking duration of the same sentence by the same voice: the prosody reaches the audio."""
    seconds = {(r["speaker"], r["transcript"], r["label"]): sf.info(str(tiny / r["path"])).duration
               for r in _manifest(tiny)}
    pairs = {(s, t) for s, t, _ in seconds}
    for s, t in pairs:
        assert seconds[s, t, "sad"] > 1.25 * seconds[s, t, "angry"], (s, t)


@needs_espeak
def test_same_parameters_are_not_rebuilt(tiny: Path) -> None:
    before = _mtimes(tiny)
    assert build_demo_corpus(tiny, seed=0, **TINY) == tiny
    assert _mtimes(tiny) == before


@needs_espeak
def test_overwrite_rebuilds_identical_audio(tiny: Path, tmp_path: Path) -> None:
    copy = tmp_path / "demo"
    shutil.copytree(tiny, copy)
    rel = _manifest(copy)[0]["path"]
    before = (copy / rel).stat().st_mtime_ns
    build_demo_corpus(copy, seed=0, overwrite=True, **TINY)
    assert (copy / rel).stat().st_mtime_ns != before
    assert (copy / rel).read_bytes() == (tiny / rel).read_bytes()


@needs_espeak
def test_different_seed_replaces_corpus_with_different_audio(tiny: Path, tmp_path: Path) -> None:
    copy = tmp_path / "demo"
    shutil.copytree(tiny, copy)
    build_demo_corpus(copy, seed=1, **TINY)
    assert json.loads((copy / "corpus.json").read_text())["params"]["seed"] == 1
    assert _manifest(copy) == _manifest(tiny)  # same utterances and labels...
    changed = [r["path"] for r in _manifest(copy)
               if (copy / r["path"]).read_bytes() != (tiny / r["path"]).read_bytes()]
    assert len(changed) == len(_manifest(copy))  # ...every one re-rendered with new jitter
    assert [p.name for p in tmp_path.iterdir()] == ["demo"]  # no staging or old folders left


@needs_espeak
def test_interrupted_build_leaves_nothing_that_looks_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = synthetic._synthesize
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) > 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(synthetic, "_synthesize", failing)
    with pytest.raises(KeyboardInterrupt):
        build_demo_corpus(tmp_path / "demo", **TINY)
    assert list(tmp_path.iterdir()) == []


def test_missing_espeak_raises_with_install_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(synthetic.shutil, "which", lambda name: None)
    with pytest.raises(EspeakNotFoundError, match="apt-get install espeak-ng") as exc:
        build_demo_corpus(tmp_path / "demo", **TINY)
    assert isinstance(exc.value, RuntimeError)
    assert not (tmp_path / "demo").exists()


def test_refuses_to_replace_a_folder_that_is_not_a_corpus(tmp_path: Path) -> None:
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "thesis.tex").write_text("precious")
    with pytest.raises(FileExistsError, match="not a demo corpus"):
        build_demo_corpus(tmp_path / "demo", **TINY)
    assert (tmp_path / "demo" / "thesis.tex").read_text() == "precious"


@pytest.mark.parametrize(
    "bad", [{"n_voices": 0}, {"n_sentences": 99}, {"n_voices": 2, "n_folds": 3}]
)
def test_rejects_impossible_parameters(tmp_path: Path, bad: dict) -> None:
    with pytest.raises(ValueError):
        build_demo_corpus(tmp_path / "demo", **bad)
