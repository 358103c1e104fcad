"""Crash-safe file writes and advisory locks: the one place that knows how.

- `staged(final)`: a fresh sibling path to build a file or folder in; removed on exit unless the
  caller renamed it into place. Same folder as `final`, so the rename is atomic.
- `atomic_open` / `atomic_write`: temp file + fsync + `os.replace`, so a reader (or a rerun after a
  crash) sees the old content or the new, never half of it. New files get the umask's modes, like
  any other file the pipeline writes.
- `Flock`: a non-blocking `flock`, exclusive or shared; the OS drops it when the holder dies, even
  by SIGKILL, so a crash never leaves anything locked. An exclusive holder writes its pid and host
  into the lock file, for the refusal message.

Why not the `filelock` package: its `FileLock` has no shared mode (its reader/writer locks are an
SQLite database or heartbeat marker folders, a different protocol on disk, whose forked children
must build their own lock, while a data loader worker here inherits its parent's reader lock), and
on a file system without `flock` it falls back to marker files that a killed holder leaves behind,
where the cache's readers read unlocked and its writer relies on the commit-point check
(docs/cache.md). Each of these is a few lines of `fcntl` here.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
import socket
from pathlib import Path
from typing import IO, Iterator


@contextlib.contextmanager
def staged(final: str | os.PathLike[str], *, folder: bool = False) -> Iterator[Path]:
    """Yield `.<name>.<random>.tmp` beside `final` (created as an empty folder if `folder`); whatever
    is still at that path on exit, after an error or a lost race, is removed."""
    final = Path(final)
    tmp = final.with_name(f".{final.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    if folder:
        tmp.mkdir()
    try:
        yield tmp
    finally:
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w") -> Iterator[IO]:
    """Open a temp file for writing (`mode` "w" or "wb"); on a clean exit it is fsynced and replaces
    `path`. If the block raises, `path` keeps its old content."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes a whole file: mode 'w' or 'wb', not {mode!r}")
    path = Path(path)
    with staged(path) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # 0o666 & ~umask, unlike mkstemp's 0600
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


def atomic_write(path: str | os.PathLike[str], data: str | bytes) -> None:
    """Replace `path` with `data` (text or bytes) atomically; JSON is `atomic_write(p, json.dumps(x))`."""
    with atomic_open(path, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)


class LockBusy(Exception):
    """Another process holds the lock; `holder` is what it wrote there ("pid 12 on node3")."""

    def __init__(self, path: Path, holder: str):
        super().__init__(f"{path} is locked by {holder}")
        self.path, self.holder = path, holder


class Flock:
    """One non-blocking `flock` on `path`.

    `release` drops the lock at once (LOCK_UN), also for forked children that inherited the
    descriptor, unless `last_copy_releases`: then it only closes this process's descriptor and the
    lock lasts until the last copy is closed, so that a forked data loader worker keeps reading
    under its parent's shared lock. Either way only the process that took the lock releases it; in
    a forked child `release` only forgets it.
    """

    def __init__(self, path: str | os.PathLike[str], *, last_copy_releases: bool = False):
        self.path = Path(path)
        self.last_copy_releases = last_copy_releases
        self._fd: int | None = None
        self._pid = 0

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, *, shared: bool = False) -> None:
        """Take the lock or raise `LockBusy`; a no-op while held. Raises OSError where the lock file
        cannot be opened or the file system has no `flock` (the caller decides what that means).

        A shared lock opens the file read-only where it cannot be written (flock works on such a
        descriptor); an exclusive one creates the file's folder and records the holder."""
        if self._fd is not None:
            return
        if shared:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError:
                fd = os.open(self.path, os.O_RDONLY)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise LockBusy(self.path, holder) from None
        except BaseException:
            os.close(fd)
            raise
        if not shared:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        self._fd, self._pid = fd, os.getpid()

    def release(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            if not self.last_copy_releases:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
        self._fd = None

