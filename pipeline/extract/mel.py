"""The `mel` source: Whisper's 80-bin log-mel frames (the paper's Mel-spectrogram baseline).

transformers' WhisperFeatureExtractor, 25 ms windows every 10 ms (100 frames per second), on the
utterance alone: no 30 s padding, so an utterance of n samples gives n // 160 frames. Each
utterance is computed on its own, since Whisper's log-mel is clipped relative to the utterance's
own maximum and batch padding would change it. One state (the encoder stack's only one), d = 80."""

from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np

from pipeline.extract.sources import encoder_only, register_source

FRAME_RATE = 100.0  # hop of 160 samples at 16 kHz
N_MELS = 80


class MelSource:
    def __init__(self, spec: str):
        from transformers import WhisperFeatureExtractor

        from pipeline.audio import MAX_SECONDS
        from pipeline.cache.records import ExtractionRecord, ModelRecord

        self.fe = WhisperFeatureExtractor(feature_size=N_MELS)
        # What the values depend on: the feature configuration (mel filters and window follow from it).
        config_hash = hashlib.sha256(self.fe.to_json_string().encode()).hexdigest()[:16]
        self.model = ModelRecord(spec, config_hash, n_encoder_states=1, n_decoder_states=0, d_model=N_MELS,
                                 frame_rate=FRAME_RATE, source="mel")
        self.extraction = ExtractionRecord(context="trimmed", token_source="none", dtype="float16",
                                           compute_dtype="float32", device="cpu", max_seconds=MAX_SECONDS)

    def check_audio(self, samples) -> None:
        pass

    def check_transcript(self, transcript: str) -> None:
        pass

    def frames(self, audio: np.ndarray) -> np.ndarray:
        """[n_frames, 80] float32 log-mel frames of one utterance."""
        feats = self.fe(np.asarray(audio, dtype=np.float32), sampling_rate=16000, return_tensors="np",
                        padding="longest", return_attention_mask=False)["input_features"]
        return feats[0].T

    def extract(self, audios: Sequence[np.ndarray], transcripts: Sequence[str]):
        return [encoder_only([self.frames(a)]) for a in audios]


@register_source("mel", "mel: Whisper's 80-bin log-mel frames, 100 per second, d=80")
def open_mel(argument: str | None, spec: str, opts, language: str | None) -> MelSource:
    if argument:
        from pipeline.extract.sources import SourceError
        raise SourceError(f"--model {spec}: the mel source takes no argument; use --model mel")
    return MelSource(spec)
