"""`nser cache export`: selected layers of a cache, per utterance, in formats other tools read.

Why: loaders outside this project (s3prl- or EmoBox-style recipes, h5py scripts, MATLAB) expect
one array per utterance, not a Zarr store with offsets. Two layouts:

- ``hdf5``: one file. ``/utterances/<col>`` holds the utterance table in cache order (strings as
  UTF-8); ``/<layer>/<utt_id>`` holds that utterance's states ``[rows, d]`` (as stored: float16, or float32) or,
  with ``pool="mean"``, its mean over rows ``[d]`` (float32). Root attributes carry the cache's
  identity hash, model, condition, classes and the layer list.
- ``npy``: a folder with ``<layer>/<utt_id>.npy`` (same arrays) and ``index.csv``: the table, one
  row per utterance, with one column per layer giving the file's path relative to the folder.

Layers are read in blocks of whole utterances (contiguous rows, about one shard at a time), so an
export reads each selected array once. The output is built beside the target and renamed into
place, so an interrupted export never looks finished.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path
from typing import Iterator

import numpy as np

from pipeline.cache.reader import CacheReader
from pipeline.cache.schema import table_columns
from pipeline.errors import CacheError

FORMATS = ("hdf5", "npy")
POOLS = ("none", "mean")


def export_cache(cache: str | Path | CacheReader, out: str | Path, *, fmt: str, layers: str = "enc:all,dec:all",
                 pool: str = "none", overwrite: bool = False) -> Path:
    if fmt not in FORMATS:
        raise CacheError(f"unknown export format {fmt!r}; one of {', '.join(FORMATS)}")
    if pool not in POOLS:
        raise CacheError(f"unknown pooling {pool!r}; one of {', '.join(POOLS)}")
    reader = cache if isinstance(cache, CacheReader) else CacheReader(cache)
    selection = reader.selection(layers)
    ids = [str(u) for u in reader.table["utt_id"]]
    bad = [u for u in ids if "/" in u or u in (".", "..")]
    if bad:
        raise CacheError(f"utterance ids {bad[:3]} cannot name a file or an HDF5 dataset")
    out = Path(out)
    if out.exists() or out.is_symlink():
        if not overwrite:
            raise CacheError(f"{out} exists; choose another --out or pass --overwrite")
        _check_replaceable(out, fmt)
    staging = out.with_name(f".{out.name}.exporting")
    _remove(staging)
    layer_list = [(stack, i, name) for (stack, i), name in zip(
        [("encoder", i) for i in selection.encoder] + [("decoder", i) for i in selection.decoder],
        selection.names)]
    try:
        if fmt == "hdf5":
            _write_hdf5(reader, staging, layer_list, ids, pool)
        else:
            _write_npy(reader, staging, layer_list, ids, pool)
        _remove(out)
        os.replace(staging, out)
    except BaseException:
        _remove(staging)
        raise
    return out


def utterance_arrays(reader: CacheReader, stack: str, i: int, pool: str,
                     block_rows: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """(utterance index, states or pooled vector) for every committed utterance, in table order,
    reading the layer in contiguous blocks of whole utterances."""
    arr = reader.array(stack, i)
    block_rows = block_rows or (arr.shards or arr.chunks)[0]
    k = 0
    while k < reader.n:
        lo = reader.utterance_rows(stack, k)[0]
        last = k
        while last + 1 < reader.n and reader.utterance_rows(stack, last + 1)[1] - lo <= block_rows:
            last += 1
        hi = reader.utterance_rows(stack, last)[1]
        block = arr[lo:hi]
        for j in range(k, last + 1):
            a, b = reader.utterance_rows(stack, j)
            states = block[a - lo:b - lo]
            yield j, (states.astype(np.float32).mean(axis=0) if pool == "mean" else states)
        k = last + 1


def _write_hdf5(reader: CacheReader, path: Path, layer_list, ids: list[str], pool: str) -> None:
    import h5py

    with h5py.File(path, "w") as f:
        f.attrs["nser_export"] = json.dumps(_export_meta(reader, layer_list, pool))
        table = f.create_group("utterances")
        for col, kind in table_columns().items():
            values = reader.table[col]
            if kind == "str":
                table.create_dataset(col, data=np.array([str(v) for v in values], dtype=object),
                                     dtype=h5py.string_dtype("utf-8"))
            else:
                table.create_dataset(col, data=np.asarray(values))
        for stack, i, name in layer_list:
            group = f.create_group(name)
            for j, data in utterance_arrays(reader, stack, i, pool):
                group.create_dataset(ids[j], data=data)


def _write_npy(reader: CacheReader, folder: Path, layer_list, ids: list[str], pool: str) -> None:
    folder.mkdir(parents=True)
    for stack, i, name in layer_list:
        (folder / name).mkdir()
        for j, data in utterance_arrays(reader, stack, i, pool):
            np.save(folder / name / f"{ids[j]}.npy", data)
    cols = list(table_columns())
    with (folder / "index.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(cols + [name for _, _, name in layer_list])
        for j, utt in enumerate(ids):
            w.writerow([_csv_value(reader.table[c][j]) for c in cols]
                       + [f"{name}/{utt}.npy" for _, _, name in layer_list])
    (folder / "export.json").write_text(json.dumps(_export_meta(reader, layer_list, pool), indent=2))


def _export_meta(reader: CacheReader, layer_list, pool: str) -> dict:
    """What the export came from and holds (HDF5 root attribute, export.json): the cache's identity,
    and whether it is the whole corpus (`complete`, an unfinished cache's `partial` part, what is
    `left_out`: failed entries per fold, never extracted ones, other parts), as training records it."""
    from pipeline.folds import corpus_folds, left_out

    return {"identity_hash": reader.identity_hash, "partial": reader.partial_hash, "complete": reader.complete,
            "n_manifest": reader.meta.n_manifest, "left_out": left_out(reader, corpus_folds(reader, [])),
            "model": reader.meta.model.to_dict(),
            "condition": reader.meta.condition.to_dict(), "classes": reader.classes,
            "layers": [n for _, _, n in layer_list], "pool": pool}


def _csv_value(v) -> str:
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (float, np.floating)):
        return repr(float(v))
    return str(v)


def _check_replaceable(out: Path, fmt: str) -> None:
    """--overwrite replaces an earlier export only, never an unrelated file or folder."""
    if fmt == "hdf5" and out.is_file():
        try:
            import h5py
            with h5py.File(out, "r") as f:
                if "nser_export" in f.attrs:
                    return
        except OSError:
            pass
    if fmt == "npy" and out.is_dir() and (out / "export.json").is_file():
        return
    if out.is_dir() and not any(out.iterdir()):
        return
    raise CacheError(f"{out} is not an earlier {fmt} export of a cache; refusing to replace it")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
