"""Render one espeak-ng utterance through libespeak-ng's C API, in a process of its own.

Why a process per utterance: libespeak-ng keeps its synthesis state in C globals (waveform phase,
pitch flutter, resonators, noise generator) that carry over from one utterance to the next, and
re-initializing the library does not reset them all. The same call made twice in one process
gives audio that differs by a few to a few hundred samples depending on what was said before,
which would make the demo corpus depend on build order and break bit-for-bit rebuilds. The
espeak-ng command-line program never shows this because it, too, renders one utterance per
process; so does this script, with the same calls the program makes for
``espeak-ng -v VOICE -g GAP -m -w out.wav SSML``.

Standard library only, and meant to be run as ``python -I -S espeak_worker.py ...`` (no site
imports, so it starts in milliseconds):

    espeak_worker.py LIBRARY DATA_DIR synth VOICE WORD_GAP   < SSML (UTF-8) on stdin
        stdout: sample rate (uint32, little-endian), then mono 16-bit little-endian PCM
    espeak_worker.py LIBRARY DATA_DIR info
        stdout: "VERSION\\nDATA_PATH\\n"

Failures exit with status 2 and one line on stderr saying what failed.
"""

from __future__ import annotations

import ctypes
import struct
import sys
from array import array

# From espeak-ng's speak_lib.h / espeak_ng.h (stable C API since 1.49).
ENOUTPUT_MODE_SYNCHRONOUS = 0x0001  # samples go to the callback; Synthesize returns when done
ESPEAK_WORDGAP = 7  # espeak_PARAMETER espeakWORDGAP: extra pause between words, units of 10 ms
POS_CHARACTER = 1
# The flags the espeak-ng program passes for text on its command line with -m.
ESPEAK_SSML = 0x10
ESPEAK_PHONEMES = 0x100
ESPEAK_ENDPAUSE = 0x1000
SYNTH_FLAGS = ESPEAK_SSML | ESPEAK_PHONEMES | ESPEAK_ENDPAUSE
# libespeak-ng >= 1.52 seeds its noise generator from the clock at initialization; a fixed seed
# keeps output reproducible (1.51 used the C library's rand(), deterministic in a fresh process).
RAND_SEED = 0

SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class Voice(ctypes.Structure):
    """espeak_VOICE, for selecting a voice by language as the espeak-ng program falls back to."""

    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_char_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


class WorkerError(Exception):
    pass


def _load(library: str, data_dir: str) -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL(library)
    except OSError as exc:
        raise WorkerError(f"cannot load libespeak-ng from {library}: {exc}") from None
    lib.espeak_ng_InitializePath.argtypes = [ctypes.c_char_p]
    lib.espeak_ng_InitializePath.restype = None
    lib.espeak_ng_Initialize.argtypes = [ctypes.c_void_p]
    lib.espeak_ng_InitializeOutput.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p]
    lib.espeak_ng_GetStatusCodeMessage.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t]
    lib.espeak_ng_GetStatusCodeMessage.restype = None
    lib.espeak_Info.argtypes = [ctypes.POINTER(ctypes.c_char_p)]
    lib.espeak_Info.restype = ctypes.c_char_p
    lib.espeak_ng_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_ng_SetVoiceByProperties.argtypes = [ctypes.POINTER(Voice)]
    lib.espeak_ng_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetSynthCallback.argtypes = [SYNTH_CALLBACK]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_ng_Synthesize.argtypes = [
        ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
        ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
    ]
    # An empty DATA_DIR means the library's compiled-in default (a system installation).
    lib.espeak_ng_InitializePath(data_dir.encode() if data_dir else None)
    where = data_dir or "its default place"
    _check(lib, lib.espeak_ng_Initialize(None), f"initialize (voice data at {where})")
    _check(lib, lib.espeak_ng_InitializeOutput(ENOUTPUT_MODE_SYNCHRONOUS, 0, None), "open output")
    return lib


def _check(lib: ctypes.CDLL, status: int, what: str) -> None:
    if status != 0:
        buf = ctypes.create_string_buffer(512)
        lib.espeak_ng_GetStatusCodeMessage(status, buf, len(buf))
        raise WorkerError(f"libespeak-ng could not {what}: {buf.value.decode(errors='replace')}")


def info(lib: ctypes.CDLL) -> str:
    data_path = ctypes.c_char_p()
    version = lib.espeak_Info(ctypes.byref(data_path))
    return f"{(version or b'?').decode()}\n{(data_path.value or b'').decode()}\n"


def _select_voice(lib: ctypes.CDLL, voice: str) -> None:
    """By name, else by language, like the espeak-ng program's -v (so "en-gb+f2", which names no
    voice, gets the en-gb voice by language and silently loses the variant there too)."""
    if lib.espeak_ng_SetVoiceByName(voice.encode()) == 0:
        return
    wanted = Voice(languages=voice.encode())
    _check(lib, lib.espeak_ng_SetVoiceByProperties(ctypes.byref(wanted)), f"select voice {voice!r}")


def synth(lib: ctypes.CDLL, voice: str, word_gap: int, ssml: bytes) -> tuple[int, bytes]:
    chunks: list[bytes] = []

    def collect(wav, n, _events):  # called synchronously from espeak_ng_Synthesize
        if wav and n > 0:
            chunks.append(ctypes.string_at(wav, n * 2))
        return 0  # 0 = continue

    callback = SYNTH_CALLBACK(collect)  # kept referenced until synthesis is done
    lib.espeak_SetSynthCallback(callback)
    if hasattr(lib, "espeak_ng_SetRandSeed"):
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_ng_SetRandSeed(RAND_SEED)
    _select_voice(lib, voice)
    _check(lib, lib.espeak_ng_SetParameter(ESPEAK_WORDGAP, word_gap, 0), "set the word gap")
    text = ssml + b"\0"
    _check(lib, lib.espeak_ng_Synthesize(text, len(text), 0, POS_CHARACTER, 0, SYNTH_FLAGS,
                                         None, None), "synthesize")
    _check(lib, lib.espeak_ng_Synchronize(), "finish synthesis")
    pcm = array("h", b"".join(chunks))
    if sys.byteorder == "big":
        pcm.byteswap()
    return lib.espeak_ng_GetSampleRate(), pcm.tobytes()


def main(argv: list[str]) -> int:
    try:
        if len(argv) == 3 and argv[2] == "info":
            sys.stdout.write(info(_load(argv[0], argv[1])))
            return 0
        if len(argv) == 5 and argv[2] == "synth":
            lib = _load(argv[0], argv[1])
            rate, pcm = synth(lib, argv[3], int(argv[4]), sys.stdin.buffer.read())
            sys.stdout.buffer.write(struct.pack("<I", rate) + pcm)
            return 0
        raise WorkerError("usage: espeak_worker.py LIBRARY DATA_DIR (info | synth VOICE WORD_GAP)")
    except WorkerError as exc:
        sys.stderr.write(f"{exc}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
