"""`nser-train --tensorboard DIR`: each epoch's training loss and validation UAR / macro-F1 as
TensorBoard scalars, one tag group per fold (and layer). Optional: the `tensorboard` package is not
a dependency of the pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.errors import NserError

INSTALL = "pip install tensorboard"


class TensorBoardMissing(NserError):
    """--tensorboard without the tensorboard package."""


class EpochBoard:
    def __init__(self, log_dir: str | Path):
        try:
            from torch.utils.tensorboard import SummaryWriter  # imports tensorboard
        except ImportError as exc:
            raise TensorBoardMissing(f"--tensorboard needs the tensorboard package, which is not installed "
                                     f"({exc}); install it ({INSTALL}) or leave out --tensorboard") from exc
        self._writer = SummaryWriter(log_dir=str(log_dir))

    def write(self, key: str, entry: dict[str, Any]) -> None:
        """One log.jsonl entry; a resumed run writes its restored epochs again, which TensorBoard
        shows as the same points."""
        for name in ("train_loss", "val_uar", "val_macro_f1"):
            if entry.get(name) is not None:
                self._writer.add_scalar(f"{key}/{name}", entry[name], entry["epoch"])
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()
