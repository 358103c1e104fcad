"""CASIA reader (Mandarin): ``<speaker>/<emotion>/<id>.wav``, 6 emotions, one fold per speaker.

Sentence ids repeat across speakers and emotions, so the utterance id joins all three. Only
folders are listed (O(files)); the public release has no transcripts, so they stay empty.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.corpora.class_map import ClassMap
from pipeline.corpora.manifest import Corpus, Utterance, load_corpus_config, register_corpus
from pipeline.errors import NserError
from pipeline.noise import NOISE_SUFFIXES


def _subdirs(folder: Path) -> dict[str, Path]:
    """lower-cased name -> folder: the released speaker folders differ in capitalisation."""
    return {p.name.lower(): p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")}


@register_corpus("casia")
def read_casia(root: Path) -> Corpus:
    cfg = load_corpus_config("casia")
    class_map = ClassMap.from_config(cfg, "emotions", case_sensitive=False)
    fold_of = {spk: fold for fold, spks in cfg["folds"].items() for spk in spks}
    wanted = {spk.lower(): spk for spk in fold_of}
    base = next((c for c in [root, *sorted(_subdirs(root).values())] if wanted.keys() & _subdirs(c).keys()), None)
    if base is None:
        raise NserError(f"no CASIA speaker folders ({', '.join(fold_of)}) under {root}: "
                        "expected <speaker>/<emotion>/<id>.wav")
    utts, rejected = [], []
    for key, spk_dir in sorted(_subdirs(base).items()):
        speaker = wanted.get(key)
        if speaker is None:
            continue
        for emo_key, emo_dir in sorted(_subdirs(spk_dir).items()):
            for path in sorted(emo_dir.iterdir()):
                if path.suffix.lower() not in NOISE_SUFFIXES or path.name.startswith("._") or not path.is_file():
                    continue
                label = class_map.resolve_or_reject(emo_dir.name, rejected, f"{speaker}_{emo_key}_{path.stem}",
                                                    path, fold_of[speaker])
                if label is None:
                    continue  # an excluded or unknown emotion folder
                utts.append(Utterance(
                    utt_id=f"{speaker}_{emo_key}_{path.stem}", path=path, speaker=speaker, label=label,
                    fold=fold_of[speaker], language=cfg["language"],
                ))
    return Corpus("casia", utts, list(cfg["classes"]), cfg["language"], "cv", rejected)
