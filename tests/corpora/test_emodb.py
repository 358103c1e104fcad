import shutil

from pipeline.corpora.manifest import read_corpus


def test_emodb_four_class_subset(emodb_root):
    c = read_corpus("emodb", emodb_root.parent)
    assert c.counts("label") == {"angry": 127, "happy": 71, "neutral": 79, "sad": 62}
    assert len(c.counts("speaker")) == 10 and len(c.counts("fold")) == 5
    by_fold: dict[str, set[str]] = {}
    for u in c.utterances:
        by_fold.setdefault(u.fold, set()).add(u.speaker)
    assert all(len(s) == 2 for s in by_fold.values())
    assert c.language == "de"
    u = next(u for u in c.utterances if u.utt_id == "03a01Fa")
    assert u.label == "happy" and u.transcript.startswith("Der Lappen")
    assert not any(u.utt_id[5] in "LEA" for u in c.utterances)  # boredom, disgust, fear stay out


def test_unknown_emotion_letter_is_a_rejected_entry(emodb_root, tmp_path):
    """Boredom (L) is left out by the protocol; a letter EmoDB does not have is an error for that file."""
    src = emodb_root / "03a01Wa.flac"
    for name in ("03a01Wa", "03a01La", "08a02Xb"):
        shutil.copy(src, tmp_path / f"{name}.flac")
    c = read_corpus("emodb", tmp_path)
    assert [u.utt_id for u in c.utterances] == ["03a01Wa"]
    assert [(r.utt_id, r.fold, r.label) for r in c.rejected] == [("08a02Xb", "0", "X")]
    assert "label 'X' outside the class map" in c.rejected[0].reason
