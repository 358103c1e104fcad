"""Class maps: mapped, excluded and outside labels; the maps shipped for each corpus are consistent."""

from __future__ import annotations

import pytest

from pipeline.corpora.class_map import ClassMap, LabelOutsideClassMap, read_class_map_file
from pipeline.corpora.manifest import load_corpus_config
from pipeline.errors import NserError

SHIPPED = {"emodb": ("emotion_letters", True), "iemocap": ("labels", True), "meld": ("emotions", False),
           "casia": ("emotions", False), "ravdess": ("emotions", True)}


def test_resolve_mapped_excluded_outside():
    m = ClassMap(("neutral", "happy"), {"neu": "neutral", "hap": "happy", "exc": "happy"}, frozenset({"fru"}))
    assert m.resolve("exc") == "happy" and m.resolve(" neu ") == "neutral"
    assert m.resolve("fru") is None
    with pytest.raises(LabelOutsideClassMap, match=r"label 'Neu' outside the class map \(classes \['neutral', 'happy'\]"):
        m.resolve("Neu")  # case matters unless the map says otherwise
    assert ClassMap(("a",), {"x": "a"}, frozenset({"y"}), case_sensitive=False).resolve("X") == "a"


def test_inconsistent_maps_refused():
    with pytest.raises(NserError, match=r"sends labels to \['sad'\]"):
        ClassMap(("neutral",), {"neu": "neutral", "sad": "sad"})
    with pytest.raises(NserError, match=r"both maps and excludes \['neu'\]"):
        ClassMap(("neutral",), {"neu": "neutral"}, frozenset({"neu"}))


@pytest.mark.parametrize("corpus", sorted(SHIPPED))
def test_shipped_maps_load(corpus):
    key, case = SHIPPED[corpus]
    cfg = load_corpus_config(corpus)
    m = ClassMap.from_config(cfg, key, case_sensitive=case)
    assert set(m.labels.values()) == set(m.classes) == set(cfg["classes"])  # every class is reachable


def test_unquoted_yaml_codes_refused():
    with pytest.raises(NserError, match=r"\[1\] are not strings; quote them"):
        ClassMap.from_config({"classes": ["neutral"], "emotions": {1: "neutral"}}, "emotions")


def test_class_map_file(tmp_path):
    f = tmp_path / "classes.yaml"
    f.write_text("classes: [neutral, happy]\nlabels: {exc: happy}\nexcluded: [frustrated]\n")
    m = read_class_map_file(f)
    assert m.classes == ("neutral", "happy")
    assert [m.resolve(x) for x in ("neutral", "happy", "exc", "frustrated")] == ["neutral", "happy", "happy", None]
    with pytest.raises(LabelOutsideClassMap):
        m.resolve("angry")
    f.write_text("labels: {exc: happy}\n")
    with pytest.raises(NserError, match="needs a non-empty list `classes`"):
        read_class_map_file(f)
    f.write_text("classes: [a, b\n")
    with pytest.raises(NserError, match="not valid YAML"):
        read_class_map_file(f)
