"""WhisperLayerExtractor: one encoder pass and one teacher-forced decoder pass per utterance.

The encoder runs on Whisper's standard 30 s padded context by default ("padded"), as the model was
trained; only the frames covering real audio are kept. "trimmed" runs on the real length only:
faster, but states drift with depth (docs/extraction.md). The decoder input is the prompt
(start, language, transcribe, no-timestamps) + text tokens + end-of-text, where the text is
Whisper's own greedy hypothesis or the ground-truth transcript.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch.nn import functional as F
from transformers.modeling_outputs import BaseModelOutput
from transformers.utils import logging as transformers_logging

from pipeline.errors import NserError
from pipeline.models.loader import LoadedWhisper

FRAME_RATE = 50.0  # encoder frames per second (10 ms mel hop, stride-2 conv)
HOP = 160
MAX_TARGET = 448


class TranscriptTooLong(NserError):
    """A ground-truth transcript whose decoder input does not fit the model's positions: a per-file
    error, since the decoder cannot take it and cutting it would cache states of another text."""


@dataclass
class ExtractedUtterance:
    encoder: list[np.ndarray]  # n_encoder_states x [n_frames, d] float16
    decoder: list[np.ndarray]  # n_decoder_states x [n_tokens, d] float16
    tokens: np.ndarray  # decoder input ids, int32
    hypothesis: str
    hyp_loop: bool
    hyp_capped: bool


def n_encoder_frames(n_samples: int) -> int:
    return min(1500, math.ceil(n_samples / 16000 * FRAME_RATE))


def hypothesis_token_bound(duration: float, prompt_len: int) -> int:
    """Fast speech is ~6 tokens/s; twice that plus slack bounds a sane hypothesis."""
    return min(MAX_TARGET - prompt_len - 1, int(math.ceil(12 * duration)) + 10)


def cut_repetition_loop(tokens: Sequence[int], min_total: int = 12) -> tuple[list[int], bool]:
    """Cut a hallucination loop: a unit of 1-16 tokens repeated back to back covering >= min_total
    tokens (and at least 3 times). The first occurrence of the unit is kept."""
    toks = list(tokens)
    n = len(toks)
    for start in range(n):
        for period in range(1, 17):
            reps = 1
            while start + (reps + 1) * period <= n and \
                    toks[start + reps * period:start + (reps + 1) * period] == toks[start:start + period]:
                reps += 1
            if reps >= 3 and reps * period >= min_total:
                return toks[:start + period], True
    return toks, False


class WhisperLayerExtractor:
    def __init__(self, whisper: LoadedWhisper, *, context: str = "padded", token_source: str = "hypothesis",
                 language: str | None = None):
        if context not in ("padded", "trimmed"):
            raise ValueError(f"context must be padded or trimmed, not {context!r}")
        if token_source not in ("hypothesis", "transcript"):
            raise ValueError(f"token_source must be hypothesis or transcript, not {token_source!r}")
        transformers_logging.set_verbosity_error()  # generate() warns about defaults we set on purpose
        self.w = whisper
        self.model = whisper.model
        self.tokenizer = whisper.processor.tokenizer
        self.feature_extractor = whisper.processor.feature_extractor
        self.context = context
        self.token_source = token_source
        self.language = language if whisper.is_multilingual else None
        self.device = next(self.model.parameters()).device
        self.dtype = next(self.model.parameters()).dtype
        self.eot = self.tokenizer.convert_tokens_to_ids("<|endoftext|>")
        self.prompt = self._prompt_ids()
        self.max_positions = int(getattr(self.model.config, "max_target_positions", MAX_TARGET))

    def transcript_tokens(self, transcript: str) -> list[int]:
        """Text tokens of a ground-truth transcript; TranscriptTooLong if prompt + text + end-of-text
        is over the decoder's positions (an index error deep in the decoder otherwise, for the
        whole batch, on every rerun)."""
        ids = self.tokenizer.encode(" " + transcript.strip(), add_special_tokens=False)
        n = len(self.prompt) + len(ids) + 1
        if n > self.max_positions:
            raise TranscriptTooLong(
                f"transcript is {len(ids)} tokens: with the {len(self.prompt)}-token prompt and end-of-text "
                f"{n} decoder positions, over the model's limit of {self.max_positions} (max_target_positions)")
        return ids

    def _prompt_ids(self) -> list[int]:
        tok = self.tokenizer.convert_tokens_to_ids
        ids = [tok("<|startoftranscript|>")]
        if self.w.is_multilingual:
            lang = tok(f"<|{self.language or 'en'}|>")
            if lang == self.tokenizer.unk_token_id or lang is None:
                raise ValueError(f"language {self.language!r} has no Whisper language token")
            ids += [lang, tok("<|transcribe|>")]
        return ids + [tok("<|notimestamps|>")]

    @torch.inference_mode()
    def encode(self, features: torch.Tensor) -> list[torch.Tensor]:
        """All encoder states (embedding output + each block; the last after the final LayerNorm),
        computed on whatever number of mel frames `features` has."""
        enc = self.model.model.encoder
        x = F.gelu(enc.conv1(features))
        x = F.gelu(enc.conv2(x)).permute(0, 2, 1)
        x = x + enc.embed_positions.weight[: x.shape[1]]
        states = [x]
        for layer in enc.layers:
            out = layer(x, None)
            x = out[0] if isinstance(out, tuple) else out
            states.append(x)
        states[-1] = enc.layer_norm(x)
        return states

    @torch.inference_mode()
    def extract(self, audios: Sequence[np.ndarray], transcripts: Sequence[str]) -> list[ExtractedUtterance]:
        feats = self.feature_extractor(list(audios), sampling_rate=16000, return_tensors="pt").input_features
        feats = feats.to(self.device, self.dtype)
        frames = [n_encoder_frames(len(a)) for a in audios]
        if self.context == "padded":
            enc_states = self.encode(feats)
            per_utt = [[s[b, :frames[b]] for s in enc_states] for b in range(len(audios))]
            cross = [enc_states[-1][b:b + 1] for b in range(len(audios))]
        else:
            per_utt, cross = [], []
            for b, nf in enumerate(frames):  # no encoder mask exists: lengths cannot share a batch
                st = self.encode(feats[b:b + 1, :, : 2 * nf])
                per_utt.append([s[0, :nf] for s in st])
                cross.append(st[-1])
        durations = [len(a) / 16000 for a in audios]
        if self.token_source == "hypothesis":
            texts, loops, capped = self._greedy(cross, durations)
        else:
            texts = [self.transcript_tokens(t) for t in transcripts]
            loops, capped = [False] * len(texts), [False] * len(texts)
        sequences = [self.prompt + t + [self.eot] for t in texts]
        dec_states = self._teacher_forced(sequences, cross)
        out = []
        for b in range(len(audios)):
            out.append(ExtractedUtterance(
                encoder=[s.float().cpu().numpy().astype(np.float16) for s in per_utt[b]],
                decoder=[s.float().cpu().numpy().astype(np.float16) for s in dec_states[b]],
                tokens=np.asarray(sequences[b], dtype=np.int32),
                hypothesis=self.tokenizer.decode(texts[b], skip_special_tokens=True).strip()
                if self.token_source == "hypothesis" else "",
                hyp_loop=loops[b], hyp_capped=capped[b]))
        return out

    def _greedy(self, cross: list[torch.Tensor], durations: list[float]):
        """Whisper's own greedy decoding (its suppression rules), bounded by duration."""
        bounds = [hypothesis_token_bound(d, len(self.prompt)) for d in durations]
        same_len = len({c.shape[1] for c in cross}) == 1
        groups = [list(range(len(cross)))] if same_len else [[i] for i in range(len(cross))]
        texts: list[list[int]] = [[] for _ in cross]
        for idx in groups:
            enc = torch.cat([cross[i] for i in idx], dim=0)
            kwargs = dict(task="transcribe", language=self.language) if self.w.is_multilingual else {}
            out = self.model.generate(
                encoder_outputs=BaseModelOutput(last_hidden_state=enc), max_new_tokens=max(bounds[i] for i in idx),
                do_sample=False, num_beams=1, return_timestamps=False, **kwargs)
            seqs = out.sequences if hasattr(out, "sequences") else out
            for row, i in enumerate(idx):
                toks = seqs[row].tolist()
                # generate() may or may not return the prompt (pitfall 3): drop any special prefix
                while toks and toks[0] in self.prompt:
                    toks = toks[1:]
                texts[i] = toks
        loops, capped = [], []
        for i, toks in enumerate(texts):
            ended = self.eot in toks
            toks = toks[: toks.index(self.eot)] if ended else toks
            hit_cap = not ended and len(toks) >= bounds[i]
            toks = toks[: bounds[i]]
            toks, looped = cut_repetition_loop(toks)
            texts[i] = toks
            loops.append(looped)
            capped.append(hit_cap)
        return texts, loops, capped

    def _teacher_forced(self, sequences: list[list[int]], cross: list[torch.Tensor]) -> list[list[torch.Tensor]]:
        longest = max(len(s) for s in sequences)
        # Right padding with end-of-text: a causal decoder's real positions never see it.
        ids = torch.tensor([s + [self.eot] * (longest - len(s)) for s in sequences], device=self.device)
        same_len = len({c.shape[1] for c in cross}) == 1
        if same_len:
            out = self.model.model.decoder(input_ids=ids, encoder_hidden_states=torch.cat(cross, 0),
                                           output_hidden_states=True, use_cache=False)
            states = out.hidden_states
            return [[s[b, : len(sequences[b])] for s in states] for b in range(len(sequences))]
        result = []
        for b, seq in enumerate(sequences):
            out = self.model.model.decoder(input_ids=ids[b:b + 1, : len(seq)], encoder_hidden_states=cross[b],
                                           output_hidden_states=True, use_cache=False)
            result.append([s[0] for s in out.hidden_states])
        return result
