"""Layer fusion models and baseline heads over cached states, keyed by name (`--fusion`; what each name
means to the trainer, grid and report, e.g. which layers it trains on, is in fusion_specs.py).

Every fusion takes ``(layers, lengths)``: one padded ``[B, T, d]`` tensor and one ``[B]`` length
tensor per selected layer, encoder layers first, then decoder layers (as the dataset yields them).
`l-adapter` is the paper's method (one BiGRU adapter per layer, then a weighted sum). All the
other fusions mix the layers frame by frame *before* a single shared head, so that in a
comparison only the fusion differs; see docs/fusions.md for the equations and the rule for
selections that span both stacks. `fc` and `mean-fc` are the paper's baseline heads (Table II):
an FC network on one vector per utterance (openSMILE functionals, or a mean over frames).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from pipeline.errors import LayerSelectionError
from pipeline.train.fusion_specs import fusion_spec

FUSIONS: dict[str, Callable[..., nn.Module]] = {}


def register_fusion(name: str):
    """The model of fusion `name`, which must be in FUSION_SPECS: a model the trainer, grid and
    report know nothing about could not be trained or reported."""
    fusion_spec(name)

    def deco(cls):
        FUSIONS[name] = cls
        return cls
    return deco


def valid_mask(lengths: torch.Tensor, total: int, device: torch.device) -> torch.Tensor:
    """[B, T] bool, True on real frames."""
    return torch.arange(total, device=device)[None, :] < lengths.to(device)[:, None]


def reverse_within_length(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each sequence's first `length` steps in place of time, leaving the padding after them."""
    t = torch.arange(x.shape[1], device=x.device)[None, :]
    n = lengths.to(x.device)[:, None]
    idx = torch.where(t < n, n - 1 - t, t)
    return x.gather(1, idx[:, :, None].expand(-1, -1, x.shape[2]))


class BiGRU(nn.Module):
    """A bidirectional GRU that is exact on padded batches without packing.

    Each direction is a unidirectional GRU run over right-padded input: the forward one never sees
    padding before a real frame, and the backward one runs over each sequence reversed within its
    own length, so it starts at the last real frame. Same function as a packed bidirectional GRU,
    ~2x faster on CPU, where packed sequences fall back to a slow per-step path."""

    def __init__(self, d_in: int, hidden: int):
        super().__init__()
        self.forward_gru = nn.GRU(d_in, hidden, batch_first=True)
        self.backward_gru = nn.GRU(d_in, hidden, batch_first=True)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        fwd, _ = self.forward_gru(x)
        bwd, _ = self.backward_gru(reverse_within_length(x, lengths))
        return torch.cat([fwd, reverse_within_length(bwd, lengths)], dim=2)


class LayerAdapter(nn.Module):
    """BiGRU (256 per direction) -> dropout -> max-pool over valid frames -> ReLU -> LayerNorm
    (paper eq. 5-6).

    The paper gives the adapter's BiGRU a dropout of 0.5; a one-layer GRU has no inner dropout, so
    it is read as dropout on the BiGRU's output frames (`dropout`; 0 turns it off and draws no
    random numbers). Padded frames never reach a real frame's GRU state (see BiGRU) and are masked
    out of the max-pool."""

    def __init__(self, d_in: int, hidden: int = 256, dropout: float = 0.0):
        super().__init__()
        self.gru = BiGRU(d_in, hidden)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(2 * hidden)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        out = self.dropout(self.gru(x, lengths))
        mask = valid_mask(lengths, x.shape[1], x.device)
        out = out.masked_fill(~mask[:, :, None], float("-inf"))
        return self.norm(torch.relu(out.max(dim=1).values))


@register_fusion("l-adapter")
class LayerAdapterFusion(nn.Module):
    """One adapter per selected layer, a learnable softmax-weighted sum (eq. 7), dropout, FC (eq. 8).

    Each layer has its own adapter, so encoder and decoder layers need no special handling:
    `n_encoder`/`n_decoder` are accepted (every fusion gets them) and ignored."""

    def __init__(self, n_layers: int, d_in: int, n_classes: int, hidden: int = 256, dropout: float = 0.5,
                 n_encoder: int | None = None, n_decoder: int | None = None, adapter_dropout: float = 0.0):
        super().__init__()
        self.adapters = nn.ModuleList(LayerAdapter(d_in, hidden, adapter_dropout) for _ in range(n_layers))
        self.layer_logits = nn.Parameter(torch.zeros(n_layers))
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(2 * hidden, n_classes)

    def layer_weights(self) -> torch.Tensor:
        return torch.softmax(self.layer_logits, dim=0)

    def forward(self, layers: list[torch.Tensor], lengths: list[torch.Tensor]) -> torch.Tensor:
        adapted = torch.stack([a(x, n) for a, x, n in zip(self.adapters, layers, lengths)], dim=0)
        fused = (self.layer_weights()[:, None, None] * adapted).sum(dim=0)
        return self.classifier(self.dropout(fused))


