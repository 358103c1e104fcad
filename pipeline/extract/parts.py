"""Extraction split into parts: one part per process, GPU or machine, then one combined cache.

Part K of N is a contiguous block of whole batches of the manifest (the batches a single run
forms, so every utterance is batched, padded and computed as in that run), extracted by
`run_extraction` into its own ordinary cache `OUT.parts/part-K-of-N.zarr`, with its own lock and
crash-safe resume. `combine_parts` then writes the cache a single run would have written.
`extract_with_workers` runs the parts as Dask tasks and combines them.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from pipeline.cache.combine import PartRecord, check_combine_target, combine_parts, part_name
from pipeline.corpora.manifest import Corpus, check_unique_ids
from pipeline.errors import CacheError, NserError
from pipeline.extract.run import ExtractionOptions, ExtractionReport, manifest_hash, run_extraction


def parts_dir(out: str | Path) -> Path:
    """Where the parts of the cache `out` go: `OUT.parts/` beside it."""
    out = Path(out)
    return out.with_name(out.name + ".parts")


def part_path(out: str | Path, index: int, count: int) -> Path:
    return parts_dir(out) / part_name(index, count)


def part_range(n_utterances: int, batch_size: int, index: int, count: int) -> range:
    """Manifest positions of part `index` of `count`: whole batches, as evenly spread as they go."""
    n_batches = -(-n_utterances // batch_size)
    if count < 1 or not 0 <= index < count:
        raise NserError(f"part {index} of {count}: parts are numbered 0 to N-1, N >= 1")
    if count > n_batches:
        raise NserError(f"{count} parts of {n_utterances} utterances in {n_batches} batch(es) of {batch_size}: "
                        "every part needs at least one batch (fewer parts, or a smaller --batch-size)")
    first, last = index * n_batches // count, (index + 1) * n_batches // count
    return range(first * batch_size, min(last * batch_size, n_utterances))


def part_corpus(corpus: Corpus, batch_size: int, index: int, count: int) -> Corpus:
    """Part `index`'s block of the manifest; the corpus reader's rejections go to part 0, so the
    combined error table lists them first, as a single run does."""
    block = part_range(len(corpus.utterances), batch_size, index, count)
    return dataclasses.replace(corpus, utterances=corpus.utterances[block.start:block.stop],
                               rejected=list(corpus.rejected) if index == 0 else [])


def extract_part(corpus: Corpus, out: str | Path, opts: ExtractionOptions, index: int, count: int,
                 progress: bool = True) -> ExtractionReport:
    """Extract part `index` of `count` of `corpus` into `part_path(out, index, count)` (resumes it)."""
    check_unique_ids(corpus)
    record = PartRecord(index, count, opts.batch_size, manifest_hash(corpus),
                        len(corpus.utterances) + len(corpus.rejected))
    sub = part_corpus(corpus, opts.batch_size, index, count)
    target = part_path(out, index, count)
    target.parent.mkdir(parents=True, exist_ok=True)
    return run_extraction(sub, target, opts, progress=progress, amend_attrs=record.amend)


def local_device(device: str, index: int) -> str:
    """The device of part `index` on a local cluster, whose workers see every GPU this process sees:
    GPU `index` mod count where there are several. (Workers of a running cluster keep `device`:
    pinned to one GPU each, by dask-cuda or CUDA_VISIBLE_DEVICES, their first GPU is their own.)
    The device kind, not its number, is part of the cache identity."""
    if device not in ("auto", "cuda"):
        return device
    import torch
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return f"cuda:{index % n}" if n > 1 else device


def extract_with_workers(corpus: Corpus, out: str | Path, opts: ExtractionOptions, workers: int,
                         scheduler: str | None = None, progress: bool = True) -> ExtractionReport:
    """Extract `workers` parts as Dask tasks (a local cluster of that many one-thread worker
    processes, or the cluster at `scheduler`), then combine them into `out`. A rerun resumes the
    unfinished parts; a finished part is only reopened (its model loaded to check its identity)."""
    from dask.distributed import as_completed

    from pipeline.grid.runner import dask_client

    t0 = time.perf_counter()
    out = Path(out)
    check_combine_target(out, opts.overwrite)  # before hours of extraction, not at the combine after them
    check_unique_ids(corpus)
    part_range(len(corpus.utterances), opts.batch_size, 0, workers)  # refuses a split with an empty part
    reports: list[ExtractionReport] = []
    failed: list[str] = []
    with dask_client(scheduler, workers) as client:
        futures = {}
        for k in range(workers):
            part_opts = opts if scheduler else dataclasses.replace(opts, device=local_device(opts.device, k))
            fut = client.submit(extract_part, corpus, out, part_opts, k, workers, False, pure=False,
                                key=f"nser-extract-part-{k}-of-{workers}")
            futures[fut] = k
        for fut in as_completed(futures):
            try:
                reports.append(fut.result())
            except Exception as exc:  # noqa: BLE001 - every part's outcome is reported, not only the first
                failed.append(f"part {futures[fut]}: {type(exc).__name__}: {exc}")
    if failed:
        raise CacheError(f"{len(failed)} of {workers} part(s) failed; the others are kept in {parts_dir(out)}, "
                         "and rerunning the same command resumes:\n  " + "\n  ".join(failed))
    combined = combine_parts(parts_dir(out), out, overwrite=opts.overwrite)
    return ExtractionReport(combined.path, combined.n_utterances, sum(r.n_new for r in reports), combined.errors,
                            time.perf_counter() - t0, sum(r.audio_seconds for r in reports))
