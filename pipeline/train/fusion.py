"""Layer fusion models over cached Whisper states, keyed by name (`--fusion`)."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

FUSIONS: dict[str, Callable[..., nn.Module]] = {}


def register_fusion(name: str):
    def deco(cls):
        FUSIONS[name] = cls
        return cls
    return deco


class LayerAdapter(nn.Module):
    """BiGRU (256 per direction) -> max-pool over valid frames -> ReLU -> LayerNorm (paper eq. 5-6).

    Padded frames are excluded from the GRU by packing and from the max-pool by masking."""

    def __init__(self, d_in: int, hidden: int = 256):
        super().__init__()
        self.gru = nn.GRU(d_in, hidden, batch_first=True, bidirectional=True)
        self.norm = nn.LayerNorm(2 * hidden)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.gru(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        mask = torch.arange(x.shape[1], device=x.device)[None, :] < lengths.to(x.device)[:, None]
        out = out.masked_fill(~mask[:, :, None], float("-inf"))
        return self.norm(torch.relu(out.max(dim=1).values))


@register_fusion("l-adapter")
class LayerAdapterFusion(nn.Module):
    """One adapter per selected layer, a learnable softmax-weighted sum (eq. 7), dropout, FC (eq. 8)."""

    def __init__(self, n_layers: int, d_in: int, n_classes: int, hidden: int = 256, dropout: float = 0.5):
        super().__init__()
        self.adapters = nn.ModuleList(LayerAdapter(d_in, hidden) for _ in range(n_layers))
        self.layer_logits = nn.Parameter(torch.zeros(n_layers))
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(2 * hidden, n_classes)

    def layer_weights(self) -> torch.Tensor:
        return torch.softmax(self.layer_logits, dim=0)

    def forward(self, layers: list[torch.Tensor], lengths: list[torch.Tensor]) -> torch.Tensor:
        adapted = torch.stack([a(x, n) for a, x, n in zip(self.adapters, layers, lengths)], dim=0)
        fused = (self.layer_weights()[:, None, None] * adapted).sum(dim=0)
        return self.classifier(self.dropout(fused))


def build_fusion(name: str, **kwargs) -> nn.Module:
    if name not in FUSIONS:
        raise ValueError(f"unknown fusion {name!r}; known: {', '.join(sorted(FUSIONS))}")
    return FUSIONS[name](**kwargs)
