"""One writer per cache: an advisory `flock` on a hidden file beside the cache folder
(beside, not inside, so that creating or overwriting the cache never touches a held lock).

The OS drops the lock when the holding process dies (even by SIGKILL), so a crashed writer never
leaves a cache locked; the file keeps the holder's pid and host for the error message.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

from pipeline.errors import CacheError


class WriterLock:
    def __init__(self, cache_path: Path):
        cache_path = Path(cache_path)
        self.path = cache_path.with_name(f".{cache_path.name}.nser-lock")
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
            raise CacheError(f"{self.path.name[1:-10]} in {self.path.parent} is being written by {holder}; one writer per cache "
                             "(the lock is released when that process ends)") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
