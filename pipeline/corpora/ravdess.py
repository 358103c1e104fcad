"""RAVDESS reader: audio-only speech files, 4 classes (calm excluded), folds of 6 actors.

Everything comes from the 7-field file name, so the audio is never opened while scanning. Files
are found anywhere under the root (the zip's Actor_XX folders may sit one level down).
"""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.corpora.class_map import ClassMap
from pipeline.corpora.manifest import Corpus, Utterance, load_corpus_config, register_corpus
from pipeline.errors import NserError

_NAME = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")


@register_corpus("ravdess")
def read_ravdess(root: Path) -> Corpus:
    cfg = load_corpus_config("ravdess")
    fold_of = {actor: fold for fold, actors in cfg["folds"].items() for actor in actors}
    class_map = ClassMap.from_config(cfg, "emotions")
    utts, rejected = [], []
    n_named = 0
    for path in sorted(root.rglob("*.wav")):
        m = _NAME.match(path.stem)
        if not m or path.name.startswith("._"):
            continue
        n_named += 1
        modality, channel, emotion, _intensity, statement, _rep, actor = m.groups()
        if modality != cfg["modality"] or channel != cfg["vocal_channel"]:
            continue  # video files' audio and song
        if actor not in fold_of:
            continue
        label = class_map.resolve_or_reject(emotion, rejected, path.stem, path, fold_of[actor])
        if label is None:
            continue  # calm, fearful, disgust, surprised (the protocol), or rejected
        utts.append(Utterance(
            utt_id=path.stem, path=path, speaker=f"Actor_{actor}", label=label, fold=fold_of[actor],
            transcript=cfg["statements"].get(statement, ""), language=cfg["language"],
        ))
    if n_named == 0:
        raise NserError(f"no RAVDESS files (Actor_XX/03-01-EE-II-SS-RR-AA.wav) under {root}")
    return Corpus("ravdess", utts, list(cfg["classes"]), cfg["language"], "cv", rejected)
