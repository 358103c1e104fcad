"""Runs a grid's training runs on Dask and keeps one results table.

A run is finished exactly when its `done.json` exists. The worker writes that marker (atomically)
only after `train_on_cache` has returned, i.e. after metrics.json is complete, so a grid killed at
any point is resumed by running it again: finished runs are skipped, everything else (failed,
interrupted, never started) runs again. A run that raises is recorded in `<run dir>/error.txt`
and in the table with status `failed`; the other runs go on.

Derived runs (RunSpec.sources) are not trained: once their source runs are finished, the client
writes their outputs from the sources' (pipeline/grid/derive.py), with the same done.json marker.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import resource
import socket
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import pandas as pd
from tqdm import tqdm

from pipeline.errors import NserError
from pipeline.extract.sources import source_name
from pipeline.failpoints import failpoint
from pipeline.grid.derive import derived_metrics
from pipeline.grid.packing import longest_first, plan_packs
from pipeline.grid.records import DONE, RUN_INFO, has_record, keep_record, take_record
from pipeline.grid.spec import RunSpec, settings_key, train_settings
from pipeline.safe_files import Flock, LockBusy, atomic_open
from pipeline.safe_files import atomic_write as _write_atomic  # readers see the old file or the new one
from pipeline.train.fusion_specs import fusion_spec
from pipeline.train.run_metrics import RunMetrics

if TYPE_CHECKING:  # imported by the tasks that use them: the client needs neither torch nor Zarr
    from pipeline.cache.reader import CacheReader
    from pipeline.train.resident import RunData

ERROR = "error.txt"

COLUMNS = ["run_key", "status", "cache", "cache_identity", "corpus", "condition", "noise_type", "snr_db", "model",
           "source", "fusion", "layers", "n_layers", "best_layer", "seed", "epochs", "uar", "uar_std", "macro_f1",
           "macro_f1_std", "fold_uar", "fold_macro_f1", "confusion", "seconds", "peak_rss_mb", "code_version",
           # what the report and a human debugging a run need besides the numbers
           "stack", "selection", "folds", "classes", "left_out", "warnings", "run_dir", "error", "validation",
           # what a report cell must not pool across (pipeline.grid.spec.settings_key) and the settings it names
           "settings_key", "settings",
           # the hash of an unfinished cache's stored utterances (--allow-missing), else empty: other data
           "partial"]
_FLOAT_COLUMNS = ["snr_db", "uar", "uar_std", "macro_f1", "macro_f1_std", "seconds", "peak_rss_mb"]


class GridBusyError(NserError):
    """Another process is running the same grid folder or the same run."""


class DerivedRunError(NserError):
    """A derived run's source runs did not all finish."""


# --- small file helpers -------------------------------------------------------------------------

@contextlib.contextmanager
def _exclusive(lock_path: Path, what: str) -> Iterator[None]:
    """Non-blocking flock; the OS drops it when the holder dies, even by SIGKILL."""
    lock = Flock(lock_path)
    try:
        lock.acquire()
    except LockBusy as busy:
        raise GridBusyError(f"{what} is in use by {busy.holder}") from None
    try:
        yield
    finally:
        lock.release()


def is_done(run: RunSpec) -> bool:
    return (Path(run.run_dir) / DONE).is_file()


def run_record(run: RunSpec) -> dict[str, Any]:
    """JSON form of a RunSpec (run.json): a run dir describes itself without the grid file."""
    rec = asdict(run)
    rec["run_dir"] = str(run.run_dir)
    return rec


# --- the Dask task ------------------------------------------------------------------------------

def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB (Linux reports ru_maxrss in KiB, macOS in
    bytes). A worker process runs task after task, so it is the peak of this task and those before."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)


