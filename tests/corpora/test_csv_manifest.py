"""csv corpus: derived classes without a class map; declared order, mapping, exclusion and rejection with one."""

from __future__ import annotations

import csv
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
