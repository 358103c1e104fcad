"""csv corpus: derived classes without a class map; declared order, mapping, exclusion and rejection with one."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from pipeline.corpora.manifest import read_corpus
from pipeline.errors import NserError


def write_manifest(root: Path, rows: list[tuple[str, str, str]]) -> None:
    with (root / "manifest.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "speaker"])
        w.writerows(rows)


ROWS = [("a/1.wav", "sad", "s1"), ("a/2.wav", "neu", "s2"), ("b/3.wav", "frustrated", "s1"),
        ("b/4.wav", "angyr", "s2"), ("b/5.wav", "happy", "s3")]


def test_classes_derived_without_a_map(tmp_path):
    write_manifest(tmp_path, ROWS)
    c = read_corpus("csv", tmp_path)
    assert c.classes == ["sad", "neu", "frustrated", "angyr", "happy"] and not c.rejected
    assert c.counts("fold") == {"0": 2, "1": 2, "2": 1}


def test_declared_map_orders_maps_excludes_and_rejects(tmp_path):
    write_manifest(tmp_path, ROWS)
    (tmp_path / "classes.yaml").write_text(
        "classes: [neutral, happy, sad, angry]\nlabels: {neu: neutral}\nexcluded: [frustrated]\n")
    c = read_corpus("csv", tmp_path)
    assert c.classes == ["neutral", "happy", "sad", "angry"]  # declared order, even for absent classes
    assert [(u.utt_id, u.label) for u in c.utterances] == [("a__1", "sad"), ("a__2", "neutral"), ("b__5", "happy")]
    [r] = c.rejected
    assert (r.utt_id, r.label, r.fold, r.path) == ("b__4", "angyr", "1", tmp_path / "b/4.wav")
    assert "label 'angyr' outside the class map" in r.reason and "classes.yaml" in r.reason
    assert "1 rejected (first: b__4" in c.summary()


def test_every_label_outside_the_map(tmp_path):
    write_manifest(tmp_path, ROWS[3:4])
    (tmp_path / "classes.yaml").write_text("classes: [angry]\n")
    with pytest.raises(NserError, match=r"no usable utterances .* 1 rejected, e.g. b__4: label 'angyr'"):
        read_corpus("csv", tmp_path)


def test_two_files_one_id_refused(tmp_path, emodb_root):
    """a/b.flac and a__b.flac both become utterance id a__b: refused before anything runs, naming
    both files (before, the first run aborted and a rerun skipped the second file as done)."""
    (tmp_path / "a").mkdir()
    shutil.copy(emodb_root / "03a01Fa.flac", tmp_path / "a" / "b.flac")
    shutil.copy(emodb_root / "08a01Ab.flac", tmp_path / "a__b.flac")
    shutil.copy(emodb_root / "09a01Wb.flac", tmp_path / "c.flac")
    write_manifest(tmp_path, [("a/b.flac", "happy", "03"), ("c.flac", "angry", "09"), ("a__b.flac", "fear", "08")])
    with pytest.raises(NserError, match=r"utterance id 'a__b' is given to both .*a/b\.flac and .*a__b\.flac"):
        read_corpus("csv", tmp_path)
    # A rejected entry (label outside the declared map) holds its id too.
    (tmp_path / "classes.yaml").write_text("classes: [happy, angry]\n")
    with pytest.raises(NserError, match=r"'a__b' is given to both"):
        read_corpus("csv", tmp_path)
    write_manifest(tmp_path, [("c.flac", "angry", "09"), ("c.flac", "angry", "09")])
    with pytest.raises(NserError, match=r"utterance id 'c' is listed twice \(.*c\.flac\)"):
        read_corpus("csv", tmp_path)


def test_fold_column_filled_in_some_rows_only_refused(tmp_path):
    """A fold column filled for some rows and empty in others would mix given folds with dealt ones,
    putting a speaker in two folds (its test fold's utterances in training): refused, naming the rows."""
    with (tmp_path / "manifest.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows([["path", "label", "speaker", "fold"], ["a/1.wav", "sad", "s1", "1"],
                                  ["a/2.wav", "neu", "s1", ""], ["b/3.wav", "sad", "s2", "0"]])
    with pytest.raises(NserError, match=r"fold column is empty in 1 row\(s\) \(data rows \[2\]\)"):
        read_corpus("csv", tmp_path)
    with (tmp_path / "manifest.csv").open("w", newline="") as fh:  # filled, but s1 in two folds
        csv.writer(fh).writerows([["path", "label", "speaker", "fold"], ["a/1.wav", "sad", "s1", "1"],
                                  ["a/2.wav", "neu", "s1", "0"], ["b/3.wav", "sad", "s2", "0"]])
    with pytest.raises(NserError, match=r"'s1' in folds \['0', '1'\]"):
        read_corpus("csv", tmp_path)  # before any audio is read
