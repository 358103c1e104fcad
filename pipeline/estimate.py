"""What an extraction will cost before it runs (`nser-extract --dry-run`): utterances, audio hours,
cache bytes and time, for one condition and for N conditions of the same corpus and model.

Cache bytes per utterance of d seconds (states are float16, 2 bytes; see docs/gpu.md):

    encoder: n_encoder_states x ceil(min(d, 30) x 50 frames/s) x d_model x 2
    decoder: n_decoder_states x (8 + 3.7 x d positions)  x d_model x 2

The encoder's frames are exact; the decoder's positions (prompt + greedy hypothesis) are fitted to
two measured EmoDB caches (babble 0 dB, Whisper base: 15.5 positions per 2 s clip, 18.5 per
full-length utterance of 2.8 s), so they are an estimate for other corpora and languages. For
`bundled:base` that is 385 kB per audio second plus 57 kB per utterance: 280.4 MB for the 2 s
EmoDB copy (281.0 MB measured) and 387.8 MB, 407 kB/s, for full-length EmoDB (389.2 MB, 408 kB/s
measured; docs/results.md).
"""

from __future__ import annotations

import json
import math
import re
import tempfile
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from pipeline.audio import MAX_SECONDS
from pipeline.corpora.manifest import Corpus, Utterance
from pipeline.errors import NserError

FRAME_RATE = 50.0  # encoder frames per second (pipeline.extract.whisper_layers.FRAME_RATE)
STATE_BYTES = 2  # float16 storage
DECODER_POSITIONS = (8.0, 3.7)  # per utterance: a + b x seconds (module docstring)
# (d_model, encoder layers, decoder layers) of the released Whisper sizes, for hub ids not downloaded yet.
WHISPER_SIZES = {"tiny": (384, 4, 4), "base": (512, 6, 6), "small": (768, 12, 12), "medium": (1024, 24, 24),
                 "large": (1280, 32, 32), "turbo": (1280, 32, 4)}


@dataclass(frozen=True)
class ModelDims:
    d_model: int
    n_encoder_states: int  # layers + the embedding output
    n_decoder_states: int

    def bytes_per_utterance(self, seconds: float) -> float:
        d = min(seconds, MAX_SECONDS)
        frames = math.ceil(d * FRAME_RATE)
        positions = DECODER_POSITIONS[0] + DECODER_POSITIONS[1] * d
        return (self.n_encoder_states * frames + self.n_decoder_states * positions) * self.d_model * STATE_BYTES

    def bytes_per_audio_second(self) -> float:
        """The long-utterance rate, without the decoder's per-utterance prompt."""
        return (self.n_encoder_states * FRAME_RATE + self.n_decoder_states * DECODER_POSITIONS[1]) * \
            self.d_model * STATE_BYTES


def model_dims(model: str) -> ModelDims:
    """From the model's config.json (bundled or local folder), else from a Whisper size in the hub id."""
    if model.startswith("bundled:"):
        from pipeline.models.loader import resolve_model_dir
        model_dir = Path(resolve_model_dir(model))
    else:
        model_dir = Path(model)
    config = model_dir / "config.json"
    if config.is_file():
        c = json.loads(config.read_text())
        return ModelDims(c["d_model"], c["encoder_layers"] + 1, c["decoder_layers"] + 1)
    m = re.search(r"whisper-(large-v3-turbo|turbo|tiny|base|small|medium|large)", model)
    if m is None:
        raise NserError(f"cannot tell the size of {model!r}: give a folder with config.json, a bundled: model, "
                        f"or a Whisper hub id (openai/whisper-{'|'.join(WHISPER_SIZES)})")
    d, enc, dec = WHISPER_SIZES["turbo" if "turbo" in m.group(1) else m.group(1)]
    return ModelDims(d, enc + 1, dec + 1)


def utterance_seconds(u: Utterance) -> float:
    """From the segment bounds or the file header; no audio is decoded."""
    if u.start is not None and u.end is not None:
        return u.end - u.start
    import soundfile

    try:
        info = soundfile.info(str(u.path))
    except (RuntimeError, OSError) as exc:  # soundfile's error for formats it cannot read
        raise NserError(f"cannot read the length of {u.path} ({exc}); --dry-run reads file headers only") from exc
    return (info.frames / info.samplerate) - (u.start or 0.0)


