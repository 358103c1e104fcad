"""Layer selection syntax: ``enc:all``, ``dec:0-4``, ``enc:10,12``, combined with commas.

Index 0 is the embedding output (before the first transformer block); index L is the last
block's output (after the final LayerNorm, as transformers returns it), so a model with L
blocks stores L+1 hidden states per stack.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pipeline.errors import LayerSelectionError

_STACKS = {"enc": "encoder", "encoder": "encoder", "dec": "decoder", "decoder": "decoder"}


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


def parse_layers(text: str, n_encoder_states: int, n_decoder_states: int) -> LayerSelection:
    """Parse a selection against the stored state counts (L+1 per stack)."""
    limits = {"encoder": n_encoder_states, "decoder": n_decoder_states}
    chosen: dict[str, list[int]] = {"encoder": [], "decoder": []}
    stack: str | None = None
    for raw in text.replace(";", ",").replace(" ", "").split(","):
        if not raw:
            continue
        m = re.fullmatch(r"(?:(enc|encoder|dec|decoder):)?(all|last|-?\d+(?:-\d+)?)", raw)
        if m is None:
            raise LayerSelectionError(
                f"bad layer selection item {raw!r} in {text!r}; "
                "use e.g. 'enc:all,dec:all', 'dec:0-4', 'enc:10,12', 'enc:last'"
            )
        if m.group(1):
            stack = _STACKS[m.group(1)]
        if stack is None:
            raise LayerSelectionError(f"layer item {raw!r} needs a stack prefix 'enc:' or 'dec:'")
        limit = limits[stack]
        item = m.group(2)
        if item == "all":
            idx = list(range(limit))
        elif item == "last":
            idx = [limit - 1]
        elif "-" in item[1:]:
            lo, hi = (int(x) for x in item.split("-"))
            if lo > hi:
                raise LayerSelectionError(f"empty layer range {raw!r}")
            idx = list(range(lo, hi + 1))
        else:
            idx = [int(item)]
        bad = [i for i in idx if not 0 <= i < limit]
        if bad:
            raise LayerSelectionError(
                f"{stack} layer(s) {bad} not in the cache: it stores {stack} states 0..{limit - 1}"
            )
        for i in idx:
            if i not in chosen[stack]:
                chosen[stack].append(i)
    if not chosen["encoder"] and not chosen["decoder"]:
        raise LayerSelectionError(f"layer selection {text!r} selects no layer")
    return LayerSelection(tuple(sorted(chosen["encoder"])), tuple(sorted(chosen["decoder"])))
