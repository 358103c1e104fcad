"""Which stored objects (shard files, or chunk files of unsharded arrays) hold an array's first rows,
and which of them are absent, asked through the zarr store API so it works for any store.

zarr reads an absent object as the fill value (zeros), so a lost or half-copied shard would
silently become zero-valued states. The writer stores every chunk, all-zero ones included
(`write_empty_chunks`), which makes "absent" mean "damaged", and readers check before reading.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import zarr
from zarr.core.sync import sync

_BATCH = 256  # exists() calls in flight at once


@dataclass(frozen=True)
class StoredObject:
    key: str  # key in the store, e.g. encoder/layer_02/c/1/0
    lo: int   # first row it holds
    hi: int   # one past its last row (within the rows asked about)


def stored_objects(arr: zarr.Array, rows: int) -> list[StoredObject]:
    """The objects that hold rows [0, rows) of a 1-D or 2-D array chunked along rows only."""
    per = int((arr.shards or arr.chunks)[0])
    prefix = f"{arr.store_path.path}/" if arr.store_path.path else ""
    out = []
    for k, lo in enumerate(range(0, rows, per)):
        coords = (k,) + (0,) * (arr.ndim - 1)
        out.append(StoredObject(prefix + arr.metadata.encode_chunk_key(coords), lo, min(rows, lo + per)))
    return out


def missing_objects(arr: zarr.Array, rows: int) -> list[StoredObject]:
    objects = stored_objects(arr, rows)
    if not objects:
        return []
    store = arr.store_path.store

    async def absent() -> list[StoredObject]:
        missing = []
        for i in range(0, len(objects), _BATCH):
            part = objects[i:i + _BATCH]
            found = await asyncio.gather(*(store.exists(o.key) for o in part))
            missing.extend(o for o, ok in zip(part, found) if not ok)
        return missing

    return sync(absent())
