"""IEMOCAP reader on a generated tree in the release layout and label-file formats."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipeline.audio import load_audio
from pipeline.corpora.manifest import read_corpus
from pipeline.errors import NserError
from tests.conftest import EMODB


@functools.lru_cache(maxsize=None)
def _emodb_files() -> tuple[Path, ...]:
    folder = EMODB / "audio"
    return tuple(sorted(folder.glob("*.flac"))[:12]) if folder.is_dir() else ()


def speech(index: int, seconds: float = 0.25) -> np.ndarray:
    """A bit of real EmoDB speech (16 kHz mono) when the shared data is there, else a tone."""
    n = int(seconds * 16000)
    if _emodb_files():
        x, _ = sf.read(_emodb_files()[index % len(_emodb_files())], dtype="float32")
        return x[4800:4800 + n]
    return (0.2 * np.sin(2 * np.pi * (150 + 10 * index) * np.arange(n) / 16000)).astype(np.float32)


# (turn suffix, EmoEvaluation code, text); speaker letter is the first letter of the suffix.
IMPRO = [("F000", "neu", "Excuse me."), ("M000", "hap", "Yeah, that's great."), ("F001", "exc", "Really?!"),
         ("M001", "sad", "I lost it."), ("F002", "ang", "Get out."), ("M002", "fru", "Whatever."),
         ("F003", "xxx", "Hm."), ("M003", "sur", "Oh!")]
SCRIPT = [("F000", "neu", "What time is it?"), ("M000", "exc", "We won!"), ("M001", "fea", "Who's there?"),
          ("F001", "dis", "Ugh.")]
# Per session: neutral 2, happy 3 (hap + 2 exc), sad 1, angry 1 -> 7 kept turns.


def _write_dialog(sdir: Path, dialog: str, turns, missing_wav: set[str] = frozenset()) -> None:
    evald = sdir / "dialog" / "EmoEvaluation"
    transd = sdir / "dialog" / "transcriptions"
    wavd = sdir / "sentences" / "wav" / dialog
    for d in (evald / "Categorical", transd, wavd):
        d.mkdir(parents=True, exist_ok=True)
    ev = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
    tr = []
    t = 6.2901
    for i, (suffix, code, text) in enumerate(turns):
        utt = f"{dialog}_{suffix}"
        ev += [f"[{t:.4f} - {t + 1.9456:.4f}]\t{utt}\t{code}\t[2.5000, 2.5000, 2.5000]",
               "C-E1:\tNeutral;\t()", "C-E2:\tNeutral;\t()", "A-E1:\tval 3; act 2; dom  2;\t()", ""]
        tr.append(f"{utt} [{t:08.4f}-{t + 1.9456:08.4f}]: {text}")
        if suffix not in missing_wav:
            sf.write(wavd / f"{utt}.wav", speech(i), 16000, subtype="PCM_16")
        t += 3.0
    tr.append("M: [LAUGHTER]")  # the release has such lines without a turn name
    (evald / f"{dialog}.txt").write_text("\n".join(ev) + "\n")
    (evald / "Categorical" / f"{dialog}_e1_cat.txt").write_text(f"{dialog}_F000 :Neutral state; ()\n")
    (evald / f"._{dialog}.txt").write_bytes(b"\x00\x05\x16\x07")  # macOS resource fork
    (transd / f"{dialog}.txt").write_text("\n".join(tr) + "\n")


@pytest.fixture(scope="module")
def iemocap_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("iemocap") / "IEMOCAP_full_release"
    for n in range(1, 6):
        sdir = root / f"Session{n}"
        _write_dialog(sdir, f"Ses0{n}F_impro01", IMPRO)
        # Session 1's script dialog has a labelled turn whose wav is missing; session 2's a code
        # outside the class map ("hpy"). Both are rejected entries, not silent omissions.
        extra = {1: [("F002", "neu", "Gone.")], 2: [("F002", "hpy", "Yay.")]}.get(n, [])
        _write_dialog(sdir, f"Ses0{n}M_script01_1", SCRIPT + extra, missing_wav={"F002"} if n == 1 else set())
    return root


def test_four_classes_folds_speakers(iemocap_root):
    c = read_corpus("iemocap", iemocap_root)
    print(c.summary())
    assert c.counts("label") == {"angry": 5, "happy": 15, "neutral": 10, "sad": 5}
    assert c.counts("fold") == {str(n): 7 for n in range(1, 6)}
    assert c.classes == ["neutral", "happy", "sad", "angry"] and c.protocol == "cv" and c.language == "en"
    assert set(c.counts("speaker")) == {f"Ses0{n}{g}" for n in range(1, 6) for g in "FM"}
    by_id = {u.utt_id: u for u in c.utterances}
    # hap and exc both map to happy
    assert by_id["Ses01F_impro01_M000"].label == "happy" and by_id["Ses01F_impro01_F001"].label == "happy"
    assert by_id["Ses03M_script01_1_M000"].label == "happy"
    # the turn's own gender letter decides the speaker, not the dialog prefix
    assert by_id["Ses02M_script01_1_F000"].speaker == "Ses02F"
    assert by_id["Ses02F_impro01_M001"].speaker == "Ses02M" and by_id["Ses02F_impro01_M001"].fold == "2"
    assert by_id["Ses01F_impro01_F000"].transcript == "Excuse me."
    assert by_id["Ses05M_script01_1_F000"].transcript == "What time is it?"
    excluded = {f"{d}_{s}" for n in range(1, 6) for d, turns in
                ((f"Ses0{n}F_impro01", IMPRO), (f"Ses0{n}M_script01_1", SCRIPT))
                for s, code, _ in turns if code in {"fru", "xxx", "sur", "fea", "dis"}}
    assert len(excluded) == 25 and not excluded & set(by_id)
    assert "Ses01M_script01_1_F002" not in by_id and "Ses02M_script01_1_F002" not in by_id
    rejected = {r.utt_id: r for r in c.rejected}
    assert set(rejected) == {"Ses01M_script01_1_F002", "Ses02M_script01_1_F002"}
    no_wav, typo = rejected["Ses01M_script01_1_F002"], rejected["Ses02M_script01_1_F002"]
    assert no_wav.fold == "1" and no_wav.label == "neu" and no_wav.reason.startswith("file not found")
    assert typo.fold == "2" and typo.label == "hpy" and "label 'hpy' outside the class map" in typo.reason
    assert typo.path.exists()  # its audio is there: the label is the problem
    assert "2 rejected" in c.summary()
    u = by_id["Ses04F_impro01_F002"]
    assert u.path == iemocap_root / "Session4/sentences/wav/Ses04F_impro01/Ses04F_impro01_F002.wav"
    assert u.label == "angry" and load_audio(u.path).source_rate == 16000


def test_parent_folder_and_idempotent_rescan(iemocap_root):
    a = read_corpus("iemocap", iemocap_root)
    b = read_corpus("iemocap", iemocap_root.parent)  # the folder holding IEMOCAP_full_release
    assert a.utterances == b.utterances and a.rejected == b.rejected


def test_wrong_root(tmp_path):
    (tmp_path / "Session6").mkdir()
    with pytest.raises(NserError, match=r"no Session1\.\.5 under .*IEMOCAP_full_release layout"):
        read_corpus("iemocap", tmp_path)