# --- frame-level mixers: [k, B, T, d] (k layers of one stack) -> [B, T, d] ----------------------

class MeanMix(nn.Module):
    """Uniform average; no parameters (for k = 1 it is the identity, which `single` relies on)."""

    def __init__(self, k: int, d: int):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=0)


class WeightedSumMix(nn.Module):
    """softmax(w) over layers, as the s3prl Featurizer; w starts at 0, i.e. at the mean."""

    def __init__(self, k: int, d: int):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(k))

    def weights(self) -> torch.Tensor:
        return torch.softmax(self.logits, dim=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("k,kbtd->btd", self.weights(), x)


class ScalarMix(WeightedSumMix):
    """ELMo scalar mix: gamma * sum_l softmax(s)_l * LN(h_l).

    LN is a parameter-free layer norm of each frame vector (on by default). Whisper's states
    differ in scale by orders of magnitude across depth (the last one is post-LayerNorm, the
    embeddings are small), so without it the loudest layer dominates whatever the weights say.
    Per frame rather than ELMo's statistics over the whole batch, so an utterance's output does
    not depend on its batch mates or on padding. gamma lets the head re-scale the normalized mix."""

    def __init__(self, k: int, d: int, layer_norm: bool = True):
        super().__init__(k, d)
        self.gamma = nn.Parameter(torch.ones(()))
        self.layer_norm = layer_norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.layer_norm:
            x = F.layer_norm(x, x.shape[-1:])
        return self.gamma * super().forward(x)


class AttentionMix(nn.Module):
    """Attention pooling over layers, per frame: a_{l,t} = softmax_l(q . LN(h_{l,t})), out_t = sum_l a_{l,t} h_{l,t}.

    The query q (d parameters) scores a parameter-free layer-normalized copy so that a layer's
    overall scale does not decide its score; the mix itself uses the raw states. q starts at 0, so
    training starts from the mean (and the head's initialization matches the other fusions'). No
    bias: a constant shared by all layers cancels in the softmax."""

    def __init__(self, k: int, d: int):
        super().__init__()
        self.query = nn.Parameter(torch.zeros(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = F.layer_norm(x, x.shape[-1:]) @ self.query  # [k, B, T]
        return (torch.softmax(scores, dim=0)[..., None] * x).sum(dim=0)


def _stack_sizes(n_layers: int, n_encoder: int | None, n_decoder: int | None) -> tuple[int, int]:
    """Without stack info all layers are taken as one stack (the encoder)."""
    n_decoder = n_decoder or 0
    n_encoder = n_layers - n_decoder if n_encoder is None else n_encoder
    if n_encoder < 0 or n_encoder + n_decoder != n_layers:
        raise ValueError(f"n_encoder={n_encoder} + n_decoder={n_decoder} != n_layers={n_layers}")
    return n_encoder, n_decoder


class FrameFusion(nn.Module):
    """Mix the layers of each stack frame by frame, then the shared head: one layer adapter
    (BiGRU -> masked max-pool -> ReLU -> LayerNorm) per stack, dropout, FC.

    Encoder frames and decoder tokens are different time axes, so the stacks cannot be mixed
    frame by frame with each other: each stack present in the selection gets its own mixer and
    head, and the pooled stack embeddings are averaged before dropout and FC. With one stack this
    is exactly one adapter + classifier on the mixed sequence, so `single` equals a one-layer
    `l-adapter` and all these fusions have the same downstream capacity."""

    mixer: type[nn.Module] = MeanMix

    def __init__(self, n_layers: int, d_in: int, n_classes: int, hidden: int = 256, dropout: float = 0.5,
                 n_encoder: int | None = None, n_decoder: int | None = None, adapter_dropout: float = 0.0,
                 **mixer_kwargs):
        super().__init__()
        if n_layers < 1:
            raise LayerSelectionError("a fusion needs at least one layer")
        self.stack_sizes = [k for k in _stack_sizes(n_layers, n_encoder, n_decoder) if k]
        self.mixers = nn.ModuleList(self.mixer(k, d_in, **mixer_kwargs) for k in self.stack_sizes)
        self.heads = nn.ModuleList(LayerAdapter(d_in, hidden, adapter_dropout) for _ in self.stack_sizes)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(2 * hidden, n_classes)

    def forward(self, layers: list[torch.Tensor], lengths: list[torch.Tensor]) -> torch.Tensor:
        if len(layers) != sum(self.stack_sizes):
            raise ValueError(f"expected {sum(self.stack_sizes)} layers, got {len(layers)}")
        pooled, start = [], 0
        for k, mixer, head in zip(self.stack_sizes, self.mixers, self.heads):
            xs, n = layers[start:start + k], lengths[start]
            if any(x.shape != xs[0].shape for x in xs):
                raise ValueError(f"layers of one stack must share a time axis, got {[tuple(x.shape) for x in xs]}")
            start += k
            mixed = mixer(torch.stack(xs, dim=0))
            # Zero the padding so no mixer output on padded frames can reach the head.
            mixed = mixed.masked_fill(~valid_mask(n, mixed.shape[1], mixed.device)[:, :, None], 0.0)
            pooled.append(head(mixed, n))
        return self.classifier(self.dropout(torch.stack(pooled, dim=0).mean(dim=0)))


class _LearnedWeightsMixin:
    """`layer_weights()`: each stack's softmax weights, encoder then decoder (each stack sums to 1)."""

    mixers: nn.ModuleList

    def layer_weights(self) -> torch.Tensor:
        return torch.cat([m.weights() for m in self.mixers])


@register_fusion("single")
class SingleLayerFusion(FrameFusion):
    """One layer through the shared head. `last` and `best` are this model; their FusionSpec
    decides which layer."""

    def __init__(self, n_layers: int, *args, **kwargs):
        if n_layers != 1:
            raise LayerSelectionError(
                f"a single-layer fusion needs exactly one layer, got {n_layers}; select one with e.g. "
                "--layers enc:6, or use --fusion best to pick one of several by validation")
        super().__init__(n_layers, *args, **kwargs)


register_fusion("last")(SingleLayerFusion)
register_fusion("best")(SingleLayerFusion)


@register_fusion("mean")
class MeanFusion(FrameFusion):
    mixer = MeanMix


@register_fusion("attention")
class AttentionFusion(FrameFusion):
    """Weights depend on the frame, so there is no static `layer_weights()`."""

    mixer = AttentionMix


@register_fusion("scalar-mix")
class ScalarMixFusion(_LearnedWeightsMixin, FrameFusion):
    """`layer_norm=False` turns off the per-frame normalization before mixing."""

    mixer = ScalarMix


@register_fusion("weighted-sum")
class WeightedSumFusion(_LearnedWeightsMixin, FrameFusion):
    mixer = WeightedSumMix


# --- the paper's baseline heads (Table II): one vector per utterance -> FC ------------------------

@torch.no_grad()
def set_moments(mean: torch.Tensor, std: torch.Tensor, n, total: torch.Tensor, squares: torch.Tensor) -> None:
    """Write into the `mean` and `std` buffers the moments of `n` values with these float64 sums; a
    constant feature keeps std 1 instead of dividing by zero."""
    m = total / n
    s = (squares / n - m * m).clamp_min(0).sqrt()
    mean.copy_(m.to(mean))
    std.copy_(torch.where(s > 1e-12, s, torch.ones_like(s)).to(std))


class VectorHead(nn.Module):
    """Standardise -> FC (2 x hidden units: 512 at the default, the paper's HSF size) -> ReLU ->
    dropout -> classifier, on one vector per utterance (`pool`).

    The mean and std are buffers, set by `fit_input_stats` from the training part only (the trainer
    calls it before the first epoch), so validation and test utterances are standardised with
    statistics they took no part in; they travel with the model's state (checkpoints)."""

    def __init__(self, n_layers: int, d_in: int, n_classes: int, hidden: int = 256, dropout: float = 0.5,
                 n_encoder: int | None = None, n_decoder: int | None = None, adapter_dropout: float = 0.0):
        super().__init__()
        if n_layers != 1:
            raise LayerSelectionError(f"this head takes exactly one layer, got {n_layers}; e.g. --layers enc:0")
        self.register_buffer("mean", torch.zeros(d_in))
        self.register_buffer("std", torch.ones(d_in))
        self.fc = nn.Linear(d_in, 2 * hidden)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(2 * hidden, n_classes)

    def pool(self, layers: list[torch.Tensor], lengths: list[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def fit_input_stats(self, batches) -> None:
        """Per-feature mean and std of the pooled vectors of `batches` (the training part); a
        constant feature keeps std 1 instead of dividing by zero."""
        n, total, squares = 0, 0.0, 0.0
        for batch in batches:
            v = self.pool(batch["layers"], batch["lengths"]).double()
            n, total, squares = n + len(v), total + v.sum(dim=0), squares + (v * v).sum(dim=0)
        set_moments(self.mean, self.std, n, total, squares)

    def forward(self, layers: list[torch.Tensor], lengths: list[torch.Tensor]) -> torch.Tensor:
        x = (self.pool(layers, lengths) - self.mean) / self.std
        return self.classifier(self.dropout(torch.relu(self.fc(x))))


@register_fusion("fc")
class FCHead(VectorHead):
    """The paper's HSF head: the utterance's one stored vector (openSMILE functionals)."""

    def pool(self, layers: list[torch.Tensor], lengths: list[torch.Tensor]) -> torch.Tensor:
        (x,) = layers
        if x.shape[1] != 1:
            raise ValueError(f"--fusion fc takes one vector per utterance, got sequences of {x.shape[1]} frames")
        return x[:, 0]


@register_fusion("mean-fc")
class MeanFCHead(VectorHead):
    """The paper's SSL head: mean over the utterance's valid frames of one state, then the FC head."""

    def pool(self, layers: list[torch.Tensor], lengths: list[torch.Tensor]) -> torch.Tensor:
        (x,), (n,) = layers, lengths
        mask = valid_mask(n, x.shape[1], x.device)[:, :, None]
        return (x * mask).sum(dim=1) / n.to(x.device)[:, None].clamp_min(1)


class StandardizedStates(nn.Module):
    """`--state-norm`: each selected layer's states standardised per feature, (x - mean) / std, with
    the mean and std of the training part's real frames of that layer, before the fusion.

    Why an option: Whisper's states are not on one scale. A few encoder dimensions reach ~450 where
    the typical frame has RMS ~1, decoder blocks 3-5 put RMS ~8 on the language-token position, and
    dec6 is ~30x the other decoder blocks (docs/results.md, "State scales"); a GRU's gates saturate on
    such inputs and a frame-level mix follows the loudest layer, while a linear probe standardises its
    features. Not the paper's recipe (raw states into the BiGRU), so not the default. The statistics
    are buffers, set by `fit_input_stats` from the training part only (validation and test frames
    take no part) and kept in the model's state (checkpoints); padding stays zero."""

    def __init__(self, fusion: nn.Module, n_layers: int, d_in: int):
        super().__init__()
        self.fusion = fusion
        self.register_buffer("mean", torch.zeros(n_layers, d_in))
        self.register_buffer("std", torch.ones(n_layers, d_in))

    @torch.no_grad()
    def fit_input_stats(self, batches) -> None:
        """Per layer and feature, mean and std over the real frames of `batches` (float64 sums); a
        constant feature keeps std 1 instead of dividing by zero."""
        n = torch.zeros(self.mean.shape[0], 1, dtype=torch.float64)
        total = torch.zeros(self.mean.shape, dtype=torch.float64)
        squares = torch.zeros(self.mean.shape, dtype=torch.float64)
        for batch in batches:
            for i, (x, length) in enumerate(zip(batch["layers"], batch["lengths"])):
                frames = x[valid_mask(length, x.shape[1], x.device)].double().cpu()  # [real frames, d]
                n[i] += len(frames)
                total[i] += frames.sum(dim=0)
                squares[i] += (frames * frames).sum(dim=0)
        set_moments(self.mean, self.std, n.clamp_min(1), total, squares)

    def forward(self, layers: list[torch.Tensor], lengths: list[torch.Tensor]) -> torch.Tensor:
        normed = []
        for i, (x, length) in enumerate(zip(layers, lengths)):
            mask = valid_mask(length, x.shape[1], x.device)[:, :, None]
            normed.append(((x - self.mean[i]) / self.std[i]).masked_fill(~mask, 0.0))
        return self.fusion(normed, lengths)


def layer_weights_of(model: nn.Module) -> torch.Tensor | None:
    """The learned layer weights of a built fusion (behind StandardizedStates or not); None for a
    fusion without static ones."""
    inner = model.fusion if isinstance(model, StandardizedStates) else model
    return inner.layer_weights() if hasattr(inner, "layer_weights") else None


def build_fusion(name: str, state_norm: bool = False, **kwargs) -> nn.Module:
    """The model of fusion `name`; with `state_norm`, behind StandardizedStates."""
    if name not in FUSIONS:
        raise ValueError(f"unknown fusion {name!r}; known: {', '.join(sorted(FUSIONS))}")
    model = FUSIONS[name](**kwargs)
    return StandardizedStates(model, kwargs["n_layers"], kwargs["d_in"]) if state_norm else model
