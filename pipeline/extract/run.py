"""Extraction driver: corpus manifest -> (noisy) audio -> feature source (pipeline/extract/sources.py:
Whisper, mel, openSMILE, ...) -> CacheWriter."""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm import tqdm

from pipeline import __version__
from pipeline.audio import SAMPLE_RATE, load_audio
from pipeline.cache.records import (FAILED, REJECTED, CacheAttrs, ConditionRecord, CorpusRecord, ErrorRecord,
                                    ExtractionRecord)
from pipeline.cache.writer import CacheWriter
from pipeline.corpora.class_map import Rejection
from pipeline.corpora.manifest import Corpus, Utterance, check_unique_ids
from pipeline.errors import AudioError, NserError
from pipeline.extract.sources import open_source
from pipeline.extract.whisper_layers import TranscriptTooLong
from pipeline.failpoints import failpoint
from pipeline.noise import NoiseBank, check_snr
from pipeline.version import code_version


@dataclass
class ExtractionOptions:
    model: str = "openai/whisper-small"  # a feature source: Whisper id/dir/bundled:*, mel, opensmile:<set>
    noise: str | None = None  # folder of noise recordings; None = clean
    noise_type: str | None = None  # name recorded in the cache; defaults to the folder name
    snr_db: float | None = None
    seed: int = 0
    context: str = "padded"
    token_source: str = "hypothesis"
    batch_size: int = 8
    device: str = "auto"
    dtype: str = "auto"
    overwrite: bool = False
    commit_frames: int | None = None  # encoder frames buffered per commit (default: one shard)
    # False: WhisperLayerExtractor.extract_reference (generate() + a full teacher-forced pass). Both
    # store the same values (tests/extract/test_fast_path.py), so this is not part of the identity.
    fast: bool = True


@dataclass
class ExtractionReport:
    path: Path
    n_done: int
    n_new: int
    errors: list[ErrorRecord] = field(default_factory=list)
    seconds: float = 0.0
    audio_seconds: float = 0.0


DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def default_device() -> str:
    """What `--device auto` extracts on: the GPU when torch sees one."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype(device: str) -> str:
    """What `--dtype auto` computes in on this device: float16 on a GPU, float32 on the CPU."""
    return "float16" if device.startswith("cuda") else "float32"


def resolve_device(device: str, dtype: str) -> tuple[str, torch.dtype]:
    if device == "auto":
        device = default_device()
    if dtype == "auto":
        dtype = default_dtype(device)
    if dtype not in DTYPES:
        raise NserError(f"dtype must be auto, {', '.join(DTYPES)}; not {dtype!r}")
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError) as exc:
        raise NserError(f"device {device!r} is not a torch device (auto, cpu, cuda, cuda:1, ...)") from exc
    if kind == "cuda" and not torch.cuda.is_available():
        raise NserError(f"device {device!r}: CUDA is not available on this machine")
    return device, DTYPES[dtype]


def _is_int(x: object) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def check_options(opts: ExtractionOptions) -> None:
    """Refuse options that would cache meaningless states or fail midway through a long run.

    Why here and not only in the CLI: API users (notebooks, scripts) build ExtractionOptions
    themselves. A NaN SNR cached NaN states with exit 0; an infinite one crashed at the first file."""
    if (opts.noise is None) != (opts.snr_db is None):
        raise NserError("--noise and --snr go together (leave both out for the clean condition)")
    if opts.snr_db is not None:
        check_snr(opts.snr_db)
    # The seed is hashed as text and recorded as an int: both must be the same number.
    if not _is_int(opts.seed):
        raise NserError(f"seed must be an integer, not {opts.seed!r}")
    if not _is_int(opts.batch_size) or opts.batch_size < 1:
        raise NserError(f"batch size must be an integer >= 1, not {opts.batch_size!r}")
    if opts.commit_frames is not None and (not _is_int(opts.commit_frames) or opts.commit_frames < 1):
        raise NserError(f"commit frames must be an integer >= 1, not {opts.commit_frames!r}")
    if opts.context not in ("padded", "trimmed"):
        raise NserError(f"context must be padded or trimmed, not {opts.context!r}")
    if opts.token_source not in ("hypothesis", "transcript"):
        raise NserError(f"token source must be hypothesis or transcript, not {opts.token_source!r}")


def manifest_hash(corpus: Corpus) -> str:
    h = hashlib.sha256()
    for u in corpus.utterances:
        h.update(json.dumps([u.utt_id, u.label, u.speaker, u.fold, u.transcript, u.start, u.end]).encode())
    return h.hexdigest()[:16]


def noise_type(opts: ExtractionOptions) -> str | None:
    if opts.noise is None:
        return None
    return opts.noise_type or (Path(opts.noise).name if Path(opts.noise).is_dir() else Path(opts.noise).stem)


def condition_name(opts: ExtractionOptions) -> str:
    return "clean" if opts.noise is None else f"{noise_type(opts)}_{opts.snr_db:g}dB"


def run_extraction(corpus: Corpus, out: str | Path, opts: ExtractionOptions, progress: bool = True,
                   amend_attrs: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> ExtractionReport:
    """`amend_attrs`: changes the cache's attributes before the writer opens it (a part of a split
    manifest records which part it is: pipeline/extract/parts.py)."""
    check_options(opts)
    check_unique_ids(corpus)  # also for corpora built by hand, not by read_corpus
    t_start = time.perf_counter()
    bank = NoiseBank(opts.noise, seed=int(opts.seed)) if opts.noise else None
    source = open_source(opts.model, opts, corpus.language if corpus.language != "multi" else None)
    condition = ConditionRecord(
        name=condition_name(opts), noise_type=noise_type(opts), noise_folder=str(opts.noise) if opts.noise else None,
        noise_files=tuple(bank.names) if bank else (), noise_fingerprint=bank.fingerprint() if bank else None,
        snr_db=float(opts.snr_db) if opts.snr_db is not None else None, seed=int(opts.seed))
    corpus_record = CorpusRecord(corpus.name, corpus.protocol, corpus.language, manifest_hash(corpus))
    model, extraction = source.model, source.extraction
    attrs = CacheAttrs(
        code_version=code_version(), corpus=corpus_record, classes=tuple(corpus.classes), model=model,
        extraction=extraction, condition=condition,
        # What a complete cache accounts for: cached rows + recorded failures (rejected entries included).
        n_manifest=len(corpus.utterances) + len(corpus.rejected),
        # Everything the stored values depend on; the git commit is provenance, not identity.
        identity={"package_version": __version__, "corpus": corpus_record.to_dict(), "model": model.to_dict(),
                  "extraction": extraction.to_dict(), "condition": condition.identity_dict()})
    attrs_dict = amend_attrs(attrs.to_dict()) if amend_attrs else attrs.to_dict()
    writer = CacheWriter(out, attrs_dict, overwrite=opts.overwrite, commit_frames=opts.commit_frames)
    # Batches are fixed blocks of the manifest, so a resumed run batches the rest as the first
    # run would have, and the cache ends up identical to an uninterrupted one.
    blocks = [corpus.utterances[i:i + opts.batch_size] for i in range(0, len(corpus.utterances), opts.batch_size)]
    batches = [[u for u in b if u.utt_id not in writer.done_ids] for b in blocks]
    batches = [b for b in batches if b]
    n_before = len(writer.done_ids)
    errors = [_rejected(r) for r in corpus.rejected]
    audio_seconds = 0.0
    bar = tqdm(total=sum(map(len, batches)), desc=f"extract {corpus.name}/{condition.name}", unit="utt",
               disable=not progress)
    with writer:
        for batch in batches:
            failpoint("extract:batch")
            ready = []
            for u in batch:
                try:
                    source.check_transcript(u.transcript)  # before the batch: one file, not all
                    samples, meta = _prepare(u, bank, opts.snr_db)
                    source.check_audio(samples)  # e.g. shorter than the source's one frame
                    ready.append((u, samples, meta))
                except (AudioError, TranscriptTooLong) as exc:
                    errors.append(_error(u, str(exc)))
            if ready:
                results = source.extract([r[1] for r in ready], [r[0].transcript for r in ready])
                for (u, samples, meta), res in zip(ready, results):
                    bad = nonfinite_reason(res, extraction)
                    if bad:
                        errors.append(_error(u, bad))
                        continue
                    audio_seconds += len(samples) / SAMPLE_RATE
                    writer.add(_row(u, samples, meta, res), res.encoder, res.decoder, res.tokens)
            writer.commit_if_due()
            bar.update(len(batch))
        writer.set_errors(errors)
    bar.close()
    return ExtractionReport(Path(out), len(writer.done_ids), len(writer.done_ids) - n_before, errors,
                            time.perf_counter() - t_start, audio_seconds)


def _prepare(u: Utterance, bank: NoiseBank | None, snr_db: float | None) -> tuple[np.ndarray, dict[str, Any]]:
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        audio = load_audio(u.path, start=u.start, end=u.end)
    meta: dict[str, Any] = {"truncated_s": audio.truncated_seconds, "noise_file": "", "noise_offset": 0,
                            "realized_snr_db": math.nan}
    samples = audio.samples
    if bank is not None:
        mixed = bank.mix(samples, u.utt_id, float(snr_db))
        samples = mixed.samples
        meta.update(noise_file=mixed.noise_file, noise_offset=mixed.noise_offset,
                    realized_snr_db=mixed.realized_snr_db)
    return samples, meta


def _error(u: Utterance, message: str) -> ErrorRecord:
    """A per-file record of the cache's error table: extraction failed on `u`."""
    return ErrorRecord(u.utt_id, str(u.path), u.fold, u.label, message, FAILED)


def _rejected(r: Rejection) -> ErrorRecord:
    """The error-table record of an entry the corpus reader refused."""
    return ErrorRecord(r.utt_id, str(r.path), r.fold, r.label, r.reason, REJECTED)


def nonfinite_reason(res, extraction: ExtractionRecord) -> str | None:
    """Why an utterance's states cannot be cached (NaN/Inf as stored in the storage dtype), or None;
    every source's run (audio here, text in pipeline/extract/text_run.py) checks its results with it.

    An fp16 overflow or a bad input gives NaN/Inf for that utterance only: it becomes a per-file
    error and the run goes on, instead of training later on NaN or the writer refusing the run."""
    compute_dtype, stored = extraction.compute_dtype, extraction.dtype
    for stack, states in (("encoder", res.encoder), ("decoder", res.decoder)):
        for i, st in enumerate(states):
            with np.errstate(over="ignore"):
                st = np.asarray(st, dtype=stored)
            n_bad = int(st.size - np.count_nonzero(np.isfinite(st)))
            if n_bad:
                hint = "" if compute_dtype == "float32" else "; --dtype float32 may avoid an overflow"
                return (f"non-finite hidden states: {n_bad} NaN/Inf value(s) in {stack} state {i} "
                        f"(computed in {compute_dtype}, stored as {stored}){hint}")
    return None


def _row(u: Utterance, samples: np.ndarray, meta: dict[str, Any], res) -> dict[str, Any]:
    return {"utt_id": u.utt_id, "speaker": u.speaker, "label": u.label, "fold": u.fold,
            "language": u.language, "transcript": u.transcript, "hypothesis": res.hypothesis,
            "duration": len(samples) / SAMPLE_RATE, "hyp_loop": res.hyp_loop, "hyp_capped": res.hyp_capped, **meta}
