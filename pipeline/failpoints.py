"""Crash injection for tests: `NSER_FAILPOINT=name[:n]` SIGKILLs the process the n-th time (default 1st)
execution reaches `failpoint(name)`. Unset in normal use, where a failpoint costs one dict lookup."""

from __future__ import annotations

import os
import signal

_hits: dict[str, int] = {}


def failpoint(name: str) -> None:
    spec = os.environ.get("NSER_FAILPOINT")
    if not spec:
        return
    target, _, nth = spec.rpartition(":")
    if not nth.isdigit():
        target, nth = spec, "1"
    if target != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
