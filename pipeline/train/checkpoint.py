"""Per-epoch checkpoints of a training run, so a killed run resumes where it stopped with the same result.

An epoch checkpoint holds what the next epoch depends on: model and optimizer state, the best
validation UAR and epoch so far, the RNG states of dropout and of the shuffling generator, and the
log entries written so far. The best epoch's model is only needed at the fold's end, so it is
written apart (`.best`), once per improvement, not every epoch (a 24-adapter head's model,
optimizer and best model were ~4 model sizes per epoch; now ~3, plus 1 on an improvement). Files are
replaced atomically. A finished fold's best model is kept as a `.done` file until the run's metrics
are written; then the checkpoints folder is removed.

A file is named by a hash of its full key (fold and layer) and records that key: fold names that
differ only outside ASCII (speaker folds 张三, 李四) must not share a file, or a later fold would
resume from a model trained on its own test speakers. Files hold plain values only (tensors,
dicts, lists, numbers, strings) and are read with `weights_only=True`, so a crafted `.pt` in a
run dir cannot run code when the run resumes.
"""

from __future__ import annotations

import hashlib
import pickle
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from pipeline.errors import NserError
from pipeline.safe_files import atomic_open

_READABLE_CHARS = 40  # of the key, in the file name; the hash after it is what tells keys apart


class CheckpointError(NserError):
    """A checkpoint file cannot be used for this run (another key, not plain data, unreadable)."""


class RunCheckpoints:
    def __init__(self, run_dir: Path):
        self.dir = Path(run_dir) / "checkpoints"

    def path(self, key: str, kind: str) -> Path:
        """`<readable ASCII prefix>-<16 hex of sha256(key)>.<kind>.pt`: distinct keys, distinct files."""
        readable = re.sub(r"[^A-Za-z0-9_.-]", "_", key)[:_READABLE_CHARS]
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
        return self.dir / f"{readable}-{digest}.{kind}.pt"

    def _save(self, path: Path, key: str, state: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        with atomic_open(path, "wb") as f:
            torch.save({**state, "key": key}, f)

    def _load(self, path: Path, key: str) -> dict[str, Any] | None:
        if not path.exists():
            return None
        way_out = f"delete {self.dir} to train this run from its start"
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            # weights_only refuses any global other than torch's plain types: not a file nser-train wrote.
            found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
            what = f" (it asks for {found.group(1)})" if found else ""
            raise CheckpointError(f"checkpoint {path} holds objects other than tensors and plain values{what}, "
                                  f"so nser-train did not write it; refused without running it: {way_out}") from exc
        except (RuntimeError, EOFError, OSError, ValueError) as exc:
            raise CheckpointError(f"checkpoint {path} is unreadable ({exc}); {way_out}") from exc
        recorded = state.get("key") if isinstance(state, dict) else None
        if recorded != key:
            raise CheckpointError(f"checkpoint {path} belongs to {recorded!r}, not to {key!r}; resuming from it "
                                  f"would reuse another fold's model: {way_out}")
        return state

    def save_epoch(self, key: str, state: dict[str, Any]) -> None:
        self._save(self.path(key, "epoch"), key, state)

    def load_epoch(self, key: str) -> dict[str, Any] | None:
        return self._load(self.path(key, "epoch"), key)

    def save_best(self, key: str, epoch: int, model: dict[str, Any]) -> None:
        """Written before the epoch's checkpoint: a crash between the two resumes an epoch earlier,
        which reruns this epoch, finds the same improvement and writes this file again."""
        self._save(self.path(key, "best"), key, {"epoch": epoch, "model": model})

    def best_model(self, key: str, state: dict[str, Any]) -> dict[str, Any] | None:
        """The best model of a resumed epoch checkpoint `state`: in it (files written before the
        best model had its own), else in the `.best` file when that is of the same epoch; None when
        there is none yet (no validation part, or the file is one epoch ahead, see save_best)."""
        if state.get("best_model") is not None:
            return state["best_model"]
        best = self._load(self.path(key, "best"), key)
        return best["model"] if best is not None and best["epoch"] == state["best_epoch"] else None

    def save_done(self, key: str, state: dict[str, Any]) -> None:
        self._save(self.path(key, "done"), key, state)
        self.path(key, "epoch").unlink(missing_ok=True)
        self.path(key, "best").unlink(missing_ok=True)

    def load_done(self, key: str) -> dict[str, Any] | None:
        return self._load(self.path(key, "done"), key)

    def clear(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
