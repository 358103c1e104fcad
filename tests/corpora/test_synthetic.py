"""The synthetic espeak-ng demo corpus: balanced labels, speaker-independent folds, usable audio,
prosody that actually differs by emotion, and builds that are reproducible, skipped when
already done, and never left half-finished. The engine is libespeak-ng from the espeakng-loader
wheel (an install requirement), so nothing here needs or skips for a system espeak-ng."""

from __future__ import annotations

import csv
import json
import shutil
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipeline.corpora import synthetic
from pipeline.corpora.synthetic import (
    EMOTIONS,
    MANIFEST_COLUMNS,
    EMOTION_PROSODY,
    SENTENCES,
    VOICES,
    EspeakNotFoundError,
    build_demo_corpus,
    find_espeak,
)

TINY = {"n_voices": 2, "n_sentences": 2, "n_folds": 2}


def _manifest(root: Path) -> list[dict]:
    with open(root / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def _mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo_corpus(tmp_path_factory.mktemp("corpus") / "demo", seed=0, **TINY)


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
    meta = json.loads((tiny / "corpus.json").read_text())
    assert meta["params"]["seed"] == 0
    # The engine and its origin are on record, e.g. "eSpeak NG 1.52.0 (libespeak-ng from
    # espeakng-loader 0.2.4)", in corpus.json and in the README.
    assert meta["espeak_ng"].startswith("eSpeak NG 1.") and "espeakng-loader" in meta["espeak_ng"]
    assert meta["espeak_ng"] in (tiny / "README.txt").read_text()


def test_audio_is_16k_mono_pcm_nonsilent_and_sane_length(tiny: Path) -> None:
    for row in _manifest(tiny):
        path = tiny / row["path"]
        info = sf.info(str(path))
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        audio, _ = sf.read(str(path), dtype="float32")
        assert np.max(np.abs(audio)) == pytest.approx(10 ** (-3 / 20), abs=0.01)  # -3 dBFS peak
        assert np.sqrt(np.mean(audio**2)) > 0.02
        assert 1.0 < len(audio) / 16000 < 6.0


def test_angry_is_spoken_faster_than_sad(tiny: Path) -> None:
    """Speaking duration of the same sentence by the same voice: the prosody reaches the audio."""
    seconds = {(r["speaker"], r["transcript"], r["label"]): sf.info(str(tiny / r["path"])).duration
               for r in _manifest(tiny)}
    pairs = {(s, t) for s, t, _ in seconds}
    for s, t in pairs:
        assert seconds[s, t, "sad"] > 1.25 * seconds[s, t, "angry"], (s, t)


def test_same_parameters_are_not_rebuilt(tiny: Path) -> None:
    before = _mtimes(tiny)
    assert build_demo_corpus(tiny, seed=0, **TINY) == tiny
    assert _mtimes(tiny) == before


def test_overwrite_rebuilds_identical_audio(tiny: Path, tmp_path: Path) -> None:
    copy = tmp_path / "demo"
    shutil.copytree(tiny, copy)
    rel = _manifest(copy)[0]["path"]
    before = (copy / rel).stat().st_mtime_ns
    build_demo_corpus(copy, seed=0, overwrite=True, **TINY)
    assert (copy / rel).stat().st_mtime_ns != before
    assert (copy / rel).read_bytes() == (tiny / rel).read_bytes()


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
    monkeypatch.setitem(sys.modules, "espeakng_loader", None)  # import fails as if not installed
    with pytest.raises(EspeakNotFoundError, match="pip install espeakng-loader") as exc:
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


def _f0_hz(audio: np.ndarray, sr: int = 16000) -> float:
    """Median pitch of the loud, clearly periodic 40 ms frames (autocorrelation, 60-400 Hz)."""
    frame, hop, lo, hi = int(0.04 * sr), int(0.01 * sr), sr // 400, sr // 60
    x = audio.astype(np.float64)
    floor = 0.03 * np.max(np.abs(x))
    pitches = []
    for i in range(0, len(x) - frame, hop):
        w = x[i: i + frame] * np.hanning(frame)
        if np.sqrt(np.mean(w**2)) < floor:
            continue
        ac = np.correlate(w, w, "full")[frame - 1:]
        lag = lo + int(np.argmax(ac[lo:hi]))
        if ac[lag] > 0.5 * ac[0]:
            pitches.append(sr / lag)
    assert len(pitches) > 20, "too few voiced frames to measure pitch"
    return float(np.median(pitches))


def _hide_espeak_binary(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert shutil.which("espeak-ng") is None


def test_synthesizes_without_any_system_espeak(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no espeak-ng program on PATH, the wheel's library still renders every emotion's
    prosody: real audio (peak, level, pads, length), sad slower and lower than happy/angry."""
    _hide_espeak_binary(monkeypatch, tmp_path)
    engine = find_espeak()
    assert Path(engine.library).is_file() and (Path(engine.data_dir) / "phontab").is_file()
    audio = {e: synthetic._synthesize(engine, "en-us+m3", SENTENCES[0], p)
             for e, p in EMOTION_PROSODY.items()}
    pad = int(synthetic.PAD_SECONDS * 16000)
    for emotion, a in audio.items():
        assert a.dtype == np.float32
        assert np.max(np.abs(a)) == pytest.approx(10 ** (-3 / 20), rel=1e-4), emotion
        assert not a[:pad].any() and not a[-pad:].any()  # identical silent pads
        speech = a[pad:-pad]
        frames = speech[: len(speech) // 320 * 320].reshape(-1, 320)  # 20 ms
        loud = np.sqrt(np.mean(frames**2, axis=1)) > 0.01
        assert loud.mean() > 0.6, emotion  # speech throughout, not clicks in silence
        assert np.sqrt(np.mean(speech**2)) > 0.05, emotion
        assert 1.5 < len(a) / 16000 < 4.5, emotion
    seconds = {e: len(a) / 16000 for e, a in audio.items()}
    assert seconds["sad"] > 1.4 * seconds["angry"]
    assert seconds["sad"] > seconds["neutral"] > seconds["happy"] > seconds["angry"]
    f0 = {e: _f0_hz(a) for e, a in audio.items()}
    assert f0["happy"] > 1.2 * f0["sad"], f0  # pitch +25% vs -15%
    assert f0["sad"] < f0["neutral"] < f0["happy"], f0


def test_every_voice_is_its_own_speaker() -> None:
    """Each voice+variant is found in the wheel's data (an unknown variant would fall back
    silently to the plain voice): all render differently, female variants at a higher pitch."""
    engine = find_espeak()
    rendered = {v: synthetic._synthesize(engine, v, SENTENCES[1], EMOTION_PROSODY["neutral"])
                for v in VOICES}
    assert len({a.tobytes() for a in rendered.values()}) == len(VOICES)
    for voice, a in rendered.items():
        pitch = _f0_hz(a)
        if "+f" in voice:
            assert pitch > 150, (voice, pitch)
        else:
            assert pitch < 140, (voice, pitch)


def test_each_utterance_is_rendered_from_a_fresh_engine() -> None:
    """libespeak-ng carries state from one utterance into the next inside a process; rendering
    each in its own worker makes an utterance independent of what was synthesized before it."""
    engine = find_espeak()
    args = ("en+f2", SENTENCES[2], EMOTION_PROSODY["sad"])  # a breathy voice: uses the noise source
    first = synthetic._synthesize(engine, *args)
    synthetic._synthesize(engine, "en-us+m3", SENTENCES[3], EMOTION_PROSODY["angry"])
    assert synthetic._synthesize(engine, *args).tobytes() == first.tobytes()


def test_engine_failure_names_the_voice_and_the_cause() -> None:
    with pytest.raises(RuntimeError, match=r"voice 'xx-nope'.*does not exist"):
        synthetic._synthesize(find_espeak(), "xx-nope", "Hello.", EMOTION_PROSODY["neutral"])
