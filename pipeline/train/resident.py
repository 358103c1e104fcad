"""Training data read once: the run's layers, read shard-aligned and contiguous, kept in memory as stored (float16, or float32).

Reading the cache one utterance and one layer at a time, every epoch, cost about a third of a
layer-adapter epoch (and touched ~1.6x the utterances' bytes, through chunk edges). A run instead
reads the union of its selected layers over the utterances of its folds once: those utterances are
contiguous row ranges of each layer array, read as whole shard-aligned blocks. When that does not
fit the memory budget, each part of each fold streams its layers every epoch in blocks of one
shard of utterances, so an epoch still reads about the utterances' own bytes (docs/training.md).

In memory, batches are exactly those of the per-utterance path (same DataLoader, sampler and
generator, the same zero padding to the batch's longest, float16 states converted to float32 per
batch), so a run's results do not change. Streamed batches are shuffled within and across blocks
instead: a different (still seeded) order, recorded as the run's data mode.
"""

from __future__ import annotations

import os
import re
import time
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from pipeline.cache.reader import CacheReader
from pipeline.errors import NserError
from pipeline.layers import LayerSelection
from pipeline.train.batching import LengthBucketSampler
from pipeline.train.dataset import NonFiniteError, non_finite_message

STACKS = ("encoder", "decoder")


def default_memory_budget() -> int:
    """Half of the memory available now: the rest is for the model, its activations and the other
    processes (grid workers, extraction) on the machine."""
    try:
        import psutil
        available = int(psutil.virtual_memory().available)
    except ImportError:  # pragma: no cover - psutil is a dependency; sysconf is the fallback
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return available // 2


