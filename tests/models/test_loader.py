"""`load_whisper` refuses model folders that would run with weights other than the checkpoint's.

Each test copies the converted bundled tiny.en folder into tmp (the large weights file as a symlink
where it stays unchanged) and breaks one thing.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from pipeline.errors import NserError
from pipeline.models.bundled import BundledModelError
from pipeline.models.loader import load_whisper, resolve_model_dir


@pytest.fixture(scope="module")
def tiny_dir(cache_dir) -> Path:
    try:
        return Path(resolve_model_dir("bundled:tiny.en"))
    except BundledModelError as exc:
        pytest.skip(str(exc))


def copy_model(src: Path, dst: Path, *, weights: bool = True) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        if f.name == "model.safetensors":
            if weights:
                (dst / f.name).symlink_to(f)
        else:
            shutil.copy(f, dst / f.name)
    return dst


def test_intact_copy_loads(tiny_dir, tmp_path):
    w = load_whisper(str(copy_model(tiny_dir, tmp_path / "m")))
    assert w.n_encoder_states == 5 and w.weights_hash == load_whisper("bundled:tiny.en").weights_hash


def test_folder_without_weights_refused(tiny_dir, tmp_path):
    model = copy_model(tiny_dir, tmp_path / "m", weights=False)
    with pytest.raises(NserError, match=r"has config\.json but no weights .*randomly initialised"):
        load_whisper(str(model))


def test_other_model_type_refused(tiny_dir, tmp_path):
    model = copy_model(tiny_dir, tmp_path / "m")
    cfg = json.loads((model / "config.json").read_text())
    cfg["model_type"] = "wav2vec2"
    (model / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(NserError, match=r"not a Whisper model: its config\.json has model_type 'wav2vec2'"):
        load_whisper(str(model))


def test_missing_unexpected_and_misshapen_tensors_refused(tiny_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    state = load_file(tiny_dir / "model.safetensors")
    model = copy_model(tiny_dir, tmp_path / "m", weights=False)

    def save(sd: dict[str, torch.Tensor]) -> None:
        save_file(sd, model / "model.safetensors", metadata={"format": "pt"})

    dropped = dict(state)
    del dropped["model.encoder.layers.0.fc1.weight"]
    save(dropped)
    with pytest.raises(NserError, match=r"1 parameters missing from the checkpoint \(would be random\) "
                                        r"\(e\.g\. model\.encoder\.layers\.0\.fc1\.weight\)"):
        load_whisper(str(model))
    save(dict(state, **{"model.encoder.extra.weight": torch.zeros(3)}))
    with pytest.raises(NserError, match=r"1 checkpoint tensors the model does not have \(e\.g\. model\.encoder\.extra"):
        load_whisper(str(model))
    save(dict(state, **{"model.encoder.layers.0.fc1.weight": torch.zeros(3, 3)}))
    with pytest.raises(NserError, match=r"cannot load the weights of"):
        load_whisper(str(model))
    data = (tiny_dir / "model.safetensors").read_bytes()
    (model / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(NserError, match=r"cannot load the weights of"):
        load_whisper(str(model))
