"""Per-epoch checkpoints of a training run, so a killed run resumes where it stopped with the same result.

A checkpoint holds everything the next epoch depends on: model and optimizer state, the best
validation state so far, the RNG states of dropout and of the shuffling generator, and the log
entries written so far. Files are replaced atomically. A finished fold's best model is kept as a
`.done` file until the run's metrics are written; then the checkpoints folder is removed.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch


class RunCheckpoints:
    def __init__(self, run_dir: Path):
        self.dir = Path(run_dir) / "checkpoints"

    def _path(self, key: str, kind: str) -> Path:
        return self.dir / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', key)}.{kind}.pt"

    def _save(self, path: Path, state: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)

    def _load(self, path: Path) -> dict[str, Any] | None:
        return torch.load(path, map_location="cpu", weights_only=False) if path.exists() else None

    def save_epoch(self, key: str, state: dict[str, Any]) -> None:
        self._save(self._path(key, "epoch"), state)

    def load_epoch(self, key: str) -> dict[str, Any] | None:
        return self._load(self._path(key, "epoch"))

    def save_done(self, key: str, state: dict[str, Any]) -> None:
        self._save(self._path(key, "done"), state)
        self._path(key, "epoch").unlink(missing_ok=True)

    def load_done(self, key: str) -> dict[str, Any] | None:
        return self._load(self._path(key, "done"))

    def clear(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
