"""MELD reader: official train/dev/test split, 4 classes (joy -> happy), mp4 or pre-extracted wav clips.

Clip folders are listed once per split and matched by stem ``dia{D}_utt{U}``; no clip is opened,
so preparation is O(files). The mp4 clips are decoded at extraction time by ``load_audio`` (PyAV).
"""

from __future__ import annotations

import csv
from pathlib import Path

from pipeline.corpora.class_map import ClassMap, Rejection
from pipeline.corpora.manifest import Corpus, Utterance, load_corpus_config, register_corpus
from pipeline.errors import NserError

RELEASE_DIR = "MELD.Raw"
REQUIRED_COLUMNS = {"Utterance", "Speaker", "Emotion", "Dialogue_ID", "Utterance_ID"}


def _clips(root: Path, dirs: list[str], suffixes: list[str]) -> dict[str, Path]:
    """stem -> clip, earlier folders and earlier suffixes winning; macOS '._' files skipped."""
    found: dict[str, tuple[int, Path]] = {}
    rank = {s: i for i, s in enumerate(suffixes)}
    for d in reversed(dirs):  # earlier folders overwrite later ones
        folder = root / d
        if not folder.is_dir():
            continue
        best: dict[str, tuple[int, Path]] = {}
        for p in folder.iterdir():
            r = rank.get(p.suffix.lower())
            if r is None or p.name.startswith("._") or not p.is_file():
                continue
            if p.stem not in best or r < best[p.stem][0]:
                best[p.stem] = (r, p)
        found.update(best)
    return {stem: p for stem, (_, p) in found.items()}


@register_corpus("meld")
def read_meld(root: Path) -> Corpus:
    cfg = load_corpus_config("meld")
    class_map = ClassMap.from_config(cfg, "emotions", case_sensitive=False)
    if not any((root / s["csv"]).is_file() for s in cfg["splits"].values()) and (root / RELEASE_DIR).is_dir():
        root = root / RELEASE_DIR
    csvs = {name: root / s["csv"] for name, s in cfg["splits"].items()}
    if not any(p.is_file() for p in csvs.values()):
        raise NserError(f"no {', '.join(p.name for p in csvs.values())} under {root}: "
                        f"expected the {RELEASE_DIR} layout (label CSVs next to the clip folders)")
    utts: list[Utterance] = []
    rejected: list[Rejection] = []
    for split, spec in cfg["splits"].items():
        if not csvs[split].is_file():
            continue
        clips = _clips(root, spec["dirs"], cfg["suffixes"])
        # The released CSVs carry stray non-UTF-8 bytes in a few utterances; they only touch the text.
        with csvs[split].open(newline="", encoding="utf-8", errors="replace") as fh:
            reader = csv.DictReader(fh)
            lacking = REQUIRED_COLUMNS - set(reader.fieldnames or [])
            if lacking:
                raise NserError(f"{csvs[split]} lacks column(s) {sorted(lacking)}")
            for row in reader:
                if class_map.excludes(row["Emotion"]):
                    continue  # surprise, fear, disgust: never looked at further
                try:
                    stem = f"dia{int(row['Dialogue_ID'])}_utt{int(row['Utterance_ID'])}"
                except ValueError as exc:
                    raise NserError(f"{csvs[split]} line {reader.line_num}: bad Dialogue_ID/Utterance_ID") from exc
                expected = root / spec["dirs"][0] / f"{stem}.mp4"
                label = class_map.resolve_or_reject(row["Emotion"], rejected, f"{split}_{stem}", expected, split)
                if label is None:
                    continue  # rejected
                if stem not in clips:
                    rejected.append(Rejection(f"{split}_{stem}", expected, split, row["Emotion"].strip(),
                                              f"file not found: no clip {stem} in {', '.join(spec['dirs'])}"))
                    continue
                utts.append(Utterance(
                    utt_id=f"{split}_{stem}", path=clips[stem], speaker=row["Speaker"].strip(), label=label,
                    fold=split, transcript=" ".join(row["Utterance"].split()), language=cfg["language"],
                ))
    return Corpus("meld", utts, list(cfg["classes"]), cfg["language"], "split", rejected)
