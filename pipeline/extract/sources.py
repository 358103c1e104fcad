"""Feature sources, keyed by name: what `nser-extract --model` runs on each (noisy) utterance.

A `--model` value names its source by prefix: `mel`, `opensmile:<set>`, `hf-encoder:<id or dir>`, or
`<name>:<argument>` for any registered name; everything else (a Hugging Face id, a local dir,
`bundled:*`) is Whisper. Text caches are made from a Whisper cache's texts by
pipeline/extract/text_run.py, not through this registry (their input is text, not audio): a
`text:` value is refused here rather than taken for a Whisper model id.

Adding a source is one registration (as pipeline/extract/hf_encoder_source.py does):

    @register_source("hf-encoder", "hf-encoder:<id or dir>: every hidden state of a wav2vec2/... encoder")
    def open_hf_encoder(argument: str | None, spec: str, opts: ExtractionOptions,
                        language: str | None) -> FeatureSource:
        ...

The opener gets the text after `<name>:` (None when there is none), the whole `--model` value, the
extraction options (device, compute dtype, ...) and the corpus language (None for a multilingual
corpus), and returns a `FeatureSource`:

- `model`: the cache's `ModelRecord`: `name` (the `--model` value), `weights_hash` (whatever the
  stored values depend on: weights, or the feature configuration), `n_encoder_states`,
  `n_decoder_states` (0: encoder only, no decoder arrays and no tokens), `d_model`, `frame_rate`
  (frames per second; 0: one row per utterance) and `source` (the registered name, which must be
  in cache_schema.yaml's `model.source` list);
- `extraction`: its `ExtractionRecord`: `context` (padded/trimmed), `token_source` (none without a
  decoder), `dtype` (storage: float16, or float32 where values overflow float16), `compute_dtype`,
  `device`, `max_seconds`;
- `extract(audios, transcripts)`: one `ExtractedUtterance` per 16 kHz float32 waveform, encoder
  states `[n_frames, d_model]` (n_frames 1 for frame_rate 0); an encoder-only source returns an
  empty decoder list, an empty int32 token array, hypothesis "" and no loop/cap flags;
- `check_audio(samples)`: raise `AudioError` for a (noisy) waveform the source cannot take (e.g.
  shorter than its one frame), before its batch runs, so it becomes that file's error; a no-op
  where any loaded audio works;
- `check_transcript(transcript)`: raise `TranscriptTooLong` (or another NserError) for an entry the
  source cannot take, before its batch runs; a no-op for sources that ignore transcripts.

The registered name is also the cache's `model.source`; readers, `nser cache info` and the fusion
checks (pipeline/train/fusion_specs.py) go by it, by `n_decoder_states` and by `frame_rate`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Protocol, Sequence

import numpy as np

from pipeline.errors import NserError

if TYPE_CHECKING:
    from pipeline.cache.records import ExtractionRecord, ModelRecord
    from pipeline.extract.run import ExtractionOptions
    from pipeline.extract.whisper_layers import ExtractedUtterance


class FeatureSource(Protocol):
    model: "ModelRecord"
    extraction: "ExtractionRecord"

    def check_audio(self, samples: np.ndarray) -> None: ...

    def check_transcript(self, transcript: str) -> None: ...

    def extract(self, audios: Sequence[np.ndarray], transcripts: Sequence[str]) -> list["ExtractedUtterance"]: ...


Opener = Callable[[str | None, str, "ExtractionOptions", str | None], FeatureSource]


@dataclass(frozen=True)
class SourceEntry:
    name: str
    help: str  # one line for `nser-extract --help`
    open: Opener


SOURCES: dict[str, SourceEntry] = {}
DEFAULT_SOURCE = "whisper"  # any --model value without a registered `<name>` or `<name>:` prefix
TEXT_SOURCE = "text"  # pipeline/extract/text_run.py's source, reached through --text-from
TEXT_PREFIX = f"{TEXT_SOURCE}:"


def register_source(name: str, help: str):
    def deco(fn: Opener) -> Opener:
        SOURCES[name] = SourceEntry(name, help, fn)
        return fn
    return deco


def source_of(spec: str) -> tuple[str, str | None]:
    """(source name, argument) of a --model value: `opensmile:IS09_emotion` -> (opensmile, IS09_emotion)."""
    _load_builtin()
    if spec.startswith(TEXT_PREFIX):
        raise SourceError(f"--model {spec}: a text encoder reads a cache's texts, not audio: make its cache with "
                          f"nser-extract --text-from CACHE --text transcript|hypothesis --model {spec}")
    name, sep, argument = spec.partition(":")
    if name in SOURCES and name != DEFAULT_SOURCE:
        return name, (argument if sep else None)
    return DEFAULT_SOURCE, spec


def source_name(model: str) -> str:
    """The feature source of a cache's model (its `--model` value): a registered source's name, or
    `text` for a text cache (`text:<id>`, made with --text-from, not a registered source)."""
    return TEXT_SOURCE if model.startswith(TEXT_PREFIX) else source_of(model)[0]


def open_source(spec: str, opts: "ExtractionOptions", language: str | None) -> FeatureSource:
    name, argument = source_of(spec)
    return SOURCES[name].open(argument, spec, opts, language)


def source_help() -> str:
    _load_builtin()
    return "; ".join(f"{e.help}" for e in SOURCES.values())


def encoder_only(states: list[np.ndarray]) -> "ExtractedUtterance":
    """The ExtractedUtterance of a source without a decoder."""
    from pipeline.extract.whisper_layers import ExtractedUtterance
    return ExtractedUtterance(encoder=states, decoder=[], tokens=np.zeros(0, dtype=np.int32), hypothesis="",
                              hyp_loop=False, hyp_capped=False)


class SourceError(NserError):
    """A --model value no source can open (an unknown openSMILE set, ...)."""


def _load_builtin() -> None:
    # The built-in sources register on import of their modules, which import nothing heavy at
    # module level (torch, transformers and opensmile load when a source is opened).
    import pipeline.extract.whisper_source  # noqa: F401
    import pipeline.extract.mel  # noqa: F401
    import pipeline.extract.opensmile_source  # noqa: F401
    import pipeline.extract.hf_encoder_source  # noqa: F401
