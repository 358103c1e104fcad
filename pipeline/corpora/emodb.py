"""EmoDB reader: any audio format soundfile reads, names like ``03a01Fa.wav`` anywhere under the root."""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.corpora.class_map import ClassMap
from pipeline.corpora.manifest import Corpus, Utterance, load_corpus_config, register_corpus
from pipeline.noise import NOISE_SUFFIXES

_NAME = re.compile(r"^(\d\d)([ab]\d\d)([A-Z])([a-z])$")


@register_corpus("emodb")
def read_emodb(root: Path) -> Corpus:
    cfg = load_corpus_config("emodb")
    class_map = ClassMap.from_config(cfg, "emotion_letters")
    fold_of = {spk: fold for fold, spks in cfg["folds"].items() for spk in spks}
    utts, rejected = [], []
    for path in sorted(root.rglob("*")):
        m = _NAME.match(path.stem)
        if not m or path.suffix.lower() not in NOISE_SUFFIXES:
            continue
        speaker, text, letter, _version = m.groups()
        if speaker not in fold_of:
            continue  # not an EmoDB speaker: a file that only looks like one
        label = class_map.resolve_or_reject(letter, rejected, path.stem, path, fold_of[speaker])
        if label is None:
            continue  # boredom, disgust, fear (the protocol), or rejected
        utts.append(Utterance(
            utt_id=path.stem, path=path, speaker=speaker, label=label,
            fold=fold_of[speaker], transcript=cfg["transcripts"].get(text, ""), language=cfg["language"],
        ))
    return Corpus("emodb", utts, list(cfg["classes"]), cfg["language"], "cv", rejected)
