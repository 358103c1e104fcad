"""Advisory `flock`s on hidden files beside the cache folder (beside, not inside, so that creating or
overwriting the cache never touches a held lock).

- `.<name>.nser-lock`: one writer per cache, exclusive, held for the writer's lifetime.
- `.<name>.nser-readers`: every reader holds it shared for its lifetime; only `--overwrite` takes it
  exclusively, so readers never block a writer that appends, but a cache is not replaced under one.

Both are keyed by the resolved path, so a symlink or `a/../a.zarr` reaches the same lock. The OS
drops a lock when the holding process dies (even by SIGKILL), so a crashed process never leaves a
cache locked; the writer lock file keeps the holder's pid and host for the error message.
`flock` may not exclude across machines on NFS or Lustre: the writer's commit-point check
(`CacheWriter`) is the safety net there (docs/cache.md).
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

from pipeline.errors import CacheError


def _lock_file(cache_path: Path, suffix: str) -> Path:
    cache_path = Path(cache_path).resolve()
    return cache_path.with_name(f".{cache_path.name}.{suffix}")


class WriterLock:
    def __init__(self, cache_path: Path):
        self.cache = Path(cache_path).resolve()
        self.path = _lock_file(self.cache, "nser-lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        if self._fd is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)  # the cache's parent folder
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise CacheError(f"{self.cache.name} in {self.cache.parent} is being written by {holder}; one writer "
                             "per cache (the lock is released when that process ends)") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class ReadersLock:
    """Shared by readers (`share`), exclusive for replacing the cache (`exclude`).

    Released by closing the descriptor rather than LOCK_UN: a forked child (a data loader worker)
    shares the lock, and LOCK_UN from either side would drop it for both; closing drops it only
    when the last copy closes, and only the process that took it closes it.
    """

    def __init__(self, cache_path: Path):
        self.cache = Path(cache_path).resolve()
        self.path = _lock_file(self.cache, "nser-readers")
        self._fd: int | None = None
        self._pid = 0

    @property
    def held(self) -> bool:
        return self._fd is not None

    def share(self) -> None:
        """Best effort: where the lock file cannot be opened (a read-only folder), read unlocked."""
        if self._fd is not None:
            return
        fd = self._open(required=False)
        if fd is None:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise CacheError(f"{self.cache} is being replaced (nser-extract --overwrite); open it once that "
                             "run has finished") from None
        except OSError:  # a file system without flock: read unlocked
            os.close(fd)
            return
        self._fd, self._pid = fd, os.getpid()

    def exclude(self) -> None:
        """Taken by `--overwrite` before it deletes anything; refused while any reader holds the cache."""
        if self._fd is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = self._open(required=True)
        assert fd is not None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise CacheError(f"{self.cache} is open for reading (a training run, a notebook, nser cache ...); "
                             "--overwrite would replace the data under it. Let that process finish or close "
                             "the cache, or write to another --out") from None
        self._fd, self._pid = fd, os.getpid()

    def _open(self, required: bool) -> int | None:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            if required:
                raise
        try:
            return os.open(self.path, os.O_RDONLY)  # flock works on a read-only descriptor
        except OSError:
            return None

    def release(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None
