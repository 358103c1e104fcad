"""Cross-validation plans from a cache's fold column (no torch: the probe and grid use it too)."""

from __future__ import annotations

import contextlib
import warnings
from typing import Callable, Iterator

import numpy as np

from pipeline.cache.combine import PART_KEY, PartRecord
from pipeline.cache.reader import CacheReader
from pipeline.corpora.manifest import check_speaker_independent
from pipeline.errors import NserError
from pipeline.train.run_metrics import NOT_EXTRACTED

OTHER_PARTS = "other parts"  # left_out: a part cache's entries that its other parts hold


class ClassCoverageWarning(UserWarning):
    """A fold part lacks some classes: the run goes on, its UAR averages over the classes present."""


@contextlib.contextmanager
def echo_coverage_warnings(echo: Callable[[str], None]) -> Iterator[None]:
    """For the CLIs: ClassCoverageWarning as one plain line when it happens (`echo`); other warnings
    are shown as usual."""
    with warnings.catch_warnings():
        show = warnings.showwarning

        def show_plainly(message, category, *args, **kwargs):
            if issubclass(category, ClassCoverageWarning):
                echo(f"warning: {message}")
            else:
                show(message, category, *args, **kwargs)

        warnings.showwarning = show_plainly
        yield


# --validation: how each test fold's validation part (which picks the epoch) is made.
#   next-fold      the fold after the test fold (cv); on a split cache the same as dev. What
#                  nser-train always did: training sees n-2 of n folds.
#   speaker-carve  speakers carved from the training folds (cv): training sees every fold but the test fold.
#   dev            train on train, choose the epoch on dev (split).
#   train+dev      train on train + dev less speakers carved from them, choose the epoch on those (split).
#   none           no validation part: everything but the test part trains, the last epoch is kept.
#   paper          the paper's reading for the cache's protocol (PAPER_VALIDATION).
VALIDATIONS = ("next-fold", "speaker-carve", "dev", "train+dev", "none", "paper")
PAPER_VALIDATION = {"cv": "speaker-carve", "split": "train+dev"}
_FOR_PROTOCOL = {"cv": ("next-fold", "speaker-carve", "none"), "split": ("dev", "train+dev", "none")}

Plan = list[tuple[str, list[int], list[int], list[int]]]


def corpus_folds(reader: CacheReader, plan: Plan) -> set[str]:
    """Every fold of the corpus a run on `plan` touches: the plan's test folds, the cached ones (its
    training and validation parts) and the error table's. A fold whose every utterance failed
    extraction has no cached row; it is still a fold of the corpus, and its failures still count."""
    return {p[0] for p in plan} | {str(f) for f in reader.table["fold"]} | {str(e.fold) for e in reader.errors}


def check_cache_complete(reader: CacheReader, folds: set[str], allow_missing: bool) -> None:
    """Refuse a cache that holds one part of an extraction in parts, lacks utterances of `folds`
    (failed extraction) or was never finished: numbers on part of a corpus must be asked for
    (`--allow-missing`), and say so (`left_out`)."""
    if allow_missing:
        return
    part = _part_of(reader)
    if part is not None:  # complete as a part, yet a block of the corpus: its folds are cut at a batch
        raise NserError(f"cache {reader.where} is part {part.index} of {part.count} of an extraction in parts "
                        f"({reader.meta.n_manifest} of the corpus's {part.n_manifest} entries): combine the "
                        "parts first (nser cache combine), or pass --allow-missing")
    failed = [e for e in reader.errors if str(e.fold) in folds]
    if failed:
        raise NserError(f"{len(failed)} utterance(s) of the selected folds failed extraction "
                        f"(e.g. {failed[0].utt_id}: {failed[0].error}); fix them and rerun nser-extract, "
                        "or pass --allow-missing to go on without them")
    if reader.complete is False:
        raise NserError(f"cache {reader.where} is incomplete ({reader.n} of {reader.meta.n_manifest} "
                        "utterances): rerun the same nser-extract command to finish it, or pass --allow-missing")


def left_out(reader: CacheReader, folds: set[str]) -> dict[str, int]:
    """Manifest entries not in numbers computed on `folds` (under --allow-missing): failed ones per
    fold, those an unfinished extraction never reached (their folds unknown) as NOT_EXTRACTED, and
    a part's other parts' entries as OTHER_PARTS."""
    left = reader.errors_by_fold(folds)
    if reader.n_unextracted:
        left[NOT_EXTRACTED] = reader.n_unextracted
    part = _part_of(reader)
    if part is not None:
        left[OTHER_PARTS] = part.n_manifest - (reader.meta.n_manifest or 0)
    return left


def _part_of(reader: CacheReader) -> PartRecord | None:
    """The part record of a cache extracted as one part of several (pipeline/extract/parts.py)."""
    record = reader.meta.identity.get(PART_KEY)
    return PartRecord.from_dict(record) if record else None


def resolve_validation(validation: str, protocol: str) -> str:
    """The protocol a `--validation` value means on a cache of `protocol` (cv or split)."""
    if validation == "paper":
        return PAPER_VALIDATION[protocol]
    if validation == "next-fold" and protocol == "split":
        return "dev"  # a split cache's one "next fold" is its dev part: the default keeps today's runs
    if validation not in _FOR_PROTOCOL.get(protocol, ()):
        raise NserError(f"--validation {validation}: not for a {protocol}-protocol cache; use one of "
                        f"{', '.join(_FOR_PROTOCOL.get(protocol, ()) + ('paper',))}")
    return validation


