"""MELD reader and mp4 decoding, on a generated MELD.Raw tree with real AAC-in-mp4 clips made by PyAV."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly

from pipeline.audio import load_audio
from pipeline.corpora.manifest import read_corpus
from pipeline.errors import AudioError, NserError
from tests.conftest import EMODB, need

av = pytest.importorskip("av")

COLUMNS = ["Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID", "Season",
           "Episode", "StartTime", "EndTime"]
# split -> [(dialogue, utterance, emotion, speaker, text, clip kind)]; kind: mp4, wav, both, none, corrupt
ROWS = {
    "train": [(0, 0, "neutral", "Chandler", "Also I was the point person.", "mp4"),
              (0, 1, "joy", "Monica", "That's great!", "mp4"),
              (0, 2, "surprise", "Ross", "What?", "mp4"),
              (1, 0, "sadness", "Rachel", "I miss him.", "mp4"),
              (1, 1, "anger", "Ross", "We were on a break!", "mp4"),
              (1, 2, "fear", "Joey", "Is it gone?", "mp4"),
              (2, 0, "disgust", "Phoebe", "Eww.", "mp4"),
              (2, 1, "joy", "Joey", "How you doin'?", "none"),
              (3, 0, "neutral", "Monica", "Okay.", "corrupt")],
    "dev": [(0, 0, "joy", "Phoebe", "Smelly cat!", "mp4"),
            (0, 1, "neutral", "Rachel", "Hi.", "mp4"),
            (2, 0, "Joyful", "Ross", "Yes!", "mp4")],  # an emotion outside the class map
    "test": [(0, 0, "anger", "Ross", "No!", "mp4"),
             (0, 1, "sadness", "Chandler", "Could I BE any sadder?", "wav"),
             (1, 0, "neutral", "Monica", "Right.", "both")],
}
# Official folder for train/test, the short alias for dev.
DIRS = {"train": "train_splits", "dev": "dev", "test": "output_repeated_splits_test"}


def real_speech(seconds: float) -> np.ndarray:
    x, _ = sf.read(need(EMODB / "audio") / "03a01Fa.flac", dtype="float32")
    return x[:int(seconds * 16000)]


def speech_or_tone(seconds: float) -> np.ndarray:
    """Real speech for the clips when the shared data is there; the split/label tests also run without."""
    if (EMODB / "audio").is_dir():
        return real_speech(seconds)
    return (0.2 * np.sin(2 * np.pi * 220 * np.arange(int(seconds * 16000)) / 16000)).astype(np.float32)


def write_mp4(path: Path, speech16k: np.ndarray, rate: int = 48000) -> None:
    """AAC stereo in mp4, like MELD's clips (video omitted: the reader only wants the audio stream)."""
    up = resample_poly(speech16k, rate // 16000, 1).astype(np.float32)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=rate, layout="stereo")
        frame = av.AudioFrame.from_ndarray(np.stack([up, 0.5 * up]), format="fltp", layout="stereo")
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)


