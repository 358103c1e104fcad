"""Any corpus described by ``DIR/manifest.csv``: columns path,label,speaker [,fold,transcript,language].

With ``DIR/classes.yaml`` (see `read_class_map_file`) the classes and their order are declared,
raw labels can be mapped and excluded, and a label outside that map is a per-file error. Without
it, the classes are the labels found, in order of first appearance.
"""

from __future__ import annotations

import csv
from pathlib import Path

from pipeline.corpora.class_map import read_class_map_file
from pipeline.corpora.manifest import Corpus, Utterance, check_speaker_independent, register_corpus, speaker_folds
from pipeline.errors import NserError

DEFAULT_FOLDS = 5
CLASS_MAP_FILE = "classes.yaml"


@register_corpus("csv")
def read_csv_manifest(root: Path) -> Corpus:
    manifest = root / "manifest.csv"
    if not manifest.exists():
        raise NserError(f"{manifest} not found: the csv corpus needs columns path,label,speaker")
    with manifest.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    missing = {"path", "label", "speaker"} - set(rows[0] if rows else {})
    if missing:
        raise NserError(f"{manifest} lacks column(s) {sorted(missing)}")
    class_map = read_class_map_file(root / CLASS_MAP_FILE) if (root / CLASS_MAP_FILE).is_file() else None
    folds = speaker_folds((r["speaker"] for r in rows), min(DEFAULT_FOLDS, len({r["speaker"] for r in rows})))
    blank = [i + 1 for i, r in enumerate(rows) if not (r.get("fold") or "").strip()]
    if 0 < len(blank) < len(rows):  # the dealt folds and the given ones would mix: a speaker could land in two
        raise NserError(f"{manifest}: the fold column is empty in {len(blank)} row(s) (data rows {blank[:5]}) and "
                        "filled in the others: fill it in every row, or leave it empty to deal speakers into folds")
    utts, rejected, languages = [], [], set()
    classes: list[str] = list(class_map.classes) if class_map else []
    for r in rows:
        rel = Path(r["path"])
        utt_id = str(rel.with_suffix("")).replace("/", "__")
        fold = (r.get("fold") or folds[r["speaker"]]).strip()
        raw = r["label"].strip()
        if class_map is None:
            label = raw
            if label not in classes:
                classes.append(label)
        else:
            label = class_map.resolve_or_reject(raw, rejected, utt_id, root / rel, fold, f" [{CLASS_MAP_FILE}]")
            if label is None:
                continue  # excluded by the user's protocol, or rejected
        lang = (r.get("language") or "en").strip()
        languages.add(lang)
        utts.append(Utterance(
            utt_id=utt_id, path=root / rel, speaker=r["speaker"], label=label, fold=fold,
            transcript=r.get("transcript") or "", language=lang,
        ))
    language = languages.pop() if len(languages) == 1 else "multi"
    # before any audio is read: a speaker in two folds would be in its own test fold's training part
    check_speaker_independent([u.fold for u in utts], [u.speaker for u in utts])
    return Corpus(root.name or "csv", utts, classes, language, "cv", rejected)
