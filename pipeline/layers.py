"""Layer selection syntax: ``enc:blocks``, ``enc:all``, ``dec:0-4``, ``enc:10,12``, combined with commas.

Index 0 is the embedding output (before the first transformer block); index L is the last
block's output (after the final LayerNorm, as transformers returns it), so a model with L
blocks stores L+1 hidden states per stack. ``blocks`` is 1..L, the blocks' outputs the paper's
adapters and layer-wise figures use (whisper-small: 12 + 12); ``all`` adds the embedding output.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pipeline.errors import LayerSelectionError

_STACKS = {"enc": "encoder", "encoder": "encoder", "dec": "decoder", "decoder": "decoder"}
# The paper's selection: every block of both stacks, without the embedding outputs.
PAPER_LAYERS = "enc:blocks,dec:blocks"


@dataclass(frozen=True)
class LayerSelection:
    encoder: tuple[int, ...]
    decoder: tuple[int, ...]

    @property
    def names(self) -> list[str]:
        return [f"enc{i}" for i in self.encoder] + [f"dec{i}" for i in self.decoder]

    def __len__(self) -> int:
        return len(self.encoder) + len(self.decoder)

    def spec(self) -> str:
        """Canonical string form, stable for hashing and logs."""
        parts = []
        if self.encoder:
            parts.append("enc:" + ",".join(map(str, self.encoder)))
        if self.decoder:
            parts.append("dec:" + ",".join(map(str, self.decoder)))
        return ";".join(parts)


def _short(text: str, n: int = 60) -> str:
    return text if len(text) <= n else text[:n] + "..."


def parse_layers(text: str, n_encoder_states: int, n_decoder_states: int, source: str = "whisper") -> LayerSelection:
    """Parse a selection against the stored state counts (L+1 per stack; an encoder-only `source`
    stores no decoder states)."""
    limits = {"encoder": n_encoder_states, "decoder": n_decoder_states}
    chosen: dict[str, list[int]] = {"encoder": [], "decoder": []}
    stack: str | None = None
    for raw in text.replace(";", ",").replace(" ", "").split(","):
        if not raw:
            continue
        m = re.fullmatch(r"(?:(enc|encoder|dec|decoder):)?(all|blocks|last|(-?\d{1,9})(?:-(-?\d{1,9}))?)", raw)
        if m is None:
            raise LayerSelectionError(
                f"bad layer selection item {_short(raw)!r} in {_short(text)!r}; "
                "use e.g. 'enc:blocks,dec:blocks', 'enc:all', 'dec:0-4', 'enc:10,12', 'enc:last'"
            )
        if m.group(1):
            stack = _STACKS[m.group(1)]
        if stack is None:
            raise LayerSelectionError(f"layer item {raw!r} needs a stack prefix 'enc:' or 'dec:'")
        limit = limits[stack]
        if not limit:
            raise LayerSelectionError(f"{_short(raw)!r}: the cache's {source} source stores no {stack} states "
                                      "(it has no decoder, unlike whisper); select encoder states, e.g. --layers enc:all")
        if m.group(2) == "all":
            idx = list(range(limit))
        elif m.group(2) == "blocks":
            if limit < 2:
                raise LayerSelectionError(f"'{stack[:3]}:blocks' needs a stack with blocks; the cache's {source} "
                                          f"source stores {limit} {stack} state(s): use '{stack[:3]}:all'")
            idx = list(range(1, limit))
        elif m.group(2) == "last":
            idx = [limit - 1]
        else:
            # Bounds first, then the list: 'enc:0-5000000' must not build five million indices to refuse.
            lo = int(m.group(3))
            hi = lo if m.group(4) is None else int(m.group(4))
            if lo < 0 or hi < 0:
                raise LayerSelectionError(f"negative layer index in {raw!r}: indices count from 0 (the embeddings) "
                                          f"to {limit - 1}; the last state is '{stack[:3]}:last'")
            if lo > hi:
                raise LayerSelectionError(f"empty layer range {raw!r}")
            if hi >= limit:
                shown = f"{lo}-{hi}" if hi > lo else f"{hi}"
                raise LayerSelectionError(
                    f"{stack} layer(s) {shown} not in the cache: it stores {stack} states 0..{limit - 1}"
                )
            idx = list(range(lo, hi + 1))
        for i in idx:
            if i not in chosen[stack]:
                chosen[stack].append(i)
    if not chosen["encoder"] and not chosen["decoder"]:
        raise LayerSelectionError(f"layer selection {text!r} selects no layer")
    return LayerSelection(tuple(sorted(chosen["encoder"])), tuple(sorted(chosen["decoder"])))


def stack_label(selection: LayerSelection, n_encoder_states: int, n_decoder_states: int) -> str | None:
    """`enc:blocks`, `enc:all,dec:blocks`, ... when each selected stack is whole (all its blocks,
    with or without the embedding output), whatever the spelling; None for a partial selection.
    Reports label runs by it, so `enc:1-6` and `enc:blocks` on whisper-base are one method."""
    parts = []
    for prefix, chosen, count in (("enc", selection.encoder, n_encoder_states),
                                  ("dec", selection.decoder, n_decoder_states)):
        if not chosen:
            continue
        if chosen == tuple(range(count)):
            parts.append(f"{prefix}:all")
        elif count > 1 and chosen == tuple(range(1, count)):
            parts.append(f"{prefix}:blocks")
        else:
            return None
    return ",".join(parts)
