"""IEMOCAP reader: 4 classes (hap+exc merged), leave-one-session-out folds, turn transcripts.

Only label and transcript text files are read and each dialog's wav folder is listed once, so
preparing the ~10k-turn manifest costs O(files) and no audio is decoded.
"""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.corpora.class_map import ClassMap, Rejection
from pipeline.corpora.manifest import Corpus, Utterance, load_corpus_config, register_corpus
from pipeline.errors import NserError

RELEASE_DIR = "IEMOCAP_full_release"
# "[6.2901 - 8.2357]\tSes01F_impro01_F000\tneu\t[2.5000, 2.5000, 2.5000]"
_LABEL_LINE = re.compile(r"^\[\s*([\d.]+)\s*-\s*([\d.]+)\s*\]\s+(Ses\w+)\s+(\w+)\s")
# "Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me."
_TEXT_LINE = re.compile(r"^(Ses\w+)\s+\[[\d.]+-[\d.]+\]:\s?(.*)$")


def find_release_root(root: Path, sessions: list[str]) -> Path:
    """Accept the release folder itself or its parent."""
    for cand in (root, root / RELEASE_DIR):
        if any((cand / s).is_dir() for s in sessions):
            return cand
    raise NserError(f"no Session1..5 under {root}: expected the {RELEASE_DIR} layout "
                    "(Session*/dialog/EmoEvaluation/*.txt, Session*/sentences/wav/<dialog>/<turn>.wav)")


def speaker_of(utt_id: str) -> str:
    """Session + the gender letter of the turn's speaker: Ses01F_impro01_M003 -> Ses01M.

    The dialog prefix (Ses01F) names who wore the markers, not who speaks the turn."""
    return utt_id[:5] + utt_id.rsplit("_", 1)[1][0]


def _visible_files(folder: Path, suffix: str) -> dict[str, Path]:
    """stem -> path for files with `suffix`, skipping macOS '._' resource forks found in the release."""
    if not folder.is_dir():
        return {}
    return {p.stem: p for p in folder.iterdir()
            if p.suffix.lower() == suffix and not p.name.startswith("._") and p.is_file()}


def _transcripts(path: Path | None) -> dict[str, str]:
    if path is None:
        return {}
    out = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        m = _TEXT_LINE.match(line.strip())
        if m:
            out[m.group(1)] = m.group(2).strip()
    return out


@register_corpus("iemocap")
def read_iemocap(root: Path) -> Corpus:
    cfg = load_corpus_config("iemocap")
    class_map = ClassMap.from_config(cfg, "labels")
    folds: dict[str, str] = cfg["folds"]
    base = find_release_root(root, list(folds))
    utts: list[Utterance] = []
    rejected: list[Rejection] = []
    for session, fold in folds.items():
        sdir = base / session
        evaluations = _visible_files(sdir / "dialog" / "EmoEvaluation", ".txt")
        texts_dir = sdir / "dialog" / "transcriptions"
        for dialog in sorted(evaluations):
            text = _transcripts(texts_dir / f"{dialog}.txt" if (texts_dir / f"{dialog}.txt").is_file() else None)
            wavs = _visible_files(sdir / "sentences" / "wav" / dialog, ".wav")
            for line in evaluations[dialog].read_text(encoding="utf-8", errors="replace").splitlines():
                m = _LABEL_LINE.match(line)
                if not m:
                    continue  # header and annotator lines
                utt_id, code = m.group(3), m.group(4)
                expected_wav = sdir / "sentences" / "wav" / dialog / f"{utt_id}.wav"
                label = class_map.resolve_or_reject(code, rejected, utt_id, expected_wav, fold)
                if label is None:
                    continue  # frustration, surprise, ... (the protocol), or rejected
                if utt_id not in wavs:
                    rejected.append(Rejection(utt_id, expected_wav, fold, code,
                                              f"file not found: {expected_wav} (labelled turn without audio)"))
                    continue
                utts.append(Utterance(
                    utt_id=utt_id, path=wavs[utt_id], speaker=speaker_of(utt_id), label=label,
                    fold=fold, transcript=text.get(utt_id, ""), language=cfg["language"],
                ))
    utts.sort(key=lambda u: u.utt_id)
    rejected.sort(key=lambda r: r.utt_id)
    return Corpus("iemocap", utts, list(cfg["classes"]), cfg["language"], "cv", rejected)
