"""Typed views of a cache's attributes (`cache_schema.yaml`): what extraction records about the
corpus, model, extraction settings and condition, and the rows of the error table.

`to_dict` gives exactly the JSON the cache stores (same keys, same order), so a cache written
through these records is byte-for-byte the one a hand-built dict would give, and its identity hash
is unchanged; `from_dict` also reads caches written before the optional fields existed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Sequence


@dataclass(frozen=True)
class CorpusRecord:
    name: str
    protocol: str  # "cv" (leave-one-fold-out) or "split" (train/dev/test)
    language: str
    manifest_hash: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "protocol": self.protocol, "language": self.language,
                "manifest_hash": self.manifest_hash}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CorpusRecord":
        return cls(d["name"], d["protocol"], d["language"], d["manifest_hash"])


@dataclass(frozen=True)
class ModelRecord:
    name: str  # e.g. bundled:base, openai/whisper-small, /path/to/dir
    weights_hash: str
    n_encoder_states: int  # embedding output + every block
    n_decoder_states: int
    d_model: int
    frame_rate: float  # encoder frames per second; 0: one vector per utterance
    # Which feature source (pipeline/extract/sources.py) wrote the states. Left out of the JSON at
    # its default, so every Whisper cache keeps its attributes and identity hash.
    source: str = "whisper"

    @property
    def per_utterance(self) -> bool:
        """One row per utterance (openSMILE functionals), not a sequence of frames."""
        return self.frame_rate == 0

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "weights_hash": self.weights_hash,
                             "n_encoder_states": self.n_encoder_states, "n_decoder_states": self.n_decoder_states,
                             "d_model": self.d_model, "frame_rate": self.frame_rate}
        if self.source != "whisper":
            d["source"] = self.source
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelRecord":
        return cls(d["name"], d["weights_hash"], d["n_encoder_states"], d["n_decoder_states"], d["d_model"],
                   d["frame_rate"], d.get("source", "whisper"))


@dataclass(frozen=True, kw_only=True)
class ExtractionRecord:
    context: str  # padded or trimmed
    token_source: str  # hypothesis, transcript, or none (a source without a decoder)
    dtype: str = "float16"  # storage dtype of the states: float32 where values overflow float16
    # The optional fields are left out of the JSON when None: older caches lack them, and the
    # schema allows them absent, not null.
    compute_dtype: str | None = None  # dtype the model ran in
    device: str | None = None  # device kind the model ran on
    max_seconds: float
    prompt: tuple[int, ...] | None = None  # decoder prompt ids fed before the text

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"context": self.context, "token_source": self.token_source, "dtype": self.dtype}
        if self.compute_dtype is not None:
            d["compute_dtype"] = self.compute_dtype
        if self.device is not None:
            d["device"] = self.device
        d["max_seconds"] = self.max_seconds
        if self.prompt is not None:
            d["prompt"] = list(self.prompt)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ExtractionRecord":
        prompt = d.get("prompt")
        return cls(context=d["context"], token_source=d["token_source"], dtype=d["dtype"],
                   compute_dtype=d.get("compute_dtype"), device=d.get("device"), max_seconds=d["max_seconds"],
                   prompt=tuple(prompt) if prompt is not None else None)


@dataclass(frozen=True, kw_only=True)
class ConditionRecord:
    name: str  # "clean" or "<noise_type>_<snr>dB"
    noise_type: str | None
    noise_folder: str | None = None
    noise_files: tuple[str, ...] = ()
    noise_fingerprint: str | None = None  # sha256 over each recording's name + content
    snr_db: float | None
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "noise_type": self.noise_type, "noise_folder": self.noise_folder,
                "noise_files": list(self.noise_files), "noise_fingerprint": self.noise_fingerprint,
                "snr_db": self.snr_db, "seed": self.seed}

    def identity_dict(self) -> dict[str, Any]:
        """The part stored values depend on: where the recordings lie is not (their fingerprint is)."""
        return {k: v for k, v in self.to_dict().items() if k != "noise_folder"}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ConditionRecord":
        return cls(name=d["name"], noise_type=d["noise_type"], noise_folder=d.get("noise_folder"),
                   noise_files=tuple(d.get("noise_files", ())), noise_fingerprint=d.get("noise_fingerprint"),
                   snr_db=d["snr_db"], seed=d["seed"])


@dataclass(frozen=True, kw_only=True)
class CacheAttrs:
    """What extraction records about a cache: the attributes it hands to the writer (the writer adds
    its own bookkeeping: schema version, commit point, layout, writer token, identity hash)."""
    code_version: str  # package version + git commit of the writer
    corpus: CorpusRecord
    classes: tuple[str, ...]
    model: ModelRecord
    extraction: ExtractionRecord
    condition: ConditionRecord
    n_manifest: int | None = None  # entries a complete cache accounts for (older caches lack it)
    identity: dict[str, Any]  # everything stored values depend on

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"code_version": self.code_version, "corpus": self.corpus.to_dict(),
                             "classes": list(self.classes), "model": self.model.to_dict(),
                             "extraction": self.extraction.to_dict(), "condition": self.condition.to_dict()}
        if self.n_manifest is not None:
            d["n_manifest"] = self.n_manifest
        d["identity"] = self.identity
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CacheAttrs":
        """From a cache's attributes; the writer's bookkeeping keys are not part of this record."""
        return cls(code_version=d["code_version"], corpus=CorpusRecord.from_dict(d["corpus"]),
                   classes=tuple(d["classes"]), model=ModelRecord.from_dict(d["model"]),
                   extraction=ExtractionRecord.from_dict(d["extraction"]),
                   condition=ConditionRecord.from_dict(d["condition"]), n_manifest=d.get("n_manifest"),
                   identity=d["identity"])


ErrorKind = Literal["rejected", "failed"]
REJECTED: ErrorKind = "rejected"  # the corpus reader refused the entry (label outside the class map, no audio)
FAILED: ErrorKind = "failed"  # extraction failed on it (unreadable audio, too long a transcript, NaN states)


@dataclass(frozen=True)
class ErrorRecord:
    """One row of the error table: a manifest entry the cache does not hold, and why. Readable by
    column name too (`e["fold"]`), like the utterance table's rows."""
    utt_id: str
    path: str
    fold: str  # so training knows which folds are incomplete
    label: str  # as found in the corpus (may be outside the class map)
    error: str
    kind: ErrorKind

    def __getitem__(self, column: str) -> str:
        return getattr(self, column)

    def to_dict(self) -> dict[str, str]:
        return {"utt_id": self.utt_id, "path": self.path, "fold": self.fold, "label": self.label,
                "error": self.error, "kind": self.kind}

    @classmethod
    def from_dict(cls, d: dict[str, Any], classes: Sequence[str] = ()) -> "ErrorRecord":
        """`classes`: the cache's class list, for rows written before the kind was stored. Their kind
        is derived from the label: extraction only sees entries whose label the class map resolved
        to one of the classes, so a label outside them was rejected by the corpus reader. (A reader's
        rejection for a missing audio file whose raw label is a class name reads as failed.)"""
        kind = d.get("kind") or (FAILED if d["label"] in classes else REJECTED)
        return cls(d["utt_id"], d["path"], d["fold"], d["label"], d["error"], kind)
