"""Any corpus described by ``DIR/manifest.csv``: columns path,label,speaker [,fold,transcript,language]."""

from __future__ import annotations

import csv
from pathlib import Path

from pipeline.corpora.manifest import Corpus, Utterance, register_corpus, speaker_folds
from pipeline.errors import NserError

DEFAULT_FOLDS = 5


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
    folds = speaker_folds((r["speaker"] for r in rows), min(DEFAULT_FOLDS, len({r["speaker"] for r in rows})))
    utts, classes, languages = [], [], set()
    for r in rows:
        rel = Path(r["path"])
        lang = (r.get("language") or "en").strip()
        languages.add(lang)
        if r["label"] not in classes:
            classes.append(r["label"])
        utts.append(Utterance(
            utt_id=str(rel.with_suffix("")).replace("/", "__"), path=root / rel, speaker=r["speaker"],
            label=r["label"], fold=(r.get("fold") or folds[r["speaker"]]).strip(),
            transcript=r.get("transcript") or "", language=lang,
        ))
    language = languages.pop() if len(languages) == 1 else "multi"
    return Corpus(root.name or "csv", utts, classes, language, "cv")