def _train_into(run: RunSpec, train: Callable[[RunSpec], dict[str, Any]]) -> dict[str, Any]:
    """Train one run into its run dir with `train` (run -> metrics): under the run dir's lock, skipped
    when finished, done.json last. Errors are caught and recorded here (error.txt next to the partial
    outputs) and returned, so one bad run never fails the grid, nor the other runs of its task."""
    run_dir = Path(run.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        # A run dir is written by one process at a time, e.g. not by an orphan of a killed grid.
        with _exclusive(run_dir / ".lock", f"run dir {run_dir}"):
            if is_done(run):
                return {"key": run.key, "status": "done"}
            with contextlib.suppress(FileNotFoundError):
                (run_dir / ERROR).unlink()
            _write_atomic(run_dir / RUN_INFO, json.dumps(run_record(run), indent=2))
            if run.config.threads:
                import torch
                torch.set_num_threads(run.config.threads)
            metrics = train(run)
            _write_atomic(run_dir / DONE, json.dumps({
                "key": run.key, "uar": metrics["uar"], "macro_f1": metrics["macro_f1"],
                "seconds": metrics["seconds"], "peak_rss_mb": peak_rss_mb(), "host": socket.gethostname(),
                "pid": os.getpid(), "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, indent=2))
            return {"key": run.key, "status": "done"}
    except Exception as exc:  # noqa: BLE001 - any failure of one run is data for the table
        record_failure(run, traceback.format_exc(), where=f"worker pid {os.getpid()} on {socket.gethostname()}")
        return {"key": run.key, "status": "failed", "error": f"{type(exc).__name__}: {exc}"}


def execute_run(run: RunSpec) -> dict[str, Any]:
    """Train one run into its run dir; runs on a Dask worker (see _train_into)."""
    from pipeline.train import trainer

    return _train_into(run, lambda r: trainer.train_on_cache(r.cache, r.run_dir, r.config, progress=False))


def execute_pack(runs: list[RunSpec]) -> list[dict[str, Any]]:
    """Train runs of one share group (pipeline/grid/packing.py) into their run dirs; runs on a Dask
    worker. The cache is opened once; see train_pack."""
    from pipeline.cache.reader import CacheReader

    (cache,) = {r.cache for r in runs}
    try:
        reader = CacheReader(cache)
    except Exception:  # noqa: BLE001 - each run then fails with the reason, as it would alone
        return [execute_run(r) for r in runs]
    with reader:
        return train_pack(reader, runs)


def train_pack(reader: CacheReader, runs: list[RunSpec]) -> list[dict[str, Any]]:
    """Train `runs` one after another from one read of the union of their layers (trainer.shared_run_data):
    each run gets the batches, seeds and so the results it gets alone. Runs already finished are
    skipped, and the states are read only when a run needs them. Where the union is not in memory
    (over the memory budget) or cannot be set up (a run's settings do not fit the cache), each run
    reads its own states, exactly as alone, and a bad run fails with its own reason."""
    from pipeline.train import trainer

    shared = _shared_data(reader, [r for r in runs if not is_done(r)])

    def train(run: RunSpec) -> dict[str, Any]:
        return trainer.train_on_cache(reader, run.run_dir, run.config, progress=False, data=shared)

    return [_train_into(r, train) for r in runs]


def _shared_data(reader: CacheReader, todo: list[RunSpec]) -> RunData | None:
    """The union RunData of the `todo` runs whose layers fit the cache, if in memory; else None.
    Not read yet: the first run's set-up reads it (RunData.prepare is idempotent)."""
    from pipeline.train import trainer

    fit = []
    for run in todo:
        with contextlib.suppress(Exception):  # that run's own set-up fails with the reason
            trainer.run_candidates(reader, run.config)
            fit.append(run)
    if len(fit) < 2:
        return None
    try:
        shared = trainer.shared_run_data(reader, [r.config for r in fit])
    except Exception:  # noqa: BLE001 - e.g. folds the cache lacks: each run fails with it on its own
        return None
    if shared.mode != "memory":
        return None
    shared.shared_by = len(fit)
    return shared


# --- derived runs (on the client) ----------------------------------------------------------------

def derive_run(run: RunSpec, rows: dict[str, dict[str, Any]]) -> None:
    """Write a derived run's outputs from its sources' (their current `rows`), as a worker writes a
    trained run's: run.json first, then config.json and metrics.json, done.json last. A source
    that is not done fails the run, with the sources' errors as the reason."""
    run_dir = Path(run.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        with _exclusive(run_dir / ".lock", f"run dir {run_dir}"):
            if is_done(run):
                return
            with contextlib.suppress(FileNotFoundError):
                (run_dir / ERROR).unlink()
            _write_atomic(run_dir / RUN_INFO, json.dumps(run_record(run), indent=2))
            _check_sources(run, rows)
            sources = {k: RunMetrics.read(Path(rows[k]["run_dir"]) / "metrics.json") for k in run.sources}
            derived = derived_metrics(fusion_spec(run.config.fusion), sources)
            metrics = derived.metrics
            # the chosen source's record (code version, cache, device, data mode): its scores are these
            source_info = json.loads((Path(rows[derived.chosen]["run_dir"]) / "config.json").read_text())
            _write_atomic(run_dir / "config.json", json.dumps({
                **source_info, "config": asdict(run.config), "layers": metrics.layers,
                "derived_from": metrics.data["derived_from"]}, indent=2))
            _write_atomic(run_dir / "metrics.json", json.dumps(metrics.to_dict(), indent=2))
            _write_atomic(run_dir / DONE, json.dumps({
                "key": run.key, "uar": metrics.uar, "macro_f1": metrics.macro_f1, "seconds": metrics.seconds,
                "derived_from": list(run.sources), "host": socket.gethostname(), "pid": os.getpid(),
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, indent=2))
    except Exception:  # noqa: BLE001 - as for a trained run: the reason goes to error.txt and the table
        record_failure(run, traceback.format_exc(), where=f"the grid client (pid {os.getpid()}), deriving it")


def stale_derived(runs: list[RunSpec], rows: dict[str, dict[str, Any]] | None = None) -> list[RunSpec]:
    """The finished derived runs that the grid derives again (`_stale`); `rows`: the runs' current
    results rows (run_row), read here when not given."""
    rows = rows if rows is not None else {r.key: run_row(r) for r in runs}
    return [r for r in runs if r.derived and rows[r.key]["status"] == "done" and _stale(r, rows)]


def _stale(run: RunSpec, rows: dict[str, dict[str, Any]]) -> bool:
    """Whether a finished run that was derived (not trained: a trained one is never redone) has other
    per-fold scores than its sources give now, or a source is not done any more."""
    try:
        if "derived_from" not in json.loads((Path(run.run_dir) / DONE).read_text()):
            return False
    except (OSError, ValueError):
        return False  # run_row has it as failed already
    if any(rows[k]["status"] != "done" for k in run.sources):
        return True
    try:
        sources = {k: RunMetrics.read(Path(rows[k]["run_dir"]) / "metrics.json") for k in run.sources}
        now = derived_metrics(fusion_spec(run.config.fusion), sources).metrics
        kept = RunMetrics.read(Path(run.run_dir) / "metrics.json")
    except (OSError, ValueError, KeyError):
        return True
    return ({f: (m.uar, m.macro_f1) for f, m in now.folds.items()}
            != {f: (m.uar, m.macro_f1) for f, m in kept.folds.items()})


def _check_sources(run: RunSpec, rows: dict[str, dict[str, Any]]) -> None:
    unfinished = [k for k in run.sources if rows[k]["status"] != "done"]
    if unfinished:
        raise DerivedRunError(f"{len(unfinished)} of the {len(run.sources)} runs it is derived from did not finish: "
                              + "; ".join(f"{k} ({rows[k]['fusion']} {rows[k]['layers']}): "
                                          f"{rows[k]['error'] or rows[k]['status']}" for k in unfinished))


def _derive_ready(waiting: list[RunSpec], training: set[str], rows: dict[str, dict[str, Any]],
                  derived: list[str]) -> None:
    """Derive each waiting run none of whose sources is still `training` in this call."""
    for run in [r for r in waiting if not training.intersection(r.sources)]:
        waiting.remove(run)
        derive_run(run, rows)
        rows[run.key] = run_row(run)
        derived.append(run.key)


def record_failure(run: RunSpec, tb: str, where: str) -> None:
    run_dir = Path(run.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_atomic(run_dir / ERROR, f"run {run.key} failed in {where} at {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n\n{tb}")


# --- the results table --------------------------------------------------------------------------

def _error_line(run_dir: Path) -> str | None:
    """The exception line of error.txt (the last non-empty line of the traceback)."""
    try:
        lines = [ln for ln in (run_dir / ERROR).read_text().splitlines() if ln.strip()]
    except FileNotFoundError:
        return None
    return lines[-1].strip() if lines else "failed"


def run_row(run: RunSpec) -> dict[str, Any]:
    """One results row from the run's spec and, when finished, its metrics.json and config.json."""
    run_dir = Path(run.run_dir)
    cfg = run.config
    row: dict[str, Any] = {c: None for c in COLUMNS}
    row.update(run_key=run.key, cache=run.cache, cache_identity=run.cache_identity, corpus=run.corpus,
               condition=run.condition, noise_type=run.noise_type, snr_db=run.snr_db, model=run.model,
               source=source_name(run.model), fusion=cfg.fusion, layers=run.layers, n_layers=run.n_layers,
               seed=cfg.seed, epochs=cfg.epochs, stack=run.stack, selection=run.selection, folds=cfg.folds,
               run_dir=str(run_dir), settings_key=settings_key(cfg, run.cache_identity, run.partial),
               settings=json.dumps(train_settings(cfg), sort_keys=True), partial=run.partial or "")
    if is_done(run):
        try:
            metrics = RunMetrics.read(run_dir / "metrics.json")
            config = json.loads((run_dir / "config.json").read_text())
            done = json.loads((run_dir / DONE).read_text())
        except (OSError, ValueError) as exc:
            row.update(status="failed", error=f"done.json present but outputs unreadable: {exc}")
            return row
        folds = metrics.folds
        row.update(status="done", best_layer=metrics.layer_choice.best_layer if metrics.layer_choice else None,
                   uar=metrics.uar, uar_std=metrics.uar_std, macro_f1=metrics.macro_f1,
                   macro_f1_std=metrics.macro_f1_std,
                   fold_uar=json.dumps({f: m.uar for f, m in folds.items()}),
                   fold_macro_f1=json.dumps({f: m.macro_f1 for f, m in folds.items()}),
                   confusion=json.dumps(metrics.confusion), seconds=metrics.seconds,
                   # the training worker's peak memory when the run finished (none: derived, or older runs)
                   peak_rss_mb=done.get("peak_rss_mb"),
                   code_version=config.get("code_version"), classes=json.dumps(metrics.classes),
                   left_out=json.dumps(metrics.left_out), validation=metrics.validation,
                   # the trainer's data warnings (a fold part missing classes): a worker's stderr is not seen
                   warnings=json.dumps(metrics.warnings, ensure_ascii=False))
    else:
        error = _error_line(run_dir)
        row.update(status="failed" if error else "pending", error=error)
    return row


def results_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=COLUMNS)
    for col in _FLOAT_COLUMNS:
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    return df


def write_results(df: pd.DataFrame, out: Path) -> tuple[Path, Path]:
    """results.parquet, then results.csv, each replaced atomically, the parquet's mtime then set to
    the CSV's: a failed write leaves the old pair or a newer parquet, and a CSV newer than the parquet
    beside it is one edited by hand, which nser-report then reads (aggregate.results_file)."""
    out.mkdir(parents=True, exist_ok=True)
    csv, parquet = out / "results.csv", out / "results.parquet"
    with atomic_open(parquet, "wb") as f:
        df.to_parquet(f, index=False)
    _write_atomic(csv, df.to_csv(index=False))
    stamp = csv.stat().st_mtime_ns
    os.utime(parquet, ns=(stamp, stamp))
    return csv, parquet


# --- the client side ----------------------------------------------------------------------------

def default_workers() -> int:
    """One local worker per core this process may use (a run trains on one torch thread); on a CUDA
    machine one worker: a local cluster's workers all see the same cuda:0, where each run keeps its
    states. More GPUs: one worker per GPU, by hand or with dask-cuda (docs/gpu.md)."""
    import torch

    if torch.cuda.is_available():
        return 1
    cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    return max(1, len(cores))


def _split_address(address: str) -> tuple[str, str | None]:
    """(protocol, host) of a Dask address; no scheme means tcp, as in Dask. Host is None for
    addresses without one (inproc://)."""
    from distributed.comm import parse_address
    from distributed.comm.addressing import parse_host_port

    try:
        protocol, location = parse_address(address)
        if protocol == "inproc":
            return protocol, None
        return protocol, str(parse_host_port(location)[0])
    except ValueError as exc:
        raise NserError(f"--scheduler {address!r} is not a Dask address ({exc}); e.g. tcp://host:8786 or "
                        "tls://host:8786") from exc


def _is_loopback(host: str | None) -> bool:
    """By the address as written: names other than localhost are not resolved (what a name resolves
    to can change), so they count as remote."""
    if host is None:
        return True
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def scheduler_warning(address: str) -> str | None:
    """What to tell the user before connecting to `address`, or None (loopback, or tls://, where both
    sides prove who they are with certificates of the CA the user named)."""
    protocol, host = _split_address(address)
    if _is_loopback(host) or protocol in ("tls", "wss"):
        return None
    return (f"{address} is not on this machine and {protocol}:// is neither encrypted nor authenticated. Dask "
            "sends pickled code to the scheduler, and its workers run it; results come back pickled and are "
            "unpickled here. Whoever runs or can reach that scheduler can run code on its workers and on this "
            "machine: only connect to a cluster you trust, on a network you trust, or use a tls:// address "
            "with --tls-ca-file/--tls-cert/--tls-key (docs/grid.md)")


def scheduler_security(address: str, tls_ca_file: str | None = None, tls_cert: str | None = None,
                       tls_key: str | None = None) -> Any:
    """The `security` for Client(address): a distributed Security from the TLS files for a tls://
    address (mutual TLS: the CA the scheduler's certificate must chain to, this client's certificate
    and key), None otherwise, in which case Dask's own config applies (distributed.comm.tls.*)."""
    import dask.config

    protocol, _ = _split_address(address)
    given = {"--tls-ca-file": tls_ca_file, "--tls-cert": tls_cert, "--tls-key": tls_key}
    if protocol != "tls":
        if any(given.values()):
            raise NserError(f"{', '.join(k for k, v in given.items() if v)} secure(s) a tls:// scheduler; "
                            f"{address} uses {protocol}://")
        return None
    if not any(given.values()):
        if dask.config.get("distributed.comm.tls.ca-file", None):
            return None  # the user's Dask config holds the TLS settings
        raise NserError(f"{address} needs TLS settings: pass --tls-ca-file and --tls-cert (and --tls-key unless "
                        "the key is in the certificate file), or set distributed.comm.tls.ca-file, "
                        ".client.cert and .client.key in the Dask config")
    missing = [k for k in ("--tls-ca-file", "--tls-cert") if not given[k]]
    if missing:
        raise NserError(f"{address}: TLS also needs {' and '.join(missing)} (the CA that signed the scheduler's "
                        "certificate, and this client's certificate)")
    from distributed.security import Security

    return Security(tls_ca_file=tls_ca_file, tls_client_cert=tls_cert, tls_client_key=tls_key,
                    require_encryption=True)


@contextlib.contextmanager
def dask_client(scheduler: str | None = None, n_workers: int | None = None, security: Any = None) -> Iterator[Any]:
    """A client to a running scheduler (`scheduler` address, with `security` for tls://, see
    scheduler_security) or to a local cluster of worker processes with one thread each, listening
    on 127.0.0.1 only. Distributed starts local workers with OMP/MKL/OpenBLAS threads set to 1
    (distributed.nanny.pre-spawn-environ); execute_run sets torch's count."""
    from dask.distributed import Client, LocalCluster

    if scheduler:
        kwargs = {"security": security} if security is not None else {}
        try:
            client = Client(scheduler, **kwargs)
        except OSError as exc:  # includes timeouts: a refusal with the reason, not a traceback
            raise NserError(f"cannot connect to the Dask scheduler at {scheduler}: {exc}") from exc
        with client:
            yield client
        return
    with LocalCluster(n_workers=n_workers or default_workers(), threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        yield client


@dataclass
class GridOutcome:
    table: pd.DataFrame
    csv: Path
    parquet: Path
    ran: list[str] = field(default_factory=list)  # keys executed (trained) by this call
    derived: list[str] = field(default_factory=list)  # keys of derived runs written (or failed) by this call
    skipped: list[str] = field(default_factory=list)  # keys already finished before this call
    imported: list[str] = field(default_factory=list)  # of those, keys whose run dir came from --records
    record_warnings: list[str] = field(default_factory=list)  # records that disagree with a run dir, or failed

    @property
    def failed(self) -> list[str]:
        return self.table.loc[self.table["status"] == "failed", "run_key"].tolist()

    def summary(self) -> str:
        counts = self.table["status"].value_counts().to_dict()
        peak = self.table["peak_rss_mb"].max()
        imported = f", {len(self.imported)} of them from records" if self.imported else ""
        return (f"{len(self.table)} runs: {counts.get('done', 0)} done ({len(self.skipped)} finished before{imported}, "
                f"{counts.get('done', 0) - len(self.skipped)} now), {counts.get('failed', 0)} failed, "
                f"{counts.get('pending', 0)} pending"
                + (f"; largest worker peak memory {peak:.0f} MiB" if pd.notna(peak) else "")
                + f"; results: {self.csv}")


def run_grid(runs: list[RunSpec], out: str | Path, *, client: Any = None, scheduler: str | None = None,
             n_workers: int | None = None, security: Any = None, progress: bool = True,
             write_every_s: float = 5.0, pack: bool = True, train: bool = True,
             records: str | Path | None = None) -> GridOutcome:
    """Run every unfinished run on Dask (the given client, else `scheduler` with `security`, else a local cluster)
    and write `<out>/results.{csv,parquet}`: during the grid at most every `write_every_s` seconds,
    and at the end (also when interrupted). A derived run is written here as soon as its sources
    are finished (or failed), before, during or after the training. Runs that can share their states
    train in one task each (`pack`, pipeline/grid/packing.py); `pack=False`: one run per task.
    `train=False` trains nothing: the table of what is finished (derived runs whose sources are),
    the rest `pending`, e.g. for a report while a grid is finished in parts. `records`: a folder of
    run records (pipeline/grid/records.py): unfinished runs whose record it holds are finished from
    it first, and every finished run's record is kept there (as each run finishes, and at the end)."""
    out = Path(out)
    keys = [r.key for r in runs]
    if len(set(keys)) != len(keys):
        raise NserError("run_grid got the same run twice; expand() drops duplicates")
    with _exclusive(out / ".nser-grid.lock", f"grid folder {out}"):
        imported = _take_records(runs, records) if records is not None else []
        rows = {r.key: run_row(r) for r in runs}
        for run in stale_derived(runs, rows):
            # a source trained again in place (same key, other scores) or gone since: the derived run
            # follows its sources (derived again when they are done), never keeps scores they no longer give
            (Path(run.run_dir) / DONE).unlink()
            rows[run.key] = run_row(run)
        pending = [r for r in runs if rows[r.key]["status"] != "done" and not r.derived]
        waiting = [r for r in runs if rows[r.key]["status"] != "done" and r.derived]
        skipped = [r.key for r in runs if rows[r.key]["status"] == "done"]
        training = {r.key for r in pending}
        ran: list[str] = []
        derived: list[str] = []
        record_warnings: list[str] = []
        by_key = {r.key: r for r in runs}

        def keep(keys: list[str]) -> None:
            """Records of the finished `keys`; a records folder that fails (unwritable, a broken record)
            is a warning: the runs and their results table come first."""
            for k in keys if records is not None else ():
                if rows[k]["status"] != "done":
                    continue
                try:
                    warning = keep_record(by_key[k], records)
                except Exception as exc:  # noqa: BLE001 - any failure of the copy is reported, none stops the grid
                    warning = f"the record of run {k} was not kept in {records}: {type(exc).__name__}: {exc}"
                if warning:
                    record_warnings.append(warning)

        def finished(key: str) -> None:
            training.discard(key)
            n_derived = len(derived)
            _derive_ready(waiting, training, rows, derived)
            keep([key, *derived[n_derived:]])

        try:
            _derive_ready(waiting, training, rows, derived)
            if pending and train:
                with (contextlib.nullcontext(client) if client is not None
                      else dask_client(scheduler, n_workers, security)) as c:
                    _run_pending(c, pending, rows, ran, out, progress, write_every_s, finished, pack)
        finally:
            table = results_frame(list(rows.values()))
            csv, parquet = write_results(table, out)
            keep([k for k in keys if k not in ran])  # runs finished before, derived ones: kept once, no-ops after
        return GridOutcome(table=table, csv=csv, parquet=parquet, ran=ran, derived=derived, skipped=skipped,
                           imported=imported, record_warnings=record_warnings)


def _take_records(runs: list[RunSpec], records: str | Path) -> list[str]:
    """Finish every unfinished trained run whose record `records` holds from it (each under its run
    dir's lock); their keys. A record that is not its run's stops the grid before anything trains.
    Derived runs are derived here again from their sources (taken or not): a derived record from
    sources that trained elsewhere could disagree with this grid's own."""
    taken = []
    for run in runs:
        if run.derived or is_done(run) or not has_record(records, run.key):
            continue
        Path(run.run_dir).mkdir(parents=True, exist_ok=True)
        with _exclusive(Path(run.run_dir) / ".lock", f"run dir {run.run_dir}"):
            if not is_done(run):
                take_record(run, records)
                taken.append(run.key)
    return taken


def cluster_threads(client: Any) -> int:
    """Tasks the cluster runs at once (its workers' threads)."""
    return max(1, sum(w.get("nthreads", 1) for w in client.scheduler_info()["workers"].values()))


def _run_pending(client: Any, pending: list[RunSpec], rows: dict[str, dict], ran: list[str], out: Path,
                 progress: bool, write_every_s: float, finished: Callable[[str], None], pack: bool) -> None:
    """Submit `pending` (packed, pipeline/grid/packing.py, unless not `pack`), the longest tasks first,
    and record each run as its task completes; `finished(key)` after its row."""
    from dask.distributed import as_completed

    tasks: dict[str, list[RunSpec]] = {}
    futures = []
    for runs in longest_first(plan_packs(pending, cluster_threads(client), pack)):
        if len(runs) == 1:
            fut = client.submit(execute_run, runs[0], key=f"nser-run-{runs[0].key}", pure=False)
        else:
            fut = client.submit(execute_pack, runs, key=f"nser-pack-{runs[0].key}-{len(runs)}", pure=False)
        tasks[fut.key] = runs
        futures.append(fut)
    last_write = time.monotonic()
    n_failed = 0
    with tqdm(total=len(pending), desc="grid", unit="run", disable=not progress) as bar:
        for fut in as_completed(futures):
            runs = tasks[fut.key]
            try:
                fut.result()
            except Exception:  # noqa: BLE001 - e.g. KilledWorker: the task never reported back
                for run in runs:
                    if not is_done(run):
                        record_failure(run, traceback.format_exc(),
                                       where="the Dask cluster (the task raised or its worker died)")
            finally:
                fut.release()
            for run in runs:
                rows[run.key] = run_row(run)
                ran.append(run.key)
                finished(run.key)
                n_failed += rows[run.key]["status"] == "failed"
                bar.set_postfix(failed=n_failed, refresh=False)
                bar.update()
                if time.monotonic() - last_write >= write_every_s:
                    write_results(results_frame(list(rows.values())), out)
                    last_write = time.monotonic()
                failpoint("grid:run-finished")
