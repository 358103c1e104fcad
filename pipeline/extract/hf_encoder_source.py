"""The `hf-encoder` source: every hidden state of a frozen SSL speech encoder (wav2vec 2.0, HuBERT,
WavLM, data2vec-audio) per frame, for `--model hf-encoder:<hub id or local dir>`.

The prefix is required: a bare id such as facebook/wav2vec2-base would be read as a Whisper model.
Each utterance runs alone (HFEncoderLayerExtractor's batch size 1), so its states never depend on
`--batch-size`, which only sets how many utterances are read per step. Rows are the model's own
output frames (its conv length formula, e.g. 99 for 2 s at 50 per second), not ceil(duration x
rate)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from pipeline.extract.sources import register_source


class HFEncoderSource:
    def __init__(self, spec: str, model_spec: str, opts):
        import torch

        from pipeline.audio import MAX_SECONDS
        from pipeline.cache.records import ExtractionRecord, ModelRecord
        from pipeline.extract.hf_encoder_layers import HFEncoderLayerExtractor
        from pipeline.extract.run import resolve_device
        from pipeline.models.hf_encoder import load_speech_encoder

        device, dtype = resolve_device(opts.device, opts.dtype)
        enc = load_speech_encoder(model_spec, device=device, dtype=dtype)
        self.extractor = HFEncoderLayerExtractor(enc)
        self.model = ModelRecord(spec, enc.weights_hash, n_encoder_states=enc.n_states, n_decoder_states=0,
                                 d_model=enc.d_model, frame_rate=enc.frame_rate, source="hf-encoder")
        self.extraction = ExtractionRecord(context="trimmed", token_source="none", dtype="float16",
                                           compute_dtype=str(dtype).removeprefix("torch."),
                                           device=torch.device(device).type, max_seconds=MAX_SECONDS)

    def check_audio(self, samples: np.ndarray) -> None:
        self.extractor.check_audio(samples)

    def check_transcript(self, transcript: str) -> None:
        pass

    def extract(self, audios: Sequence[np.ndarray], transcripts: Sequence[str]):
        return self.extractor.extract(audios)


@register_source("hf-encoder", "hf-encoder:<id or dir>: every hidden state of a wav2vec2/HuBERT/WavLM/"
                               "data2vec-audio encoder")
def open_hf_encoder(argument: str | None, spec: str, opts, language: str | None) -> HFEncoderSource:
    if not argument:
        from pipeline.extract.sources import SourceError
        raise SourceError(f"--model {spec}: name the encoder, e.g. --model hf-encoder:facebook/wav2vec2-base "
                          "or hf-encoder:/path/to/model_dir")
    return HFEncoderSource(spec, argument, opts)
