"""The `whisper` source: every encoder and decoder hidden state of a Whisper model
(WhisperLayerExtractor), for any Hugging Face id, local model dir or `bundled:*` name."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from pipeline.extract.sources import register_source


class WhisperSource:
    def __init__(self, spec: str, opts, language: str | None):
        import torch

        from pipeline.audio import MAX_SECONDS
        from pipeline.cache.records import ExtractionRecord, ModelRecord
        from pipeline.extract.run import resolve_device
        from pipeline.extract.whisper_layers import FRAME_RATE, WhisperLayerExtractor
        from pipeline.models.loader import load_whisper

        device, dtype = resolve_device(opts.device, opts.dtype)
        whisper = load_whisper(spec, device=device, dtype=dtype)
        self.extractor = WhisperLayerExtractor(whisper, context=opts.context, token_source=opts.token_source,
                                               language=language, fast=opts.fast)
        self.token_source = opts.token_source
        self.model = ModelRecord(spec, whisper.weights_hash, whisper.n_encoder_states, whisper.n_decoder_states,
                                 whisper.d_model, FRAME_RATE)
        # dtype is the storage dtype; compute dtype and device kind change the stored values too.
        self.extraction = ExtractionRecord(context=opts.context, token_source=opts.token_source, dtype="float16",
                                           compute_dtype=str(dtype).removeprefix("torch."),
                                           device=torch.device(device).type, max_seconds=MAX_SECONDS,
                                           prompt=tuple(self.extractor.prompt))

    def check_audio(self, samples) -> None:
        pass

    def check_transcript(self, transcript: str) -> None:
        if self.token_source == "transcript":
            self.extractor.transcript_tokens(transcript)  # raises TranscriptTooLong

    def extract(self, audios: Sequence[np.ndarray], transcripts: Sequence[str]):
        return self.extractor.extract(audios, transcripts)


@register_source("whisper", "a Whisper model: Hugging Face id, local model dir, or bundled:tiny.en / bundled:base")
def open_whisper(argument: str | None, spec: str, opts, language: str | None) -> WhisperSource:
    return WhisperSource(spec, opts, language)
