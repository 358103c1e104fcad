"""A zarr store wrapper that counts the bytes read under each array, to prove what a reader touches."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from zarr.storage import LocalStore, WrapperStore


class CountingStore(WrapperStore):
    @classmethod
    def open(cls, path: Path) -> "CountingStore":
        store = cls(LocalStore(str(path), read_only=True))
        store.counts = defaultdict(int)
        return store

    def reset(self) -> None:
        self.counts.clear()

    def _count(self, key: str, buf) -> None:
        if buf is not None and "/c/" in key:  # chunk and shard data, not metadata
            self.counts[key.split("/c/")[0]] += len(buf)

    async def get(self, key, prototype, byte_range=None):
        buf = await super().get(key, prototype, byte_range)
        self._count(key, buf)
        return buf

    async def get_partial_values(self, prototype, key_ranges):
        key_ranges = list(key_ranges)
        bufs = await super().get_partial_values(prototype, key_ranges)
        for (key, _), buf in zip(key_ranges, bufs):
            self._count(key, buf)
        return bufs

    def bytes_for(self, array: str) -> int:
        return self.counts.get(array, 0)

    def bytes_outside(self, *arrays: str) -> int:
        return sum(v for k, v in self.counts.items() if k not in arrays and not k.startswith("utterances"))