def fold_plan(reader: CacheReader, validation: str = "next-fold", seed: int = 0) -> Plan:
    """(test fold, train indices, validation indices, test indices) for each fold; `validation`
    as resolve_validation reads it, `seed` picks the carved speakers."""
    folds = np.array([str(f) for f in reader.table["fold"]])
    speakers = np.array([str(s) for s in reader.table["speaker"]])
    protocol = reader.meta.corpus.protocol
    how = resolve_validation(validation, protocol)
    if protocol == "split":
        return [_split_plan(folds, speakers, how, seed)]
    check_speaker_independent(folds, speakers)
    # str, not numpy.str_: fold names end up in checkpoints, which hold plain types only
    names = sorted({str(f) for f in folds}, key=lambda s: (len(s), s))
    if len(names) < (3 if how == "next-fold" else 2):
        raise NserError(f"cross-validation with --validation {how} needs at least "
                        f"{3 if how == 'next-fold' else 2} folds; cache has {names}")
    plan = []
    for k, test in enumerate(names):
        test_idx = np.flatnonzero(folds == test).tolist()
        if how == "next-fold":
            val = names[(k + 1) % len(names)]
            train = [i for i, f in enumerate(folds) if f not in (test, val)]
            plan.append((test, train, np.flatnonzero(folds == val).tolist(), test_idx))
            continue
        pool = np.flatnonzero(folds != test).tolist()
        if how == "none":
            plan.append((test, pool, [], test_idx))
            continue
        train, val = carve_speakers(pool, speakers, 1 / (len(names) - 1), [seed, k], f"test fold {test}")
        plan.append((test, train, val, test_idx))
    return plan


def _split_plan(folds: np.ndarray, speakers: np.ndarray, how: str, seed: int) -> tuple:
    idx = {name: np.flatnonzero(folds == name).tolist() for name in ("train", "dev", "test")}
    if not idx["train"] or not idx["test"]:
        raise NserError("a split-protocol cache needs 'train' and 'test' utterances")
    if how == "dev":  # without a dev part, the last tenth of train (inside training too), as always
        return "test", idx["train"], idx["dev"] or idx["train"][-len(idx["train"]) // 10:], idx["test"]
    pool = sorted(idx["train"] + idx["dev"])
    if how == "none":
        return "test", pool, [], idx["test"]
    # the share of the corpus's own dev part (at least a tenth), in speakers
    share = max(len(idx["dev"]) / len(pool), 0.1)
    train, val = carve_speakers(pool, speakers, share, [seed], "the train+dev part")
    return "test", train, val, idx["test"]


def carve_speakers(pool: list[int], speakers: np.ndarray, share: float, seed: list[int],
                   where: str) -> tuple[list[int], list[int]]:
    """(training, validation) indices of `pool`: round(share x its speakers), at least one and never
    all, drawn by `seed`, are the validation part; no speaker is in both."""
    names = sorted({str(speakers[i]) for i in pool})
    if len(names) < 2:
        raise NserError(f"{where} has {len(names)} speaker(s): a validation part carved by speaker needs at least 2 "
                        "(use --validation next-fold, dev or none)")
    n_val = min(max(1, round(share * len(names))), len(names) - 1)
    chosen = set(np.random.default_rng(seed).permutation(names)[:n_val].tolist())
    val = [i for i in pool if str(speakers[i]) in chosen]
    return [i for i in pool if str(speakers[i]) not in chosen], val


def select_folds(plan: Plan, folds: str) -> list:
    """The plan's entries for `--folds` ("all" or comma-separated test folds, in plan order). A name
    that is not a test fold is refused: silently skipping it would report fewer folds than asked."""
    if folds == "all":
        return plan
    wanted = [f.strip() for f in folds.split(",") if f.strip()]
    known = [p[0] for p in plan]
    unknown = [f for f in wanted if f not in known]
    if unknown or not wanted:
        raise NserError(f"--folds {folds!r}: {f'unknown fold(s) {unknown}' if unknown else 'no fold named'}; "
                        f"the cache's test folds are {known}")
    return [p for p in plan if p[0] in wanted]


def check_class_coverage(reader: CacheReader, plan: list, *, fit_on_validation: bool = False) -> list[str]:
    """Refuse a plan whose fit part (training, plus validation with `fit_on_validation`) holds fewer
    than two classes: a one-class model predicts that class everywhere, and on a test fold of that
    class scores UAR 1.000. Return a warning per part that lacks some of the cache's classes (the
    run is still valid: UAR then averages over the classes the test fold has); also issued as
    ClassCoverageWarning."""
    labels = np.array([str(v) for v in reader.table["label"]], dtype=object)
    classes = reader.classes
    notes: list[str] = []
    for test_fold, train_idx, val_idx, test_idx in plan:
        fit = list(train_idx) + list(val_idx) if fit_on_validation else list(train_idx)
        fit_name = "training+validation part" if fit_on_validation else "training part"
        present = [c for c in classes if c in set(labels[fit])]
        if len(present) < 2:
            raise NserError(f"test fold {test_fold}: the {fit_name} holds only class(es) {present} of {classes}, "
                            "so any UAR would be meaningless; check the corpus labels and class map (or what "
                            "--allow-missing left out)")
        parts = [(fit_name, fit), ("test fold", list(test_idx))]
        if not fit_on_validation and val_idx:  # --validation none has no validation part to cover
            parts.insert(1, ("validation part", list(val_idx)))
        for name, idx in parts:
            missing = [c for c in classes if c not in set(labels[idx])]
            if missing:
                notes.append(f"test fold {test_fold}: the {name} has no utterance of class(es) {missing}")
    for note in notes:
        warnings.warn(note, ClassCoverageWarning, stacklevel=3)
    return notes
