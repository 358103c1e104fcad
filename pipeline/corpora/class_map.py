"""Raw corpus labels -> training classes, with the labels a protocol leaves out named explicitly.

A label the map neither maps nor excludes (a typo in a manifest, a code the reader does not know)
is not silently dropped: the reader turns that file into a `Rejection`, which extraction records
in the cache's error table like any other per-file failure.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from pipeline.errors import NserError


class LabelOutsideClassMap(NserError):
    """A label that the class map neither maps to a class nor excludes."""


@dataclass(frozen=True)
class ClassMap:
    classes: tuple[str, ...]
    labels: Mapping[str, str]  # raw label -> class
    excluded: frozenset[str] = frozenset()  # raw labels the protocol leaves out
    case_sensitive: bool = True

    def __post_init__(self) -> None:
        unknown = sorted(set(self.labels.values()) - set(self.classes))
        if unknown:
            raise NserError(f"class map sends labels to {unknown}, which are not among its classes {list(self.classes)}")
        both = sorted(set(map(self._key, self.labels)) & set(map(self._key, self.excluded)))
        if both:
            raise NserError(f"class map both maps and excludes {both}")
        # Lookup tables keyed by the normalised label (frozen dataclass: set once here).
        object.__setattr__(self, "_table", {self._key(k): v for k, v in self.labels.items()})
        object.__setattr__(self, "_out", {self._key(x) for x in self.excluded})

    def _key(self, raw: str) -> str:
        return raw.strip() if self.case_sensitive else raw.strip().lower()

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], labels_key: str, case_sensitive: bool = True) -> "ClassMap":
        """From a corpus YAML: ``classes``, ``<labels_key>`` (raw -> class) and ``excluded``."""
        labels, excluded = dict(cfg[labels_key]), list(cfg.get("excluded") or ())
        # YAML reads an unquoted 01 as the integer 1, which would match no file name: refuse it.
        not_text = [x for x in [*labels, *labels.values(), *excluded, *cfg["classes"]] if not isinstance(x, str)]
        if not_text:
            raise NserError(f"class map {labels_key!r}: {not_text} are not strings; quote them in the YAML")
        return cls(tuple(cfg["classes"]), labels, frozenset(excluded), case_sensitive)

    def excludes(self, raw: str) -> bool:
        return self._key(raw) in self._out

    def resolve(self, raw: str) -> str | None:
        """The class of `raw`, or None when the protocol excludes it; raises for any other label."""
        key = self._key(raw)
        if key in self._table:
            return self._table[key]
        if key in self._out:
            return None
        raise LabelOutsideClassMap(
            f"label {raw!r} outside the class map (classes {list(self.classes)}; "
            f"mapped {sorted(self.labels)}; excluded {sorted(self.excluded)})")

    def resolve_or_reject(self, raw: str, rejected: list["Rejection"], utt_id: str, path: Path, fold: str,
                          where: str = "") -> str | None:
        """`resolve`, except that a label outside the map appends a Rejection and gives None."""
        try:
            return self.resolve(raw)
        except LabelOutsideClassMap as exc:
            rejected.append(Rejection(utt_id, path, fold, raw.strip(), f"{exc}{where}"))
            return None


def read_class_map_file(path: Path) -> ClassMap:
    """A user's class map for the csv corpus::

        classes: [neutral, happy, sad, angry]   # class order = output index
        labels: {neu: neutral, exc: happy}      # optional; each class also maps to itself
        excluded: [frustrated, other]           # optional; left out without an error
    """
    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise NserError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(cfg, dict) or not isinstance(cfg.get("classes"), list) or not cfg["classes"]:
        raise NserError(f"{path} needs a non-empty list `classes` (and optionally `labels`, `excluded`)")
    classes = [str(c) for c in cfg["classes"]]
    labels = {c: c for c in classes}
    labels.update({str(k): str(v) for k, v in (cfg.get("labels") or {}).items()})
    return ClassMap(tuple(classes), labels, frozenset(str(x) for x in cfg.get("excluded") or ()))


@dataclass(frozen=True)
class Rejection:
    """A manifest entry that cannot become a training example, kept so its failure is recorded."""
    utt_id: str
    path: Path
    fold: str
    label: str  # the raw label as found
    reason: str

