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

from pathlib import Path

from pipeline.errors import CacheError
from pipeline.safe_files import Flock, LockBusy


def _lock_file(cache_path: Path, suffix: str) -> Path:
    cache_path = Path(cache_path).resolve()
    return cache_path.with_name(f".{cache_path.name}.{suffix}")


class WriterLock:
    def __init__(self, cache_path: Path):
        self.cache = Path(cache_path).resolve()
        self.path = _lock_file(self.cache, "nser-lock")
        self._lock = Flock(self.path)

    def acquire(self) -> None:
        try:
            self._lock.acquire()
        except LockBusy as busy:
            raise CacheError(f"{self.cache.name} in {self.cache.parent} is being written by {busy.holder}; one "
                             "writer per cache (the lock is released when that process ends)") from None

    def release(self) -> None:
        self._lock.release()


class ReadersLock:
    """Shared by readers (`share`), exclusive for replacing the cache (`exclude`).

    Released by closing the descriptor rather than LOCK_UN: a forked child (a data loader worker)
    shares the lock, and LOCK_UN from either side would drop it for both; closing drops it only
    when the last copy closes, and only the process that took it closes it.
    """

    def __init__(self, cache_path: Path):
        self.cache = Path(cache_path).resolve()
        self.path = _lock_file(self.cache, "nser-readers")
        self._lock = Flock(self.path, last_copy_releases=True)

    @property
    def held(self) -> bool:
        return self._lock.held

    def share(self) -> None:
        """Best effort: where the lock file cannot be opened (a read-only folder) or the file system
        has no flock, read unlocked."""
        try:
            self._lock.acquire(shared=True)
        except LockBusy:
            raise CacheError(f"{self.cache} is being replaced (nser-extract --overwrite); open it once that "
                             "run has finished") from None
        except OSError:
            return

    def exclude(self) -> None:
        """Taken by `--overwrite` before it deletes anything; refused while any reader holds the cache."""
        try:
            self._lock.acquire()
        except LockBusy:
            raise CacheError(f"{self.cache} is open for reading (a training run, a notebook, nser cache ...); "
                             "--overwrite would replace the data under it. Let that process finish or close "
                             "the cache, or write to another --out") from None

    def release(self) -> None:
        self._lock.release()