@pytest.fixture(scope="module")
def meld_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("meld") / "MELD.Raw"
    speech = speech_or_tone(0.5)
    for split, rows in ROWS.items():
        clips = root / DIRS[split]
        clips.mkdir(parents=True)
        with (root / f"{split}_sent_emo.csv").open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(COLUMNS)
            for i, (dia, utt, emo, spk, text, kind) in enumerate(rows):
                w.writerow([i + 1, text, spk, emo, "neutral", dia, utt, 8, 21, "00:16:16,059", "00:16:21,731"])
                stem = f"dia{dia}_utt{utt}"
                if kind in ("mp4", "both"):
                    write_mp4(clips / f"{stem}.mp4", speech)
                if kind in ("wav", "both"):
                    sf.write(clips / f"{stem}.wav", speech, 16000)
                if kind == "corrupt":
                    (clips / f"{stem}.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
        (clips / "._dia0_utt0.mp4").write_bytes(b"\x00\x05\x16\x07")  # macOS resource fork
    # The released CSVs contain stray cp1252 bytes; they must not stop the reader.
    with (root / "dev_sent_emo.csv").open("ab") as fh:
        fh.write(b"3,Oh my God\x92s,Ross,anger,negative,1,0,8,21,00:00:01,00:00:02\r\n")
    write_mp4(root / DIRS["dev"] / "dia1_utt0.mp4", speech)
    return root


def test_split_assignment_and_classes(meld_root):
    c = read_corpus("meld", meld_root)
    print(c.summary())
    assert c.protocol == "split" and c.classes == ["neutral", "happy", "sad", "angry"]
    assert c.counts("fold") == {"dev": 3, "test": 3, "train": 5}
    assert c.counts("label") == {"angry": 3, "happy": 2, "neutral": 4, "sad": 2}
    by_id = {u.utt_id: u for u in c.utterances}
    assert by_id["train_dia0_utt1"].label == "happy" and by_id["dev_dia0_utt0"].label == "happy"  # joy
    assert by_id["train_dia1_utt0"].label == "sad" and by_id["test_dia0_utt0"].label == "angry"
    assert not {"train_dia0_utt2", "train_dia1_utt2", "train_dia2_utt0"} & set(by_id)  # surprise/fear/disgust
    assert by_id["train_dia1_utt1"].transcript == "We were on a break!"
    assert by_id["train_dia1_utt1"].speaker == "Ross"
    # the same dialogue/utterance numbers in different splits are different utterances
    assert by_id["train_dia0_utt0"].path.parent.name == "train_splits"
    assert by_id["dev_dia0_utt0"].path.parent.name == "dev"
    assert by_id["test_dia0_utt1"].path.suffix == ".wav"  # pre-extracted audio
    assert by_id["test_dia1_utt0"].path.suffix == ".wav"  # preferred over the mp4 with the same stem
    assert by_id["dev_dia1_utt0"].transcript.startswith("Oh my God")
    # a labelled clip that is missing, and a label outside the map: rejected entries with their split
    rejected = {r.utt_id: r for r in c.rejected}
    assert set(rejected) == {"train_dia2_utt1", "dev_dia2_utt0"}
    assert rejected["train_dia2_utt1"].reason.startswith("file not found: no clip dia2_utt1")
    assert rejected["dev_dia2_utt0"].fold == "dev" and rejected["dev_dia2_utt0"].label == "Joyful"
    assert "label 'Joyful' outside the class map" in rejected["dev_dia2_utt0"].reason


def test_mp4_decodes_to_16k_mono(meld_root):
    c = read_corpus("meld", meld_root)
    u = next(u for u in c.utterances if u.utt_id == "train_dia0_utt0")
    a = load_audio(u.path)
    assert (a.source_rate, a.source_channels) == (48000, 2)
    assert a.samples.dtype == np.float32 and a.samples.ndim == 1
    assert 0.5 <= a.duration < 0.6  # AAC adds priming/padding of a few 1024-sample frames
    ref = real_speech(0.5) * 0.75  # mean of the two channels (1.0 and 0.5 x speech)
    xc = np.correlate(a.samples[:len(ref) + 1600], ref, mode="valid")
    lag = int(np.argmax(xc))
    seg = a.samples[lag:lag + len(ref)]
    assert np.corrcoef(seg, ref)[0, 1] > 0.95
    assert abs(10 * np.log10(np.mean(seg ** 2) / np.mean(ref ** 2))) < 1.0


def test_corrupt_mp4_is_a_per_file_error(meld_root):
    c = read_corpus("meld", meld_root)
    bad = next(u for u in c.utterances if u.utt_id == "train_dia3_utt0")  # scanning never opens clips
    with pytest.raises(AudioError, match=r"dia3_utt0\.mp4: unreadable or corrupt"):
        load_audio(bad.path)


def test_wrong_root(tmp_path):
    with pytest.raises(NserError, match="train_sent_emo.csv.*MELD.Raw layout"):
        read_corpus("meld", tmp_path)
