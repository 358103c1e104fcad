"""CASIA reader on a generated ``<speaker>/<emotion>/<id>.wav`` tree."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipeline.audio import load_audio
from pipeline.corpora.manifest import read_corpus
from pipeline.errors import NserError
from tests.conftest import EMODB

# Folder names as released, one with other capitalisation to check case-insensitive matching.
SPEAKERS = ["liuchanhg", "Wangzhe", "zhaoquanyin", "ZhaoZuoxiang"]
EMOTIONS = ["angry", "fear", "happy", "neutral", "sad", "surprise"]


def speech(seconds: float = 0.2) -> np.ndarray:
    n = int(seconds * 16000)
    src = EMODB / "audio" / "03a01Wa.flac"
    if src.is_file():
        return sf.read(src, dtype="float32")[0][4800:4800 + n]
    return (0.2 * np.sin(2 * np.pi * 200 * np.arange(n) / 16000)).astype(np.float32)


@pytest.fixture(scope="module")
def casia_root(tmp_path_factory) -> Path:
    top = tmp_path_factory.mktemp("casia")
    root = top / "CASIA database"  # readers accept the folder holding the speakers one level down
    x = speech()
    for spk in SPEAKERS:
        for emo in EMOTIONS:
            d = root / spk / emo
            d.mkdir(parents=True)
            for sent in (201, 202):
                sf.write(d / f"{sent}.wav", x, 16000, subtype="PCM_16")
            (d / "._201.wav").write_bytes(b"\x00\x05\x16\x07")
            (d / "notes.txt").write_text("not audio")
        (root / spk / "unknown").mkdir()
        sf.write(root / spk / "unknown" / "201.wav", x, 16000)  # not an emotion of the map
    (root / "other_speaker" / "angry").mkdir(parents=True)
    sf.write(root / "other_speaker" / "angry" / "201.wav", x, 16000)
    return top


def test_six_classes_speaker_folds(casia_root):
    c = read_corpus("casia", casia_root)
    print(c.summary())
    assert c.language == "zh" and c.protocol == "cv"
    assert c.classes == ["neutral", "happy", "sad", "angry", "fear", "surprise"]
    assert c.counts("label") == {e: 8 for e in EMOTIONS}
    assert c.counts("fold") == {str(k): 12 for k in range(4)}
    assert c.counts("speaker") == {s: 12 for s in ["ZhaoZuoxiang", "liuchanhg", "wangzhe", "zhaoquanyin"]}
    folds = {u.speaker: u.fold for u in c.utterances}
    assert folds == {"liuchanhg": "0", "wangzhe": "1", "zhaoquanyin": "2", "ZhaoZuoxiang": "3"}
    ids = [u.utt_id for u in c.utterances]
    assert len(set(ids)) == len(ids) == 48 and "wangzhe_fear_202" in ids
    u = next(u for u in c.utterances if u.utt_id == "zhaoquanyin_surprise_201")
    assert u.label == "surprise" and u.language == "zh" and u.transcript == ""
    assert load_audio(u.path).source_rate == 16000
    # files in a folder that is not an emotion of the map: one rejected entry each, with its fold
    assert sorted((r.utt_id, r.fold, r.label) for r in c.rejected) == [
        ("ZhaoZuoxiang_unknown_201", "3", "unknown"), ("liuchanhg_unknown_201", "0", "unknown"),
        ("wangzhe_unknown_201", "1", "unknown"), ("zhaoquanyin_unknown_201", "2", "unknown")]
    assert all("label 'unknown' outside the class map" in r.reason for r in c.rejected)


def test_wrong_root(tmp_path):
    (tmp_path / "Actor_01").mkdir()
    with pytest.raises(NserError, match="no CASIA speaker folders"):
        read_corpus("casia", tmp_path)
