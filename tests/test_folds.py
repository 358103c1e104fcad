"""Validation protocols of fold_plan on real (tiny) Zarr caches: the parts are disjoint, cover
what each protocol says, and a carve is fixed by the seed."""

from __future__ import annotations

import re
import warnings

import pytest

from pipeline.cache.reader import CacheReader
from pipeline.errors import NserError
from pipeline.folds import ClassCoverageWarning, check_class_coverage, fold_plan, resolve_validation
from tests.helpers import row, write_cache

N_CV = 36  # 4 folds x 3 speakers x 3 utterances


def _tiny(rng, k):
    return 4, 2


@pytest.fixture(scope="module")
def cv_cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("folds") / "cv.zarr"
    write_cache(path, N_CV, rows=lambda k: row(k, fold=str(k % 4), speaker=f"s{k % 4}{k // 4 % 3}",
                                               label="ab"[k // 4 % 2]), lengths=_tiny, n_enc=1, n_dec=1, d=2)
    with CacheReader(path) as reader:
        yield reader


@pytest.fixture(scope="module")
def split_cache(tmp_path_factory):
    """24 train (6 speakers), 6 dev (2 speakers), 6 test utterances (2 speakers, one also in train, as MELD)."""
    path = tmp_path_factory.mktemp("folds") / "split.zarr"
    parts = ["train"] * 24 + ["dev"] * 6 + ["test"] * 6
    speaker = [f"t{k % 6}" for k in range(24)] + [f"d{k % 2}" for k in range(6)] + ["t0", "x"] * 3
    write_cache(path, len(parts), rows=lambda k: row(k, fold=parts[k], speaker=speaker[k], label="ab"[k % 2]),
                lengths=_tiny, n_enc=1, n_dec=1, d=2, protocol="split")
    with CacheReader(path) as reader:
        yield reader


def _col(reader, name, idx):
    return {str(reader.table[name][i]) for i in idx}


def _check_disjoint(plan, n):
    for _, train, val, test in plan:
        assert not (set(train) & set(val)) and not (set(train) & set(test)) and not (set(val) & set(test))
        assert len(set(train)) == len(train) and sorted(set(train) | set(val) | set(test)) <= list(range(n))


def test_next_fold_is_the_plan_runs_always_had(cv_cache):
    plan = fold_plan(cv_cache)
    assert plan == fold_plan(cv_cache, "next-fold", seed=7)  # the seed does not touch it
    _check_disjoint(plan, N_CV)
    for k, (test, train, val, test_idx) in enumerate(plan):
        assert _col(cv_cache, "fold", test_idx) == {test} and _col(cv_cache, "fold", val) == {str((k + 1) % 4)}
        assert len(train) == N_CV // 2  # 2 of 4 folds train


def test_speaker_carve_trains_on_every_fold_but_the_test_fold(cv_cache):
    plan = fold_plan(cv_cache, "speaker-carve", seed=0)
    _check_disjoint(plan, N_CV)
    for test, train, val, test_idx in plan:
        assert _col(cv_cache, "fold", test_idx) == {test} and len(test_idx) == N_CV // 4  # the test fold, whole
        assert sorted(train + val) == [i for i in range(N_CV) if str(cv_cache.table["fold"][i]) != test]
        assert not (_col(cv_cache, "speaker", train) & _col(cv_cache, "speaker", val))
        assert len(_col(cv_cache, "speaker", val)) == 3  # 9 training speakers / (4 folds - 1)
        assert _col(cv_cache, "fold", train) == _col(cv_cache, "fold", train + val)  # no fold left out of training
    assert fold_plan(cv_cache, "speaker-carve", seed=0) == plan
    other = fold_plan(cv_cache, "speaker-carve", seed=1)
    assert [p[0] for p in other] == [p[0] for p in plan] and other != plan
    assert fold_plan(cv_cache, "paper", seed=1) == other


def test_none_trains_on_everything_but_the_test_fold_without_validation_warnings(cv_cache):
    plan = fold_plan(cv_cache, "none")
    for test, train, val, test_idx in plan:
        assert val == [] and sorted(train + test_idx) == list(range(N_CV))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ClassCoverageWarning)
        assert check_class_coverage(cv_cache, plan) == []


def test_split_protocols(split_cache):
    folds = [str(f) for f in split_cache.table["fold"]]
    idx = {p: [i for i, f in enumerate(folds) if f == p] for p in ("train", "dev", "test")}
    ((name, train, val, test),) = fold_plan(split_cache, "dev")
    assert (name, train, val, test) == ("test", idx["train"], idx["dev"], idx["test"])
    assert fold_plan(split_cache, "next-fold") == fold_plan(split_cache, "dev")  # the default: as before
    ((_, train, val, test),) = plan = fold_plan(split_cache, "train+dev", seed=0)
    _check_disjoint(plan, len(folds))
    assert test == idx["test"] and sorted(train + val) == sorted(idx["train"] + idx["dev"])
    assert not (_col(split_cache, "speaker", train) & _col(split_cache, "speaker", val))
    assert len(_col(split_cache, "speaker", val)) == 2  # dev's share (6 of 30) of 8 speakers, rounded
    assert fold_plan(split_cache, "paper", seed=0) == plan
    ((_, train, val, test),) = fold_plan(split_cache, "none")
    assert val == [] and sorted(train) == sorted(idx["train"] + idx["dev"]) and test == idx["test"]


def test_protocols_of_the_other_kind_and_one_speaker_pools_are_refused(split_cache, cv_cache, tmp_path):
    with pytest.raises(NserError, match="speaker-carve: not for a split-protocol cache"):
        fold_plan(split_cache, "speaker-carve")
    for asked in ("dev", "train+dev"):
        with pytest.raises(NserError, match=f"{re.escape(asked)}: not for a cv-protocol cache"):
            fold_plan(cv_cache, asked)
    assert [resolve_validation("paper", p) for p in ("cv", "split")] == ["speaker-carve", "train+dev"]
    path = tmp_path / "one.zarr"  # one speaker per fold: nothing to carve from the training fold
    write_cache(path, 6, rows=lambda k: row(k, fold=str(k % 2), speaker=f"s{k % 2}", label="ab"[k // 2 % 2]),
                lengths=_tiny, n_enc=1, n_dec=1, d=2)
    with CacheReader(path) as reader, pytest.raises(NserError, match="1 speaker.*needs at least 2"):
        fold_plan(reader, "speaker-carve")


def test_folds_sharing_a_speaker_refused(tmp_path):
    """A speaker in two cross-validation folds would be in its own test fold's training part: every
    protocol refuses the plan, naming the speaker, instead of scoring a speaker-dependent model."""
    path = tmp_path / "shared.zarr"
    write_cache(path, 12, rows=lambda k: row(k, fold=str(k % 3), speaker="s0" if k in (0, 4) else f"s{k % 3}",
                                             label="ab"[k // 3 % 2]), lengths=_tiny, n_enc=1, n_dec=1, d=2)
    with CacheReader(path) as reader:
        for validation in ("next-fold", "speaker-carve", "none", "paper"):
            with pytest.raises(NserError, match=r"'s0' in folds \['0', '1'\]; a test fold's speakers"):
                fold_plan(reader, validation)
