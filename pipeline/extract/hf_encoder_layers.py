"""HFEncoderLayerExtractor: every hidden state of a frozen SSL speech encoder (wav2vec 2.0, HuBERT,
WavLM, data2vec-audio), cut to each utterance's own frames, as float16.

Batching policy (docs/extraction.md, "SSL encoders and text encoders: the model side"): by default
(`batch_size=1`) every utterance runs alone, unpadded and without a mask, so its stored states never
depend on which utterances share its batch. `batch_size > 1` pads and passes an attention mask, and
only for models whose conv front end uses layer norm: group norm (`feat_extract_norm == "group"`,
wav2vec2-base, hubert-base) normalises over the whole padded time axis, so padding changes every
frame whatever the mask says; such models still run one utterance at a time. Padded batches of
layer-norm models agree with the single-utterance states to about one float16 step, not bit for bit,
so a batch size above 1 changes stored values and belongs in the cache's identity.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from pipeline.audio import SAMPLE_RATE
from pipeline.errors import AudioError
from pipeline.extract.whisper_layers import ExtractedUtterance
from pipeline.models.hf_encoder import LoadedEncoder


class HFEncoderLayerExtractor:
    def __init__(self, encoder: LoadedEncoder, *, batch_size: int = 1):
        self.enc = encoder
        self.model = encoder.model
        self.feature_extractor = encoder.preprocessor
        self.device = next(self.model.parameters()).device
        self.dtype = next(self.model.parameters()).dtype
        self.batch_size = max(1, int(batch_size))

    @property
    def takes_padded_batches(self) -> bool:
        return getattr(self.model.config, "feat_extract_norm", None) == "layer"

    def frames(self, n_samples: int) -> int:
        """The encoder's output frames for `n_samples` of audio (its own conv length formula)."""
        return int(self.model._get_feat_extract_output_lengths(torch.tensor(n_samples)))

    def check_audio(self, samples: np.ndarray) -> None:
        """Refuse a waveform shorter than the encoder's one frame (its conv front end gives none)."""
        if self.frames(len(samples)) < 1:
            raise AudioError(f"{len(samples) / SAMPLE_RATE * 1000:.1f} ms of audio is shorter than one frame of "
                             f"{self.enc.name}")

    def extract(self, audios: Sequence[np.ndarray], transcripts: Sequence[str] | None = None) -> list[ExtractedUtterance]:
        """`audios`: 16 kHz float32 mono. Transcripts are not used (an audio-only source)."""
        for a in audios:
            self.check_audio(a)
        size = self.batch_size if self.takes_padded_batches else 1
        states: list[list[np.ndarray]] = []
        for b0 in range(0, len(audios), size):
            states.extend(self._forward(list(audios[b0:b0 + size])))
        return [ExtractedUtterance(encoder=s, decoder=[], tokens=np.zeros(0, np.int32), hypothesis="",
                                   hyp_loop=False, hyp_capped=False) for s in states]

    @torch.inference_mode()
    def _forward(self, batch: list[np.ndarray]) -> list[list[np.ndarray]]:
        padded = len(batch) > 1
        # The feature extractor normalises each utterance over its own samples when given the mask.
        inputs = self.feature_extractor(batch, sampling_rate=SAMPLE_RATE, padding=padded, return_tensors="pt",
                                        return_attention_mask=padded)
        kwargs = {"attention_mask": inputs["attention_mask"].to(self.device)} if padded else {}
        out = self.model(inputs["input_values"].to(self.device, self.dtype), output_hidden_states=True, **kwargs)
        frames = [self.frames(len(a)) for a in batch]
        return [[_fp16(h[j, :n]) for h in out.hidden_states] for j, n in enumerate(frames)]


def _fp16(state: torch.Tensor) -> np.ndarray:
    """As the Whisper extractor casts (the cache writer refuses non-finite values per utterance)."""
    return state.float().cpu().numpy().astype(np.float16)
