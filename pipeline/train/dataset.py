"""Streams cached states of the selected layers, one utterance at a time, into padded batches.

Training reads its states once instead (pipeline/train/resident.py); this per-utterance path is kept
as the reference those batches must equal, and for bench/train.py's comparison."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from pipeline.cache.reader import CacheReader
from pipeline.errors import NserError
from pipeline.layers import LayerSelection


class NonFiniteError(NserError):
    """Training met a NaN or Inf: in the cached states, the loss or the model's outputs."""


class CachedLayerDataset(Dataset):
    """Items are (states per selected layer, label id, cache index); only the selected layers' arrays
    are read. `part` says which part of which fold this is, for error messages."""

    def __init__(self, reader: CacheReader, indices: Sequence[int], selection: LayerSelection,
                 class_ids: dict[str, int], part: str = ""):
        self.reader = reader
        self.indices = list(indices)
        self.selection = selection
        self.labels = [class_ids[str(reader.table["label"][i])] for i in self.indices]
        self.part = part

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> tuple[list[np.ndarray], int, int]:
        return self.reader.read_states(self.indices[k], self.selection), self.labels[k], self.indices[k]

    def check_finite(self, batch: dict) -> None:
        """Refuse a batch with a NaN/Inf state, naming the layer and utterances: one isfinite per
        layer tensor, a per-utterance look only when that fails. Padding is zeros, never the cause."""
        for name, x in zip(self.selection.names, batch["layers"]):
            if bool(torch.isfinite(x).all()):
                continue
            bad = (~torch.isfinite(x)).flatten(1).any(dim=1)
            ids = [str(self.reader.table["utt_id"][int(i)]) for i in batch["index"][bad]]
            raise NonFiniteError(non_finite_message(name, ids, self.part))


def non_finite_message(layer: str, ids: list[str], part: str) -> str:
    shown = ", ".join(ids[:10]) + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")
    return (f"the cache holds non-finite (NaN/Inf) states in layer {layer} of utterance(s) {shown}"
            f"{f' ({part})' if part else ''}; training on them would only yield a meaningless "
            "UAR. Re-extract the cache (if fp16 computation overflowed: nser-extract --dtype float32), "
            "or leave that layer out with --layers")


class PerUtteranceData:
    """The former training data path: every epoch reads each utterance's layers from the cache.
    Same `loader` interface as RunData."""

    mode = "per-utterance"

    def __init__(self, reader: CacheReader):
        self.reader = reader

    def loader(self, indices: Sequence[int], selection: LayerSelection, class_ids: dict[str, int],
               batch_size: int, part: str, generator: torch.Generator | None = None,
               length_buckets: bool = False) -> DataLoader:
        """Shuffled (reproducibly) exactly when a generator is given: the training part."""
        if length_buckets:
            raise NserError("length-bucketed batches are built from the states read once into memory, "
                            "not on the per-utterance path")
        return DataLoader(CachedLayerDataset(self.reader, indices, selection, class_ids, part),
                          batch_size=batch_size, shuffle=generator is not None, generator=generator,
                          collate_fn=collate)

    def describe(self) -> dict:
        return {"mode": self.mode}


def collate(items: list[tuple[list[np.ndarray], int, int]]) -> dict[str, torch.Tensor | list[torch.Tensor]]:
    """Pads each layer to the batch's longest sequence; encoder and decoder have their own lengths."""
    n_layers = len(items[0][0])
    layers, lengths = [], []
    for j in range(n_layers):
        seqs = [torch.from_numpy(np.asarray(it[0][j], dtype=np.float32)) for it in items]
        layers.append(torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True))
        lengths.append(torch.tensor([s.shape[0] for s in seqs]))
    return {"layers": layers, "lengths": lengths, "labels": torch.tensor([it[1] for it in items]),
            "index": torch.tensor([it[2] for it in items])}
