"""Tiny randomly initialised SSL speech encoders saved as model dirs, so tests load them through the
real `from_pretrained` path. No SSL weights exist offline here; these check the plumbing only."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (HubertConfig, HubertModel, Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model,
                          WavLMConfig, WavLMModel)

# A 4-layer conv stack with the base models' stride product (320 samples = 20 ms, 50 Hz).
SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
             conv_dim=(16, 16, 16, 16), conv_stride=(5, 4, 4, 4), conv_kernel=(10, 8, 4, 4),
             num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)

# name: (config class, model class, conv front-end norm, feature extractor returns a mask).
# wav2vec2 and HuBERT as their base checkpoints (group norm, no mask); WavLM with layer norm so that
# the padded-batch path runs too.
TINY = {"wav2vec2": (Wav2Vec2Config, Wav2Vec2Model, "group", False),
        "hubert": (HubertConfig, HubertModel, "group", False),
        "wavlm": (WavLMConfig, WavLMModel, "layer", True)}


def save_tiny_encoder(name: str, out: Path, seed: int = 0) -> Path:
    config_cls, model_cls, norm, mask = TINY[name]
    torch.manual_seed(seed)
    config = config_cls(**SMALL, feat_extract_norm=norm, do_stable_layer_norm=norm == "layer")
    model_cls(config).eval().save_pretrained(out)
    Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=mask).save_pretrained(out)
    return out
