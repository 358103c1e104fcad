"""Load a frozen Hugging Face encoder (an SSL speech encoder or a BERT-style text encoder) from a hub
id or a local dir, refusing anything that would run with weights other than the checkpoint's."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from transformers import AutoFeatureExtractor, AutoModel, AutoTokenizer, PretrainedConfig

from pipeline.audio import SAMPLE_RATE
from pipeline.errors import NserError
from pipeline.models.loader import WEIGHT_FILES, load_failure, resolve_model_dir, weights_hash

# model_type values whose AutoModel is a speech encoder over raw 16 kHz audio with a strided conv
# front end (`conv_stride`) and `_get_feat_extract_output_lengths`.
SPEECH_ENCODER_TYPES = ("wav2vec2", "hubert", "wavlm", "data2vec-audio")
TEXT_ENCODER_TYPES = ("bert", "roberta", "distilbert", "xlm-roberta", "electra", "deberta-v2")


@dataclass
class LoadedEncoder:
    name: str
    model: Any  # a transformers PreTrainedModel, frozen, in eval mode
    preprocessor: Any  # feature extractor (speech) or tokenizer (text)
    weights_hash: str

    @property
    def n_states(self) -> int:
        """Hidden states per input: the embedding output + one per layer."""
        return int(self.model.config.num_hidden_layers) + 1

    @property
    def d_model(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def frame_rate(self) -> float:
        """Output frames per second of a speech encoder: the sample rate over the conv strides' product
        (16000 / 320 = 50 Hz for the base models)."""
        return SAMPLE_RATE / math.prod(int(s) for s in self.model.config.conv_stride)


def load_speech_encoder(spec: str, device: str = "cpu", dtype: torch.dtype = torch.float32) -> LoadedEncoder:
    """wav2vec 2.0 / HuBERT / WavLM / data2vec-audio as `AutoModel` + `AutoFeatureExtractor`."""
    def preprocessor(source: str) -> Any:
        fe = AutoFeatureExtractor.from_pretrained(source)
        if int(getattr(fe, "sampling_rate", 0)) != SAMPLE_RATE:
            raise NserError(f"{spec}: its feature extractor expects {getattr(fe, 'sampling_rate', None)} Hz "
                            f"audio, not {SAMPLE_RATE} Hz")
        return fe
    return _load(spec, SPEECH_ENCODER_TYPES, "speech encoder", "facebook/wav2vec2-base", preprocessor,
                 device, dtype)


def load_text_encoder(spec: str, device: str = "cpu", dtype: torch.dtype = torch.float32) -> LoadedEncoder:
    """A BERT-style text encoder as `AutoModel` + `AutoTokenizer`."""
    return _load(spec, TEXT_ENCODER_TYPES, "text encoder", "google-bert/bert-base-uncased",
                 AutoTokenizer.from_pretrained, device, dtype)


def _load(spec: str, types: tuple[str, ...], what: str, example: str, preprocessor, device: str,
          dtype: torch.dtype) -> LoadedEncoder:
    source = resolve_model_dir(spec)
    _check_folder(spec, Path(source))
    try:
        model_type = PretrainedConfig.get_config_dict(source)[0].get("model_type")
        if model_type not in types:
            raise NserError(f"{spec} is not a {what}: its config.json has model_type {model_type!r}, "
                            f"not one of {', '.join(types)}")
        model, info = AutoModel.from_pretrained(source, dtype=torch.float32, output_loading_info=True)
        prep = preprocessor(source)
    except OSError as exc:
        raise load_failure(spec, exc, f"cannot load {what} {spec!r}: {exc}. Use a Hugging Face id such as "
                           f"{example} (needs internet once) or a local model dir") from exc
    except (RuntimeError, SafetensorError) as exc:  # tensors of the wrong shape, a corrupt weights file
        raise NserError(f"cannot load the weights of {spec!r}: {exc}") from exc
    problems = loading_problems(info)
    if problems:
        raise NserError(f"{spec}: weights do not match a {model_type} model of its config: "
                        + "; ".join(problems))
    digest = weights_hash(model)
    model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
    return LoadedEncoder(spec, model, prep, digest)


def _check_folder(spec: str, local: Path) -> None:
    if not local.exists():
        return  # a hub id: from_pretrained resolves it
    if not (local / "config.json").exists():
        raise NserError(f"{spec} is a folder without config.json: not a transformers model dir")
    if not any((local / f).is_file() for f in WEIGHT_FILES):
        raise NserError(f"{spec} has config.json but no weights ({', '.join(WEIGHT_FILES)}): "
                        "refusing to run a randomly initialised model")


def loading_problems(info: dict[str, list]) -> list[str]:
    """What of `from_pretrained`'s loading info would leave the encoder other than the checkpoint.

    Unexpected keys are allowed: pretraining and task heads (wav2vec 2.0's quantizer and projections,
    BERT's MLM and next-sentence heads) are stored in the checkpoints but are not part of `AutoModel`; a
    checkpoint of another architecture shows up as missing keys."""
    return [f"{len(info[k])} {what} (e.g. {', '.join(sorted(map(str, info[k]))[:3])})"
            for k, what in (("missing_keys", "parameters missing from the checkpoint (would be random)"),
                            ("mismatched_keys", "tensors of the wrong shape"),
                            ("error_msgs", "load errors"))
            if info.get(k)]
