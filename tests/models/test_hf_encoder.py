"""`load_speech_encoder` / `load_text_encoder`: facts of tiny random SSL models saved as dirs and of the
real MiniLM (BERT architecture), and refusals of folders that would run other weights than a
checkpoint's, of the wrong kind of model, and of a hub id with no connection."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModel

from pipeline.errors import ModelUnavailableError, NserError
from pipeline.models.hf_encoder import load_speech_encoder, load_text_encoder
from pipeline.models.loader import weights_hash
from tests.ssl_models import save_tiny_encoder


def test_speech_encoder_facts_hash_and_frozen(tiny_ssl_dirs):
    enc = load_speech_encoder(str(tiny_ssl_dirs["wav2vec2"]), dtype=torch.bfloat16)
    assert (enc.n_states, enc.d_model, enc.frame_rate) == (3, 32, 50.0)
    # the hash is of the float32 checkpoint values, whatever dtype the model then runs in
    assert enc.weights_hash == weights_hash(AutoModel.from_pretrained(tiny_ssl_dirs["wav2vec2"]))
    assert enc.weights_hash != load_speech_encoder(str(tiny_ssl_dirs["hubert"])).weights_hash
    assert not enc.model.training and not any(p.requires_grad for p in enc.model.parameters())
    assert next(enc.model.parameters()).dtype == torch.bfloat16


def test_frame_rate_follows_the_conv_strides(tiny_ssl_dirs, tmp_path):
    model = copy(tiny_ssl_dirs["wav2vec2"], tmp_path / "m")
    edit_config(model, conv_stride=[5, 4, 4, 2])  # 160 samples per frame; same tensors
    assert load_speech_encoder(str(model)).frame_rate == 100.0


def test_text_encoder_facts(minilm_dir):
    enc = load_text_encoder(str(minilm_dir))
    assert (enc.n_states, enc.d_model) == (7, 384) and type(enc.model).__name__ == "BertModel"


def test_wrong_kind_of_model_refused(tiny_ssl_dirs, minilm_dir):
    with pytest.raises(NserError, match=r"is not a speech encoder: its config\.json has model_type 'bert'"):
        load_speech_encoder(str(minilm_dir))
    with pytest.raises(NserError, match=r"is not a text encoder: its config\.json has model_type 'wav2vec2'"):
        load_text_encoder(str(tiny_ssl_dirs["wav2vec2"]))


def test_folder_without_weights_or_config_refused(tiny_ssl_dirs, tmp_path):
    model = copy(tiny_ssl_dirs["wavlm"], tmp_path / "m")
    (model / "model.safetensors").unlink()
    with pytest.raises(NserError, match=r"has config\.json but no weights .*randomly initialised"):
        load_speech_encoder(str(model))
    (model / "config.json").unlink()
    with pytest.raises(NserError, match=r"folder without config\.json"):
        load_speech_encoder(str(model))


def test_missing_and_misshapen_tensors_refused(tiny_ssl_dirs, tmp_path):
    model = copy(tiny_ssl_dirs["hubert"], tmp_path / "m")
    tensors = load_file(model / "model.safetensors")
    dropped = sorted(k for k in tensors if k.startswith("encoder.layers.1."))
    save_file({k: v for k, v in tensors.items() if k not in dropped}, model / "model.safetensors",
              metadata={"format": "pt"})
    with pytest.raises(NserError, match=rf"{len(dropped)} parameters missing from the checkpoint \(would be random\)"):
        load_speech_encoder(str(model))
    other = save_tiny_encoder("hubert", tmp_path / "wide")
    edit_config(other, hidden_size=48)
    with pytest.raises(NserError, match="wrong shape|cannot load the weights"):
        load_speech_encoder(str(other))


def test_missing_feature_extractor_refused(tiny_ssl_dirs, tmp_path):
    model = copy(tiny_ssl_dirs["wav2vec2"], tmp_path / "m")
    (model / "preprocessor_config.json").unlink()
    with pytest.raises(NserError, match="cannot load speech encoder") as err:
        load_speech_encoder(str(model))
    assert not isinstance(err.value, ModelUnavailableError)  # a broken local dir, not a model out of reach


def test_unreachable_hub_says_so(monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # as on a machine offline
    with pytest.raises(ModelUnavailableError,
                       match=r"(?s)cannot load speech encoder 'facebook/wav2vec2-base'.*couldn't connect.*needs internet once"):
        load_speech_encoder("facebook/wav2vec2-base")


def copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def edit_config(model: Path, **changes) -> None:
    cfg = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**cfg, **changes}))
