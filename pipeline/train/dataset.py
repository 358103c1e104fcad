"""Streams cached states of the selected layers, one utterance at a time, into padded batches."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from pipeline.cache.reader import CacheReader
from pipeline.layers import LayerSelection


class CachedLayerDataset(Dataset):
    """Items are (states per selected layer, label id); only the selected layers' arrays are read."""

    def __init__(self, reader: CacheReader, indices: Sequence[int], selection: LayerSelection,
                 class_ids: dict[str, int]):
        self.reader = reader
        self.indices = list(indices)
        self.selection = selection
        self.labels = [class_ids[str(reader.table["label"][i])] for i in self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> tuple[list[np.ndarray], int]:
        return self.reader.read_states(self.indices[k], self.selection), self.labels[k]


def make_collate(n_encoder: int):
    """Pads each layer to the batch's longest sequence; encoder and decoder have their own lengths."""
    def collate(items: list[tuple[list[np.ndarray], int]]) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        n_layers = len(items[0][0])
        layers, lengths = [], []
        for j in range(n_layers):
            seqs = [torch.from_numpy(np.asarray(it[0][j], dtype=np.float32)) for it in items]
            layers.append(torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True))
            lengths.append(torch.tensor([s.shape[0] for s in seqs]))
        return {"layers": layers, "lengths": lengths, "labels": torch.tensor([it[1] for it in items])}
    return collate