def measured_rate(model: str, device: str, dtype: str) -> tuple[float, str] | None:
    """(utterances per second, how it was measured) from extract_rates.yaml, if this model was measured on
    this device kind in this compute dtype (on a GPU, float16 and float32 differ by more than batch sizes do)."""
    rates = yaml.safe_load(resources.files("pipeline").joinpath("extract_rates.yaml").read_text())["rates"]
    for r in rates:
        if (r["model"], r["device"], r["dtype"]) == (model, device, dtype):
            return float(r["utt_per_s"]), r["measured"]
    return None


def time_extraction(corpus: Corpus, opts, n: int) -> tuple[float, str]:
    """Extract the first `n` utterances into a temporary cache (deleted) and time it, model load included."""
    from pipeline.extract.run import run_extraction

    sample = Corpus(corpus.name, corpus.utterances[:n], corpus.classes, corpus.language, corpus.protocol)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        run_extraction(sample, Path(tmp) / "measure.zarr", opts, progress=False)
        seconds = time.perf_counter() - start
    return len(sample.utterances) / seconds, f"--measure {len(sample.utterances)} on this machine, model load included"


@dataclass(frozen=True)
class Estimate:
    n_utterances: int
    audio_seconds: float
    cache_bytes: float
    dims: ModelDims
    rate: tuple[float, str] | None  # utterances per second, and its source

    def lines(self, n_conditions: int = 1) -> list[str]:
        d = self.dims
        out = [f"model: d_model {d.d_model}, {d.n_encoder_states} encoder + {d.n_decoder_states} decoder states; "
               f"{self.dims.bytes_per_audio_second() / 1e3:.0f} kB per audio second on long utterances "
               f"(estimate: encoder frames exact, decoder positions 8 + 3.7/s)"]
        for n in sorted({1, n_conditions}):
            what = "one condition" if n == 1 else f"{n} conditions"
            t = (f"{n * self.n_utterances / self.rate[0] / 3600:.2f} h at {self.rate[0]:.2f} utt/s "
                 f"({self.rate[1]})" if self.rate else
                 "time unknown: no measured rate for this model, device and dtype (--measure N times N utterances)")
            out.append(f"{what}: {n * self.n_utterances} utterances, {n * self.audio_seconds / 3600:.2f} h of audio, "
                       f"cache {n * self.cache_bytes / 1e9:.2f} GB, {t}")
        return out


def estimate(corpus: Corpus, model: str, device: str, dtype: str = "auto",
             rate: tuple[float, str] | None = None) -> Estimate:
    """`device` is a device kind (cpu, cuda); `dtype` the compute dtype or auto (that device's default)."""
    from pipeline.extract.run import default_dtype  # torch: only when a time is estimated

    dims = model_dims(model)
    seconds = [utterance_seconds(u) for u in corpus.utterances]
    dtype = default_dtype(device) if dtype == "auto" else dtype
    return Estimate(len(seconds), sum(seconds), sum(dims.bytes_per_utterance(s) for s in seconds), dims,
                    rate or measured_rate(model, device, dtype))


def _device_kind(device: str) -> str:
    if device == "auto":
        from pipeline.extract.run import default_device  # torch: only when the device is asked for
        return default_device()
    return device.split(":")[0]


def dry_run_report(corpus: Corpus, opts, n_conditions: int | None = 1, measure: int | None = None) -> str:
    """What `nser-extract --dry-run [N] [--measure M]` prints: this condition's cost, and N conditions'."""
    if not n_conditions:
        raise NserError("--measure times a dry run: add --dry-run (nothing was extracted)")
    rate = time_extraction(corpus, opts, measure) if measure else None
    est = estimate(corpus, opts.model, _device_kind(opts.device), opts.dtype, rate)
    head = f"dry run: nothing is extracted or written; {opts.model} on {corpus.name}"
    return "\n".join([head, *est.lines(n_conditions)])
