"""TextLayerExtractor: every hidden state of a frozen BERT-style text encoder per token, as float16;
and `text_utterances`, the texts of an existing cache (its transcripts or its ASR hypotheses).

Each text is tokenised with the model's special tokens, so the stored rows are [CLS], the word
pieces, [SEP] (the first and last row are the special tokens). The states go to the `encoder`
stack (one row per token); there is no decoder, and `tokens` stays empty as for every
encoder-only source. Batching follows the speech extractor's policy: by default each text runs alone
(no padding), so stored values never depend on which texts share a batch; `batch_size > 1` pads
with an attention mask, which agrees with the single-text states to about one float16 step only
(docs/extraction.md) and so changes stored values.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from pipeline.errors import CacheError
from pipeline.extract.whisper_layers import ExtractedUtterance, TranscriptTooLong
from pipeline.models.hf_encoder import LoadedEncoder

TEXT_FIELDS = ("transcript", "hypothesis")


class TextLayerExtractor:
    def __init__(self, encoder: LoadedEncoder, *, batch_size: int = 1):
        self.enc = encoder
        self.model = encoder.model
        self.tokenizer = encoder.preprocessor
        self.device = next(self.model.parameters()).device
        self.batch_size = max(1, int(batch_size))
        self.max_tokens = int(getattr(self.model.config, "max_position_embeddings", 512))

    def token_ids(self, text: str) -> list[int]:
        """Input ids with [CLS]/[SEP]; TranscriptTooLong past the model's positions (cutting the text
        would cache states of another text)."""
        ids = self.tokenizer(text, add_special_tokens=True)["input_ids"]
        if len(ids) > self.max_tokens:
            raise TranscriptTooLong(f"{len(ids)} tokens is over {self.enc.name}'s {self.max_tokens} positions")
        return ids

    def extract(self, audios: Sequence[Any] | None, transcripts: Sequence[str]) -> list[ExtractedUtterance]:
        """States of each text in `transcripts` (the source's text; `audios` is not used)."""
        ids = [self.token_ids(t) for t in transcripts]
        states: list[list[np.ndarray]] = []
        for b0 in range(0, len(ids), self.batch_size):
            states.extend(self._forward(ids[b0:b0 + self.batch_size]))
        return [ExtractedUtterance(encoder=s, decoder=[], tokens=np.zeros(0, np.int32), hypothesis="",
                                   hyp_loop=False, hyp_capped=False) for s in states]

    @torch.inference_mode()
    def _forward(self, batch: list[list[int]]) -> list[list[np.ndarray]]:
        enc = self.tokenizer.pad({"input_ids": batch}, padding=True, return_attention_mask=True, return_tensors="pt")
        out = self.model(input_ids=enc["input_ids"].to(self.device),
                         attention_mask=enc["attention_mask"].to(self.device), output_hidden_states=True)
        return [[h[j, :len(ids)].float().cpu().numpy().astype(np.float16) for h in out.hidden_states]
                for j, ids in enumerate(batch)]


@dataclass(frozen=True)
class TextUtterance:
    utt_id: str
    speaker: str
    label: str
    fold: str
    language: str
    text: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TextUtterance":
        return cls(**{k: str(d[k]) for k in ("utt_id", "speaker", "label", "fold", "language", "text")})


def text_utterances(whisper_cache_path: str | Path, field: str) -> list[TextUtterance]:
    """The utterances of an existing cache with their `field` ("transcript" or "hypothesis") as the
    text a text cache will hold. A single empty text stays in the list (text ""): an empty
    hypothesis is a legitimate ASR output (speech masked by noise), so the text cache records it as
    that utterance's failure (`empty_text_reason`). Refused when no utterance has a text: the cache
    stores no hypotheses (token_source transcript) or the corpus no transcripts."""
    from pipeline.cache.reader import CacheReader

    if field not in TEXT_FIELDS:
        raise ValueError(f"field must be one of {', '.join(TEXT_FIELDS)}, not {field!r}")
    with CacheReader(whisper_cache_path) as reader:
        table = reader.table
        token_source = reader.meta.extraction.token_source
    rows = [TextUtterance(*(str(table[c][i]) for c in ("utt_id", "speaker", "label", "fold", "language")),
                          text=str(table[field][i]).strip())
            for i in range(len(table["utt_id"]))]
    if field == "hypothesis" and token_source != "hypothesis":
        raise CacheError(f"{whisper_cache_path}: this cache was extracted with token_source {token_source}, "
                         "which stores no hypotheses; a text cache of hypotheses needs a cache of token_source "
                         "hypothesis")
    if rows and not any(r.text for r in rows):
        why = " (the corpus has no transcripts)" if field == "transcript" else ""
        raise CacheError(f"{whisper_cache_path}: all {len(rows)} utterances have an empty {field}{why}; "
                         "a text cache needs texts")
    return rows


def empty_text_reason(field: str) -> str:
    """The error-table entry of an utterance whose `field` is empty."""
    if field == "hypothesis":
        return "empty hypothesis: the ASR model transcribed nothing (e.g. speech masked by noise)"
    return "empty transcript: the corpus has no transcript for this utterance"
