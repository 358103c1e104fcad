"""safe_files under injected faults: a writer that raises or is SIGKILLed mid-write leaves the old
file intact; a held lock refuses a second holder and is granted again once its holder is killed."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pipeline.safe_files import Flock, LockBusy, atomic_open, atomic_write, staged


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def spawn(code: str, ready: Path) -> subprocess.Popen:
    """A Python child running `code`; returns once it has created `ready`."""
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)],
                             env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert child.poll() is None, "the child ended before it was ready"
        assert time.monotonic() < deadline, "the child never got ready"
        time.sleep(0.02)
    return child


def kill(child: subprocess.Popen) -> None:
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)


def test_atomic_write_text_bytes_and_json_with_umask_modes(tmp_path):
    path = tmp_path / "a.json"
    atomic_write(path, json.dumps({"k": 1}))
    assert json.loads(path.read_text()) == {"k": 1}
    atomic_write(path, b"\x00\xff")
    assert path.read_bytes() == b"\x00\xff"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # not mkstemp's private 0600
    assert leftovers(tmp_path) == []


def test_a_writer_that_raises_mid_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "state.pt"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_open(path, "wb") as f:
            f.write(b"new, half of it")
            raise RuntimeError("disk full")
    assert path.read_bytes() == b"old" and leftovers(tmp_path) == []


def test_a_writer_killed_mid_write_leaves_the_old_file(tmp_path):
    path, ready = tmp_path / "done.json", tmp_path / "ready"
    path.write_text("old")
    child = spawn(f"""
        import time
        from pathlib import Path
        from pipeline.safe_files import atomic_open
        with atomic_open({str(path)!r}) as f:
            f.write("new, half of it")
            f.flush()
            Path({str(ready)!r}).touch()
            time.sleep(600)
        """, ready)
    kill(child)
    assert path.read_text() == "old"
    assert len(leftovers(tmp_path)) == 1  # the killed writer's temp file, never under the real name


def test_atomic_open_writes_whole_files_only(tmp_path):
    with pytest.raises(ValueError, match="whole file"):
        with atomic_open(tmp_path / "log", "a"):
            pass


def test_staged_removes_a_failed_build_file_or_folder(tmp_path):
    with pytest.raises(KeyError):
        with staged(tmp_path / "model", folder=True) as tmp:
            assert tmp.is_dir() and tmp.parent == tmp_path and tmp.name.startswith(".model.")
            (tmp / "weights").write_bytes(b"x")
            raise KeyError("conversion failed")
    with staged(tmp_path / "export.h5") as tmp:
        tmp.write_bytes(b"x")
        os.replace(tmp, tmp_path / "export.h5")  # renamed into place: nothing left to remove
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export.h5"]


def test_a_second_exclusive_lock_is_refused_until_the_holder_is_killed(tmp_path):
    lock_file, ready = tmp_path / "sub" / ".lock", tmp_path / "ready"
    child = spawn(f"""
        import time
        from pathlib import Path
        from pipeline.safe_files import Flock
        Flock({str(lock_file)!r}).acquire()
        Path({str(ready)!r}).touch()
        time.sleep(600)
        """, ready)
    try:
        with pytest.raises(LockBusy) as busy:
            Flock(lock_file).acquire()
        assert busy.value.holder.startswith(f"pid {child.pid} on ")
        with pytest.raises(LockBusy):
            Flock(lock_file).acquire(shared=True)
    finally:
        kill(child)
    mine = Flock(lock_file)
    mine.acquire()
    assert mine.held and lock_file.read_text().startswith(f"pid {os.getpid()} on ")
    mine.release()
    assert not mine.held


def test_shared_locks_coexist_and_keep_an_exclusive_out(tmp_path):
    path = tmp_path / ".readers"
    a, b, writer = Flock(path), Flock(path), Flock(path)
    a.acquire(shared=True)
    b.acquire(shared=True)
    with pytest.raises(LockBusy):
        writer.acquire()
    a.release()
    with pytest.raises(LockBusy):
        writer.acquire()
    b.release()
    writer.acquire()
    writer.release()


def test_a_shared_lock_on_a_read_only_lock_file(tmp_path):
    path = tmp_path / ".readers"
    path.touch()
    path.chmod(0o444)
    if os.access(path, os.W_OK):
        pytest.skip("running as root: a read-only mode does not stop writes")
    reader = Flock(path)
    reader.acquire(shared=True)  # flock works on a read-only descriptor
    with pytest.raises(LockBusy):
        Flock(path).acquire()
    reader.release()


@pytest.mark.parametrize("last_copy_releases", [False, True])
def test_release_with_a_forked_child_holding_a_copy(tmp_path, last_copy_releases):
    path = tmp_path / ".readers"
    lock = Flock(path, last_copy_releases=last_copy_releases)
    lock.acquire(shared=True)
    pid = os.fork()
    if pid == 0:  # a data loader worker: holds the inherited descriptor, releasing does nothing here
        lock.release()
        time.sleep(600)
        os._exit(0)
    try:
        lock.release()
        other = Flock(path)
        if last_copy_releases:
            with pytest.raises(LockBusy):  # the child's copy still holds it
                other.acquire()
        else:
            other.acquire()  # LOCK_UN dropped it for the child too
            other.release()
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    Flock(path).acquire()


def test_a_file_system_without_flock(tmp_path, monkeypatch):
    """Flock reports it as an OSError (not LockBusy); the cache's readers then read unlocked."""
    import errno
    import fcntl

    from pipeline.cache.lock import ReadersLock

    def no_flock(fd, operation):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    lock = Flock(tmp_path / ".lock")
    with pytest.raises(OSError) as raised:
        lock.acquire(shared=True)
    assert raised.value.errno == errno.ENOSYS and not lock.held
    readers = ReadersLock(tmp_path / "c.zarr")
    readers.share()
    assert not readers.held
