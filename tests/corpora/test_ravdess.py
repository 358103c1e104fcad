"""RAVDESS reader on a generated ``Actor_XX/MM-VV-EE-II-SS-RR-AA.wav`` tree (all 24 actors)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipeline.audio import load_audio
from pipeline.corpora.manifest import read_corpus
from pipeline.errors import NserError
from tests.conftest import EMODB

# Per actor: (modality, channel, emotion, intensity, statement, repetition); the first four are kept.
FILES = [("03", "01", "01", "01", "01", "01"),   # neutral (only normal intensity exists)
         ("03", "01", "03", "02", "02", "01"),   # happy, strong
         ("03", "01", "04", "01", "01", "02"),   # sad
         ("03", "01", "05", "02", "02", "02"),   # angry
         ("03", "01", "02", "01", "01", "01"),   # calm: excluded from the 4-class subset
         ("03", "01", "06", "01", "02", "01"),   # fearful: excluded
         ("03", "02", "03", "01", "01", "01"),   # song: excluded
         ("01", "01", "05", "01", "01", "01"),   # audio-video modality: excluded
         ("03", "01", "09", "01", "01", "01")]   # no such emotion code: a rejected entry


def speech(seconds: float = 0.1) -> np.ndarray:
    n = int(seconds * 16000)
    src = EMODB / "audio" / "03a01Nc.flac"
    if src.is_file():
        return sf.read(src, dtype="float32")[0][4800:4800 + n]
    return (0.2 * np.sin(2 * np.pi * 200 * np.arange(n) / 16000)).astype(np.float32)


@pytest.fixture(scope="module")
def ravdess_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ravdess") / "Audio_Speech_Actors_01-24"
    x = speech()
    for actor in range(1, 25):
        d = root / f"Actor_{actor:02d}"
        d.mkdir(parents=True)
        for fields in FILES:
            sf.write(d / f"{'-'.join(fields)}-{actor:02d}.wav", x, 16000, subtype="PCM_16")
        (d / "README.txt").write_text("not audio")
    return root.parent


def test_four_classes_actor_folds(ravdess_root):
    c = read_corpus("ravdess", ravdess_root)
    print(c.summary())
    assert c.counts("label") == {"angry": 24, "happy": 24, "neutral": 24, "sad": 24}
    assert c.counts("fold") == {str(k): 24 for k in range(4)}
    assert len(c.counts("speaker")) == 24 and c.language == "en" and c.protocol == "cv"
    actors: dict[str, set[int]] = {}
    for u in c.utterances:
        actors.setdefault(u.fold, set()).add(int(u.speaker.removeprefix("Actor_")))
    for fold, ids in actors.items():
        assert len(ids) == 6
        assert sum(i % 2 for i in ids) == 3  # odd ids are male: 3 male + 3 female per fold
    assert len(set().union(*actors.values())) == 24  # speaker-independent: every actor in one fold only
    by_id = {u.utt_id: u for u in c.utterances}
    u = by_id["03-01-03-02-02-01-07"]
    assert (u.label, u.speaker, u.fold) == ("happy", "Actor_07", "1")
    assert u.transcript == "Dogs are sitting by the door"
    assert by_id["03-01-01-01-01-01-24"].transcript == "Kids are talking by the door"
    assert not any(uid.split("-")[2] in ("02", "06") for uid in by_id)  # calm, fearful
    assert not any(uid.split("-")[1] == "02" or uid.startswith("01-") for uid in by_id)  # song, video
    assert load_audio(u.path).source_rate == 16000
    assert len(c.rejected) == 24 and {r.label for r in c.rejected} == {"09"}
    r = next(r for r in c.rejected if r.utt_id == "03-01-09-01-01-01-13")
    assert r.fold == "2" and r.path.is_file() and "label '09' outside the class map" in r.reason


def test_wrong_root(tmp_path):
    (tmp_path / "Actor_01").mkdir()
    with pytest.raises(NserError, match="no RAVDESS files"):
        read_corpus("ravdess", tmp_path)
