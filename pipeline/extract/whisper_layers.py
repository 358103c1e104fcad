"""WhisperLayerExtractor: one encoder pass and one teacher-forced decoder pass per utterance.

The encoder runs on Whisper's standard 30 s padded context by default ("padded"), as the model was
trained; only the frames covering real audio are kept. "trimmed" runs on the real length only:
faster, but states drift with depth (docs/extraction.md). The decoder input is the prompt
(start, language, transcribe, no-timestamps) + text tokens + end-of-text, where the text is
Whisper's own greedy hypothesis or the ground-truth transcript.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch.nn import functional as F
from transformers.cache_utils import DynamicCache, EncoderDecoderCache
from transformers.modeling_outputs import BaseModelOutput
from transformers.utils import logging as transformers_logging

from pipeline.audio import SAMPLE_RATE
from pipeline.errors import NserError
from pipeline.models.loader import LoadedWhisper

FRAME_RATE = 50.0  # encoder frames per second (10 ms mel hop, stride-2 conv)
MAX_TARGET = 448
# Utterances per encoder call on the fast path. Results are bit-identical for any value (checked by
# tests/extract/test_fast_path.py); 4 was as fast as 8 or faster on 2 shared cores
# (docs/extraction.md) and holds half the activations.
ENCODER_BATCH = 4
# generate() settings that would add logits processors or stopping rules the own greedy loop lacks.
_GENERATION_RULES = ("forced_decoder_ids", "no_repeat_ngram_size", "repetition_penalty", "bad_words_ids",
                     "sequence_bias", "min_length", "min_new_tokens", "forced_bos_token_id",
                     "forced_eos_token_id", "encoder_no_repeat_ngram_size", "exponential_decay_length_penalty",
                     "no_speech_threshold", "stop_strings", "max_time", "renormalize_logits",
                     "remove_invalid_values", "guidance_scale", "watermarking_config")


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
    return min(1500, math.ceil(n_samples / SAMPLE_RATE * FRAME_RATE))


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
                 language: str | None = None, fast: bool = True, encoder_batch: int = ENCODER_BATCH):
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
        self.encoder_batch = max(1, int(encoder_batch))
        # The fast path replaces generate() by its own greedy loop only where it knows every rule
        # generate() would apply (_own_loop_ok); otherwise it keeps generate() and still shares the
        # encoder's cross-attention keys/values with the teacher-forced pass.
        self.fast = fast
        gc = self.model.generation_config
        vocab = self.model.config.vocab_size
        self._suppress = self._token_mask(getattr(gc, "suppress_tokens", None), vocab)
        self._begin_suppress = self._token_mask(getattr(gc, "begin_suppress_tokens", None), vocab)
        self._own_loop = _own_loop_ok(gc, self.eot)
        cfg = copy.deepcopy(self.model.config)
        cfg.num_hidden_layers = cfg.decoder_layers
        self._cache_config = cfg  # what WhisperDecoder gives its self-attention DynamicCache

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

    def features(self, audios: Sequence[np.ndarray]) -> torch.Tensor:
        """Whisper's log-mel features of the batch, zero-padded to 30 s."""
        feats = self.feature_extractor(list(audios), sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
        return feats.to(self.device, self.dtype)

    @staticmethod
    def _to_fp16(state: torch.Tensor) -> np.ndarray:
        return state.float().cpu().numpy().astype(np.float16)

    def extract(self, audios: Sequence[np.ndarray], transcripts: Sequence[str]) -> list[ExtractedUtterance]:
        """The fast path (default) or the reference one; both store the same values (fp32 compute)."""
        if self.fast:
            return self.extract_fast(audios, transcripts)
        return self.extract_reference(audios, transcripts)

    @torch.inference_mode()
    def extract_reference(self, audios: Sequence[np.ndarray], transcripts: Sequence[str]) -> list[ExtractedUtterance]:
        """The straightforward path: encoder on the batch, generate(), a full teacher-forced pass.
        Kept callable as the reference the fast path is tested against."""
        feats = self.features(audios)
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
        durations = [len(a) / SAMPLE_RATE for a in audios]
        if self.token_source == "hypothesis":
            texts, loops, capped = self._finish_hypotheses(self._greedy(cross, durations), durations)
        else:
            texts = [self.transcript_tokens(t) for t in transcripts]
            loops, capped = [False] * len(texts), [False] * len(texts)
        sequences = [self.prompt + t + [self.eot] for t in texts]
        dec_states = self._teacher_forced(sequences, cross)
        out = []
        for b in range(len(audios)):
            out.append(ExtractedUtterance(
                encoder=[self._to_fp16(s) for s in per_utt[b]],
                decoder=[self._to_fp16(s) for s in dec_states[b]],
                tokens=np.asarray(sequences[b], dtype=np.int32),
                hypothesis=self.tokenizer.decode(texts[b], skip_special_tokens=True).strip()
                if self.token_source == "hypothesis" else "",
                hyp_loop=loops[b], hyp_capped=capped[b]))
        return out

    def _greedy(self, cross: list[torch.Tensor], durations: list[float]) -> list[list[int]]:
        """Whisper's own greedy decoding with generate() (its suppression rules), bounded by duration.
        Returns the raw new tokens (prompt dropped); _finish_hypotheses cuts them."""
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
                # generate() may or may not return the prompt: drop any special prefix
                while toks and toks[0] in self.prompt:
                    toks = toks[1:]
                texts[i] = toks
        return texts

    def _finish_hypotheses(self, texts: list[list[int]], durations: list[float]):
        """Cut raw greedy tokens at end-of-text, at the duration bound, and after a repetition loop."""
        bounds = [hypothesis_token_bound(d, len(self.prompt)) for d in durations]
        texts = list(texts)
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

    # ---- fast path -------------------------------------------------------------------------------
    # Same operations on the same tensors as extract_reference, minus work done twice or not needed:
    # the cross-attention keys/values of the encoder output are computed once and shared by greedy
    # decoding and the teacher-forced pass (both computed them before); greedy decoding is a plain
    # loop over the decoder with a KV cache instead of generate(); the encoder runs in chunks of
    # `encoder_batch` utterances on a contiguous copy of its input, and each state is cut to its real
    # frames and converted to fp16 as soon as it exists. tests/extract/test_fast_path.py checks that
    # both paths store bit-identical fp16 states, tokens and hypotheses.

    @staticmethod
    def _token_mask(tokens, vocab: int) -> torch.Tensor | None:
        if not tokens:
            return None
        mask = torch.zeros(vocab, dtype=torch.bool)
        mask[torch.as_tensor(list(tokens), dtype=torch.long)] = True
        return mask

    def _encode_chunks(self, feats: torch.Tensor, frames: list[int]) -> tuple[list[list[np.ndarray]], torch.Tensor]:
        """Encoder states of the padded context, cut to each utterance's frames as fp16, and the full
        last state (the decoder's cross-attention input)."""
        enc = self.model.model.encoder
        per_utt: list[list[np.ndarray]] = [[] for _ in frames]
        last = []
        for c0 in range(0, feats.shape[0], self.encoder_batch):
            chunk = feats[c0:c0 + self.encoder_batch]
            x = F.gelu(enc.conv1(chunk))
            x = F.gelu(enc.conv2(x)).permute(0, 2, 1)
            # contiguous: the permuted layout otherwise runs through every layer, with a copy in
            # each LayerNorm and linear; the values are the same (element-wise add)
            x = (x + enc.embed_positions.weight[: x.shape[1]]).contiguous()
            n_layers = len(enc.layers)
            for li in range(n_layers + 1):
                if li > 0:
                    out = enc.layers[li - 1](x, None)
                    x = out[0] if isinstance(out, tuple) else out
                state = enc.layer_norm(x) if li == n_layers else x
                for j in range(chunk.shape[0]):
                    per_utt[c0 + j].append(self._to_fp16(state[j, : frames[c0 + j]]))
            last.append(state)
        return per_utt, torch.cat(last, 0) if len(last) > 1 else last[0]

    def _cross_kv(self, enc_out: torch.Tensor) -> DynamicCache:
        """Cross-attention keys/values of every decoder layer, as WhisperAttention computes them."""
        data = []
        for layer in self.model.model.decoder.layers:
            attn = layer.encoder_attn
            shape = (enc_out.shape[0], -1, attn.num_heads, attn.head_dim)
            k = attn.k_proj(enc_out).view(shape).transpose(1, 2).contiguous()
            v = attn.v_proj(enc_out).view(shape).transpose(1, 2).contiguous()
            data.append((k, v))
        return DynamicCache(data)

    def _cache(self, cross: DynamicCache) -> EncoderDecoderCache:
        """A fresh self-attention cache over shared, already computed cross-attention keys/values
        (EncoderDecoderCache marks layers with cross entries as computed, so they are not redone)."""
        return EncoderDecoderCache(DynamicCache(config=self._cache_config), cross)

    def _greedy_fast(self, enc_out: torch.Tensor, cross: DynamicCache, max_new: int) -> list[list[int]]:
        """generate()'s greedy search for Whisper without timestamps, step for step: prompt prefill,
        then one token per step with the KV cache; logits in fp32; begin_suppress_tokens at the first
        new position, suppress_tokens everywhere; argmax; finished rows are padded with end-of-text
        and stay in the batch (as in generate(), so every step computes the same batch); stop when
        all rows ended or after max_new tokens."""
        b = enc_out.shape[0]
        decoder = self.model.model.decoder
        cache = self._cache(cross)
        ids = torch.tensor([self.prompt] * b, device=self.device)
        new: list[torch.Tensor] = []
        unfinished = torch.ones(b, dtype=torch.bool, device=self.device)
        step_in = ids
        for step in range(max_new):
            out = decoder(input_ids=step_in, encoder_hidden_states=enc_out, cache=cache, use_cache=True)
            logits = self.model.proj_out(out.last_hidden_state)[:, -1, :].to(copy=True, dtype=torch.float32)
            if step == 0 and self._begin_suppress is not None:
                logits = torch.where(self._begin_suppress.to(logits.device), -float("inf"), logits)
            if self._suppress is not None:
                logits = torch.where(self._suppress.to(logits.device), -float("inf"), logits)
            nxt = torch.argmax(logits, dim=-1)
            nxt = nxt * unfinished + self.eot * (~unfinished)
            new.append(nxt)
            unfinished &= nxt != self.eot
            if not bool(unfinished.any()):
                break
            step_in = nxt[:, None]
        if not new:
            return [[] for _ in range(b)]
        toks = torch.stack(new, 1).tolist()
        return toks

    def _teacher_forced_fast(self, sequences: list[list[int]], enc_out: torch.Tensor,
                             cross: DynamicCache) -> list[list[torch.Tensor]]:
        longest = max(len(s) for s in sequences)
        ids = torch.tensor([s + [self.eot] * (longest - len(s)) for s in sequences], device=self.device)
        out = self.model.model.decoder(input_ids=ids, encoder_hidden_states=enc_out, cache=self._cache(cross),
                                       use_cache=True, output_hidden_states=True)
        return [[s[b, : len(sequences[b])] for s in out.hidden_states] for b in range(len(sequences))]

    @torch.inference_mode()
    def extract_fast(self, audios: Sequence[np.ndarray], transcripts: Sequence[str]) -> list[ExtractedUtterance]:
        feats = self.features(audios)
        frames = [n_encoder_frames(len(a)) for a in audios]
        durations = [len(a) / SAMPLE_RATE for a in audios]
        bounds = [hypothesis_token_bound(d, len(self.prompt)) for d in durations]
        if self.context == "padded":
            enc_fp16, last = self._encode_chunks(feats, frames)
            groups = [(list(range(len(audios))), last)]  # one length: greedy and decoder share a batch
        else:
            enc_fp16, lasts = [], []
            for b, nf in enumerate(frames):  # no encoder mask exists: lengths cannot share a batch
                st = self.encode(feats[b:b + 1, :, : 2 * nf])
                enc_fp16.append([self._to_fp16(s[0, :nf]) for s in st])
                lasts.append(st[-1])
            # the decoder batches utterances of one length, as extract_reference does (a padded
            # batch and a single utterance differ in the last bits of the decoder states)
            if len(set(frames)) == 1:
                groups = [(list(range(len(audios))), torch.cat(lasts, 0))]
            else:
                groups = [([b], last) for b, last in enumerate(lasts)]
        raw: list[list[int]] = [[] for _ in audios]
        dec_states: list[list[np.ndarray]] = [[] for _ in audios]
        sequences: list[list[int]] = [[] for _ in audios]
        loops, capped = [False] * len(audios), [False] * len(audios)
        if self.token_source == "transcript":
            texts = [self.transcript_tokens(t) for t in transcripts]
        for idx, enc_out in groups:
            cross = self._cross_kv(enc_out)
            if self.token_source == "hypothesis":
                if self._own_loop:
                    got = self._greedy_fast(enc_out, cross, max(bounds[i] for i in idx))
                else:  # a generation config with rules the own loop lacks: generate() itself
                    got = self._greedy([enc_out[r:r + 1] for r in range(len(idx))], [durations[i] for i in idx])
                for row, i in enumerate(idx):
                    raw[i] = got[row]
            else:
                for i in idx:
                    raw[i] = texts[i]
            if self.token_source == "hypothesis":
                fin, lp, cp = self._finish_hypotheses([raw[i] for i in idx], [durations[i] for i in idx])
            else:
                fin, lp, cp = [raw[i] for i in idx], [False] * len(idx), [False] * len(idx)
            for row, i in enumerate(idx):
                raw[i], loops[i], capped[i] = fin[row], lp[row], cp[row]
                sequences[i] = self.prompt + fin[row] + [self.eot]
            states = self._teacher_forced_fast([sequences[i] for i in idx], enc_out, cross)
            for row, i in enumerate(idx):
                dec_states[i] = [self._to_fp16(s) for s in states[row]]
            del cross, states
        return [ExtractedUtterance(
            encoder=enc_fp16[b], decoder=dec_states[b], tokens=np.asarray(sequences[b], dtype=np.int32),
            hypothesis=self.tokenizer.decode(raw[b], skip_special_tokens=True).strip()
            if self.token_source == "hypothesis" else "",
            hyp_loop=loops[b], hyp_capped=capped[b]) for b in range(len(audios))]


def _own_loop_ok(gc, eot: int) -> bool:
    """Whether generate() would apply exactly what _greedy_fast does for this generation config."""
    if any(getattr(gc, name, None) not in (None, False, 0, [], {}) for name in _GENERATION_RULES
           if name not in ("repetition_penalty",)):
        return False
    if getattr(gc, "repetition_penalty", None) not in (None, 1.0):
        return False
    eos = getattr(gc, "eos_token_id", None)
    eos = eos if isinstance(eos, list) else [eos]
    return eos == [eot] and getattr(gc, "pad_token_id", eot) == eot
