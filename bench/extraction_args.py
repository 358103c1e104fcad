"""What the extraction benchmarks share: the corpus and model options, and the first N utterances."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.corpora.manifest import Corpus, read_corpus

SHARED_EMODB = Path(__file__).resolve().parents[2] / "shared/data/emodb"


def extraction_parser(doc: str, n: int) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--model", default="bundled:base")
    ap.add_argument("--corpus", default="emodb")
    ap.add_argument("--data-root", default=str(SHARED_EMODB))
    ap.add_argument("--n", type=int, default=n, help="utterances: the corpus's first N")
    ap.add_argument("--batch-size", type=int, default=8)
    return ap


def first_utterances(args: argparse.Namespace) -> Corpus:
    corpus = read_corpus(args.corpus, args.data_root)
    corpus.utterances = corpus.utterances[: args.n]
    return corpus