_UNITS = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_size(text: str | int) -> int:
    """Bytes from '8G', '512M', '1.5GiB', '0' or a plain number (the --memory-budget syntax)."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*", str(text).upper())
    if m is None:
        raise NserError(f"memory size {text!r}: use bytes or a number with K, M, G or T, e.g. 8G or 512M")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def _pieces(a: int, b: int, step: int) -> Iterator[tuple[int, int]]:
    """[a, b) cut at multiples of `step` (shard boundaries), so each read covers whole shards."""
    while a < b:
        c = min(b, (a // step + 1) * step)
        yield a, c
        a = c


class RunData:
    """The states one run trains and scores on: `selections` (every candidate's layers, e.g. each
    layer of `best`) over `indices` (every utterance of the run's folds). `mode` is "memory" when
    they fit `budget` bytes, else "stream". On a CUDA device, memory-resident states live on the
    GPU when they fit half its free memory."""

    def __init__(self, reader: CacheReader, selections: Sequence[LayerSelection], indices: Sequence[int],
                 budget: int, device: str | torch.device = "cpu"):
        self.reader = reader
        self.d = reader.d_model
        self.layers = {"encoder": sorted({i for s in selections for i in s.encoder}),
                       "decoder": sorted({i for s in selections for i in s.decoder})}
        self.indices = np.array(sorted(set(int(i) for i in indices)), dtype=np.int64)
        self.rows = {stack: reader.spans(stack) for stack in STACKS}
        item = reader.storage_dtype.itemsize  # float16; float32 for sources beyond its range
        self.nbytes = sum(len(self.layers[s]) * int(self.rows[s][1][self.indices].sum()) * self.d * item
                          for s in STACKS)
        self.budget = int(budget)
        self.mode = "memory" if self.nbytes <= self.budget else "stream"
        self.device = torch.device(device)
        # (stack, layer) -> per cached utterance, False once a read found a NaN/Inf in its states
        self.finite = {(s, i): np.ones(reader.n, dtype=bool) for s in STACKS for i in self.layers[s]}
        self.bytes_read = 0
        self.read_seconds = 0.0
        self.on = "cpu"
        self.shared_by = 1  # runs trained from these states (a grid's packed task, pipeline/grid/packing.py)
        self._takes: dict[tuple, Any] = {}

    def prepare(self) -> "RunData":
        """Read the states into memory (memory mode); a no-op when streaming."""
        if self.mode == "memory" and not hasattr(self, "buf"):
            self._load()
        return self

    # --- reading -------------------------------------------------------------------------------
    def _shard_rows(self, stack: str, layer: int) -> int:
        arr = self.reader.array(stack, layer)
        return int((arr.shards or arr.chunks)[0])

    def _read(self, stack: str, layers: Sequence[int], indices: np.ndarray
              ) -> tuple[torch.Tensor, np.ndarray]:
        """States [len(layers), rows, d] (storage dtype) of `indices` (sorted) in index order, and each one's
        first row in it. Consecutive utterances are one contiguous span, read in shard-aligned
        pieces; the finite flags of every utterance read are updated here."""
        t0 = time.perf_counter()
        lo, n = self.rows[stack][0][indices], self.rows[stack][1][indices]
        pos = np.concatenate([[0], np.cumsum(n)])
        out = np.empty((len(layers), int(pos[-1]), self.d), dtype=self.reader.storage_dtype)
        # spans of consecutive rows: a new span starts where an utterance does not follow the previous
        starts = np.flatnonzero(np.concatenate([[True], lo[1:] != lo[:-1] + n[:-1]]))
        spans = [(int(lo[s]), int(lo[e - 1] + n[e - 1]), int(pos[s]))
                 for s, e in zip(starts, list(starts[1:]) + [len(indices)])]
        for j, layer in enumerate(layers):
            arr, step = self.reader.array(stack, layer), self._shard_rows(stack, layer)
            for a, b, at in spans:
                for p, q in _pieces(a, b, step):
                    out[j, at + p - a: at + q - a] = arr[p:q]
            bad = np.concatenate([[0], np.cumsum(~np.isfinite(out[j]).all(axis=1))])
            self.finite[(stack, layer)][indices] = bad[pos[1:]] == bad[pos[:-1]]
        self.bytes_read += out.nbytes
        self.read_seconds += time.perf_counter() - t0
        return torch.from_numpy(out), pos[:-1]

    def _load(self) -> None:
        self.buf: dict[str, torch.Tensor] = {}
        self.pos: dict[str, np.ndarray] = {}
        on_gpu = self.device.type == "cuda" and self.nbytes <= torch.cuda.mem_get_info(self.device)[0] // 2
        for stack in STACKS:
            if not self.layers[stack]:
                continue
            states, first = self._read(stack, self.layers[stack], self.indices)
            self.buf[stack] = states.to(self.device) if on_gpu else states
            self.pos[stack] = np.full(self.reader.n, -1, dtype=np.int64)
            self.pos[stack][self.indices] = first
        self.on = str(self.device) if on_gpu else "cpu"

    # --- batches -------------------------------------------------------------------------------
    def _batch(self, stack: str, chosen: Sequence[int], sources: list[tuple[torch.Tensor, Any, int]],
               lengths: np.ndarray) -> torch.Tensor:
        """[len(chosen), B, T, d] float32, zero-padded to the batch's longest: the per-utterance
        collate's values exactly (float16 -> float32 is exact, and it also pads with zeros)."""
        src0 = sources[0][0]
        out = torch.zeros((len(chosen), len(sources), int(lengths.max()), self.d), dtype=src0.dtype,
                          device=src0.device)
        for b, ((src, take, row), m) in enumerate(zip(sources, lengths.tolist())):
            out[:, b, :m] = src[take, row:row + m]
        out = out.float()
        # states held on the CPU for a GPU run (streamed, or too large for it): a page-locked batch,
        # which the trainer copies with non_blocking while the GPU is still at work
        return out.pin_memory() if self.device.type == "cuda" and out.device.type == "cpu" else out

    def _take(self, stack: str, chosen: Sequence[int], held: Sequence[int]) -> Any:
        """Index of `chosen` layers along the layer axis of a buffer holding `held`: a slice (a view)
        when they are consecutive there, as for a whole selection or one layer."""
        key = (tuple(chosen), tuple(held))
        if key not in self._takes:
            at = [list(held).index(i) for i in chosen]
            self._takes[key] = (slice(at[0], at[0] + len(at)) if at == list(range(at[0], at[0] + len(at)))
                                else torch.tensor(at))
        return self._takes[key]

    def make_batch(self, items: list[tuple[int, dict[str, tuple[torch.Tensor, Sequence[int], int]]]],
                   selection: LayerSelection) -> dict[str, Any]:
        """A batch of (cache index, per stack: (states buffer, its layers, the utterance's first row))."""
        index = [i for i, _ in items]
        layers, lengths = [], []
        for stack, chosen in (("encoder", selection.encoder), ("decoder", selection.decoder)):
            if not chosen:
                continue
            n = self.rows[stack][1][index]
            sources = [(src[stack][0], self._take(stack, chosen, src[stack][1]), src[stack][2]) for _, src in items]
            layers.extend(self._batch(stack, chosen, sources, n).unbind(0))
            lens = torch.tensor(n.tolist())
            lengths.extend([lens] * len(chosen))
        return {"layers": layers, "lengths": lengths, "index": torch.tensor(index)}

    def check_finite(self, batch: dict, selection: LayerSelection, part: str) -> None:
        """Refuse a batch holding an utterance whose states had a NaN/Inf when read, naming the layer,
        the utterances and the part, as the per-utterance path does (a lookup, not a scan per batch)."""
        index = batch["index"].numpy()
        pairs = [("encoder", i) for i in selection.encoder] + [("decoder", i) for i in selection.decoder]
        for name, key in zip(selection.names, pairs):
            ok = self.finite[key][index]
            if ok.all():
                continue
            ids = [str(self.reader.table["utt_id"][int(i)]) for i in index[~ok]]
            raise NonFiniteError(non_finite_message(name, ids, part))

    # --- parts ---------------------------------------------------------------------------------
    def loader(self, indices: Sequence[int], selection: LayerSelection, class_ids: dict[str, int],
               batch_size: int, part: str, generator: torch.Generator | None = None,
               length_buckets: bool = False) -> Any:
        """Batches of one part (shuffled, reproducibly, exactly when a generator is given; grouped by
        length when `length_buckets`, pipeline/train/batching.py)."""
        p = RunPart(self, indices, selection, class_ids, part)
        if length_buckets and generator is not None:
            if self.mode != "memory":
                raise NserError(f"length-bucketed batches need the run's states in memory, but they are streamed "
                                f"({self.nbytes} bytes > memory budget {self.budget}): raise --memory-budget, or "
                                "train without --length-buckets")
            stack = "encoder" if selection.encoder else "decoder"
            lengths = self.rows[stack][1][np.asarray(p.indices, dtype=np.int64)]
            return DataLoader(p, batch_sampler=LengthBucketSampler(lengths, batch_size, generator),
                              collate_fn=p.collate)
        if self.mode == "memory":
            # The per-utterance path's DataLoader, sampler and generator draws: the same batches.
            return DataLoader(p, batch_size=batch_size, shuffle=generator is not None, generator=generator,
                              collate_fn=p.collate)
        return StreamLoader(p, batch_size, generator)

    def blocks(self, indices: Sequence[int]) -> list[list[int]]:
        """Utterances (sorted) grouped by the shard of their first row in the lead stack (the encoder
        when selected): consecutive utterances only, so a block is one contiguous span per layer."""
        stack = "encoder" if self.layers["encoder"] else "decoder"
        step = self._shard_rows(stack, self.layers[stack][0])
        lo = self.rows[stack][0]
        out: list[list[int]] = []
        for i in sorted(int(k) for k in indices):
            if out and i == out[-1][-1] + 1 and lo[i] // step == lo[out[-1][0]] // step:
                out[-1].append(i)
            else:
                out.append([i])
        return out

    def describe(self) -> dict[str, Any]:
        return {"mode": self.mode, "bytes": self.nbytes, "budget": self.budget, "on": self.on,
                "bytes_read": self.bytes_read, "read_seconds": round(self.read_seconds, 3),
                **({"shared_by": self.shared_by} if self.shared_by > 1 else {})}


class RunPart(Dataset):
    """One part (training, validation, test) of one fold for one selection. Items are positions;
    `collate` builds the batch from the resident states (`indices`, `selection`, `part` and
    `check_finite` as the per-utterance dataset has them)."""

    def __init__(self, data: RunData, indices: Sequence[int], selection: LayerSelection,
                 class_ids: dict[str, int], part: str):
        self.data = data
        self.indices = list(indices)
        self.selection = selection
        self.labels = [class_ids[str(data.reader.table["label"][i])] for i in self.indices]
        self.part = part

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> int:
        return k

    def _held(self, stack: str) -> tuple[torch.Tensor, Sequence[int]]:
        return self.data.buf[stack], self.data.layers[stack]

    def collate(self, positions: list[int]) -> dict[str, Any]:
        d = self.data
        items = [(self.indices[k], {s: (*self._held(s), int(d.pos[s][self.indices[k]])) for s in d.buf})
                 for k in positions]
        batch = d.make_batch(items, self.selection)
        batch["labels"] = torch.tensor([self.labels[k] for k in positions])
        return batch

    def check_finite(self, batch: dict) -> None:
        self.data.check_finite(batch, self.selection, self.part)


class StreamLoader:
    """Per epoch, reads the part's blocks (one shard of utterances each, this selection's layers only)
    and yields batches of `batch_size`. Shuffled: the block order and the order within each block
    come from the generator, and a batch may span two blocks; unshuffled: index order."""

    def __init__(self, part: RunPart, batch_size: int, generator: torch.Generator | None):
        self.dataset = part
        self.batch_size = batch_size
        self.generator = generator
        self.blocks = part.data.blocks(part.indices)
        self.labels = dict(zip(part.indices, part.labels))

    def __len__(self) -> int:
        return -(-len(self.dataset) // self.batch_size)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        d, sel, gen = self.dataset.data, self.dataset.selection, self.generator
        order = torch.randperm(len(self.blocks), generator=gen).tolist() if gen is not None else range(len(self.blocks))
        queue: list[tuple[int, dict]] = []
        for b in order:
            utts = self.blocks[b]
            held = {}
            for stack, chosen in (("encoder", sel.encoder), ("decoder", sel.decoder)):
                if chosen:
                    states, first = d._read(stack, chosen, np.array(utts, dtype=np.int64))
                    held[stack] = (states, chosen, dict(zip(utts, first.tolist())))
            if gen is not None:
                utts = [utts[k] for k in torch.randperm(len(utts), generator=gen).tolist()]
            queue.extend((u, {s: (h[0], h[1], h[2][u]) for s, h in held.items()}) for u in utts)
            while len(queue) >= self.batch_size:
                yield self._batch(queue[:self.batch_size])
                del queue[:self.batch_size]
        if queue:
            yield self._batch(queue)

    def _batch(self, items: list[tuple[int, dict]]) -> dict[str, Any]:
        batch = self.dataset.data.make_batch(items, self.dataset.selection)
        batch["labels"] = torch.tensor([self.labels[i] for i, _ in items])
        return batch
