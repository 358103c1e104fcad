"""The one record every corpus reader produces, and the registry of readers."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import yaml

from pipeline.corpora.class_map import Rejection
from pipeline.errors import NserError


@dataclass(frozen=True)
class Utterance:
    utt_id: str
    path: Path
    speaker: str
    label: str
    fold: str  # fold name for cross-validation, or split name (train/dev/test)
    transcript: str = ""
    language: str = "en"
    start: float | None = None
    end: float | None = None


@dataclass
class Corpus:
    name: str
    utterances: list[Utterance]
    classes: list[str]
    language: str
    protocol: str  # "cv" (leave-one-fold-out) or "split" (train/dev/test)
    # Entries found but unusable (label outside the class map, no audio file): recorded as
    # per-file errors by extraction, never dropped silently.
    rejected: list[Rejection] = field(default_factory=list)

    def counts(self, field: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for u in self.utterances:
            key = getattr(u, field)
            out[key] = out.get(key, 0) + 1
        return dict(sorted(out.items()))

    def summary(self) -> str:
        return (f"{self.name}: {len(self.utterances)} utterances, {len(self.counts('speaker'))} speakers, "
                f"classes {self.counts('label')}, folds {self.counts('fold')}"
                + (f"; {len(self.rejected)} rejected (first: {self.rejected[0].utt_id}: {self.rejected[0].reason})"
                   if self.rejected else ""))


CorpusReader = Callable[[Path], Corpus]
CORPORA: dict[str, CorpusReader] = {}
# Each module registers its readers when imported; corpus_readers() imports them all.
READER_MODULES = ("casia", "csv_manifest", "emodb", "iemocap", "meld", "ravdess")


def register_corpus(name: str) -> Callable[[CorpusReader], CorpusReader]:
    def deco(fn: CorpusReader) -> CorpusReader:
        CORPORA[name] = fn
        return fn
    return deco


def corpus_readers() -> dict[str, CorpusReader]:
    """The name-keyed registry, complete: readers live in their own modules, imported only here
    (they pull in audio libraries that listing the commands does not need)."""
    for module in READER_MODULES:
        importlib.import_module(f"pipeline.corpora.{module}")
    return CORPORA


def read_corpus(name: str, data_root: str | Path) -> Corpus:
    readers = corpus_readers()
    if name not in readers:
        raise NserError(f"unknown corpus {name!r}; known: {', '.join(sorted(readers))}")
    root = Path(data_root)
    if not root.is_dir():
        raise NserError(f"--data-root {root} is not a folder")
    corpus = readers[name](root)
    check_unique_ids(corpus)
    if not corpus.utterances:
        detail = (f"; {len(corpus.rejected)} rejected, e.g. {corpus.rejected[0].utt_id}: {corpus.rejected[0].reason}"
                  if corpus.rejected else "")
        raise NserError(f"{name} reader found no usable utterances under {root}{detail}")
    return corpus


def check_unique_ids(corpus: Corpus) -> None:
    """Refuse two manifest entries (usable or rejected) with one utterance id.

    Why: the cache keys rows and error records by id. Two files under one id (the csv reader maps
    ``a/b.flac`` and ``a__b.flac`` both to ``a__b``) made the first run abort at the second one and
    a rerun skip it as done: a file, or a whole class, gone without an error."""
    seen: dict[str, Path] = {}
    for utt_id, path in [(u.utt_id, u.path) for u in corpus.utterances] + \
            [(r.utt_id, r.path) for r in corpus.rejected]:
        if utt_id in seen:
            both = f"listed twice ({path})" if seen[utt_id] == path else f"given to both {seen[utt_id]} and {path}"
            raise NserError(f"{corpus.name}: utterance id {utt_id!r} is {both}; ids must be unique "
                            "(rename or drop one entry; the csv corpus turns '/' in paths into '__')")
        seen[utt_id] = path


def load_corpus_config(name: str) -> dict:
    """Class maps and fold definitions live in YAML next to the readers, not in code."""
    return yaml.safe_load((Path(__file__).parent / f"{name}.yaml").read_text())


def check_speaker_independent(folds: Iterable[str], speakers: Iterable[str]) -> None:
    """Refuse cross-validation folds that share a speaker: that speaker's other utterances would
    train the model scored on its test fold, a speaker-dependent score reported as independent
    (e.g. a csv manifest whose fold column is filled for some of a speaker's rows only)."""
    folds_of: dict[str, set[str]] = {}
    for fold, speaker in zip(folds, speakers):
        folds_of.setdefault(str(speaker), set()).add(str(fold))
    shared = {spk: sorted(f) for spk, f in folds_of.items() if len(f) > 1}
    if shared:
        named = ", ".join(f"{spk!r} in folds {f}" for spk, f in sorted(shared.items())[:5])
        more = f" (+{len(shared) - 5} more)" if len(shared) > 5 else ""
        raise NserError(f"speaker(s) in more than one fold: {named}{more}; a test fold's speakers would also be "
                        "in training. Give each speaker one fold (the corpus's fold column; an unknown speaker "
                        "needs an id of its own) and extract again")


def speaker_folds(speakers: Iterable[str], n_folds: int) -> dict[str, str]:
    """Speakers in sorted order dealt round-robin into n folds (speaker-independent CV)."""
    ordered = sorted(set(speakers))
    return {spk: str(i % n_folds) for i, spk in enumerate(ordered)}
