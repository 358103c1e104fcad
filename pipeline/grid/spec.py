"""Grid specs (YAML) and their expansion into keyed training runs.

A grid is the cross product caches x fusions x layer selections x seeds (x folds when `per_fold`).
Expansion opens every cache once, so that layer selections, fusion/selection combinations and
fold names are checked *before* anything runs: a typo in a grid costs an error message, not a
half-finished cluster job. Each run gets a key derived from everything its result depends on (the
full TrainConfig and the cache's identity hash), so a run dir can be reused by any grid that asks
for the same run, and a rerun finds what is already finished.
"""

from __future__ import annotations

import glob
import hashlib
import json
import warnings
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from pipeline.errors import NserError
from pipeline.layers import LayerSelection, stack_label
from pipeline.train.config import TrainConfig, result_settings
from pipeline.train.fusion_specs import FUSION_SPECS, layer_sweep_fusions, resolve_layers

if TYPE_CHECKING:  # opened at expansion only: reading caches needs Zarr, slow to import for `nser --help`
    from pipeline.cache.reader import CacheReader

EACH = "each:"
# TrainConfig fields a grid sets itself; `train:` may set the others.
_PER_RUN_FIELDS = ("fusion", "layers", "seed", "folds")
_GRID_KEYS = ("caches", "fusions", "layers", "seeds", "folds", "per_fold", "derive", "train")
# What expansion does with a cache path (or pattern) that names no cache: refuse the whole grid, or skip
# that cache's runs with a warning (a spec listing caches that only some machines can build, e.g. SSL
# models behind a hub download: grids/paper.yaml).
MISSING_CACHES = ("refuse", "skip")


class GridSpecError(NserError):
    """A grid spec is malformed or asks for runs that cannot exist."""


class MissingCacheWarning(UserWarning):
    """A grid with `missing_caches: skip` left out the runs of caches that do not exist."""


@dataclass(frozen=True)
class SubGrid:
    """One cross product. A spec's `subgrids:` entries inherit every key they do not set from the
    top level (`train:` is merged key by key), so fusions that need different layer selections
    (`single` with "each:", the others with whole stacks) share one grid file."""

    caches: tuple[str, ...]
    fusions: tuple[str, ...]
    layers: tuple[str, ...]
    seeds: tuple[int, ...] = (0,)
    folds: str | tuple[str, ...] = "all"
    per_fold: bool = False
    # false: its `best`/`last` runs train even when the grid's `single` runs could give their results
    derive: bool = True
    train: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GridSpec:
    out: Path
    subgrids: tuple[SubGrid, ...]
    source: str = "<dict>"  # where the spec came from, for error messages
    missing_caches: str = "refuse"  # one of MISSING_CACHES


@dataclass(frozen=True)
class RunSpec:
    """One training run: what to train, where its results go, and the cache facts the results
    table reports (read once at expansion, so the table never reopens caches)."""

    key: str
    run_dir: Path
    cache: str
    cache_identity: str
    config: TrainConfig
    layers: str  # the selection as the grid wrote it ("enc:all") or as "each:" expanded it ("enc:3")
    selection: str  # canonical selection, the one in the config ("enc:0,1,2;dec:0,1")
    stack: str  # enc, dec or enc+dec
    n_layers: int
    corpus: str
    condition: str
    noise_type: str | None
    snr_db: float | None
    model: str
    # CacheReader.partial_hash: which utterances an unfinished cache held at expansion (None: complete)
    partial: str | None = None
    # Keys of the grid's one-layer runs this run's results are taken from, in candidate order
    # (FusionSpec.candidates_train_as); empty: the run trains.
    sources: tuple[str, ...] = ()

    @property
    def derived(self) -> bool:
        return bool(self.sources)

    def describe(self) -> str:
        c = self.config
        how = f"  derived from {len(self.sources)} run{'s' * (len(self.sources) != 1)}" if self.derived else ""
        return (f"{self.key}  {self.corpus}/{self.condition}  {c.fusion:<12} {self.layers:<18} "
                f"seed {c.seed} folds {c.folds}{how}")


# --- loading ------------------------------------------------------------------------------------

def _as_tuple(value: Any, what: str, where: str) -> tuple:
    if isinstance(value, (list, tuple)):
        if not value:
            raise GridSpecError(f"{where}: '{what}' is an empty list")
        return tuple(value)
    if isinstance(value, (str, int)):
        return (value,)
    raise GridSpecError(f"{where}: '{what}' must be a list (or one value), got {type(value).__name__}")


def _subgrid(entry: dict[str, Any], defaults: dict[str, Any], where: str) -> SubGrid:
    unknown = set(entry) - set(_GRID_KEYS)
    if unknown:
        raise GridSpecError(f"{where}: unknown key(s) {sorted(unknown)}; a (sub)grid takes {list(_GRID_KEYS)}")
    merged = {**defaults, **entry, "train": {**defaults.get("train", {}), **entry.get("train", {})}}
    missing = [k for k in ("caches", "fusions", "layers") if k not in merged]
    if missing:
        raise GridSpecError(f"{where}: missing {missing} (set them here or at the top level)")
    folds = merged.get("folds", "all")
    if folds != "all":
        folds = tuple(str(f) for f in _as_tuple(folds, "folds", where))
    seeds = _as_tuple(merged.get("seeds", [0]), "seeds", where)
    if not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise GridSpecError(f"{where}: seeds must be integers, got {list(seeds)}")
    flags = {k: merged.get(k, default) for k, default in (("per_fold", False), ("derive", True))}
    for k, v in flags.items():
        if not isinstance(v, bool):
            raise GridSpecError(f"{where}: {k} must be true or false, got {v!r}")
    train = merged["train"]
    if not isinstance(train, dict):
        raise GridSpecError(f"{where}: 'train' must be a mapping of TrainConfig fields")
    return SubGrid(caches=tuple(map(str, _as_tuple(merged["caches"], "caches", where))),
                   fusions=tuple(map(str, _as_tuple(merged["fusions"], "fusions", where))),
                   layers=tuple(map(str, _as_tuple(merged["layers"], "layers", where))),
                   seeds=seeds, folds=folds, **flags, train=dict(train))


def parse_grid(data: dict[str, Any], out: str | Path | None = None, source: str = "<dict>") -> GridSpec:
    """A GridSpec from the YAML's mapping; `out` (the CLI's --out) overrides the spec's `out`."""
    if not isinstance(data, dict):
        raise GridSpecError(f"{source}: a grid spec is a YAML mapping, got {type(data).__name__}")
    allowed = set(_GRID_KEYS) | {"out", "subgrids", "missing_caches"}
    unknown = set(data) - allowed
    if unknown:
        raise GridSpecError(f"{source}: unknown key(s) {sorted(unknown)}; known: {sorted(allowed)}")
    out = out if out is not None else data.get("out")
    if not out:
        raise GridSpecError(f"{source}: no 'out' folder (set `out:` in the spec or pass --out)")
    defaults = {k: v for k, v in data.items() if k in _GRID_KEYS}
    entries = data.get("subgrids")
    if entries is None:
        subgrids = (_subgrid({}, defaults, source),)
    else:
        if not isinstance(entries, list) or not entries:
            raise GridSpecError(f"{source}: 'subgrids' must be a non-empty list of mappings")
        bad = [i for i, e in enumerate(entries) if not isinstance(e, dict)]
        if bad:
            raise GridSpecError(f"{source}: subgrids{bad} are not mappings")
        subgrids = tuple(_subgrid(e, defaults, f"{source} subgrids[{i}]") for i, e in enumerate(entries))
    missing = data.get("missing_caches", "refuse")
    if missing not in MISSING_CACHES:
        raise GridSpecError(f"{source}: missing_caches must be one of {list(MISSING_CACHES)}, got {missing!r}")
    return GridSpec(out=Path(out), subgrids=subgrids, source=source, missing_caches=missing)


def load_grid(path: str | Path, out: str | Path | None = None, sets: tuple[str, ...] = ()) -> GridSpec:
    """Read a grid YAML, with `sets` (the CLI's --set KEY=VALUE, apply_sets) applied. Relative cache
    paths and `out` are relative to the working directory (like every other nser command), not to
    the YAML file."""
    path = Path(path)
    if not path.is_file():
        raise GridSpecError(f"no grid spec at {path}")
    try:
        data = yaml.load(path.read_text(), Loader=_SpecLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise GridSpecError(f"{path} is not valid YAML: {exc}") from exc
    if sets:
        data = apply_sets(data, sets, str(path))
    return parse_grid(data, out=out, source=str(path))


class _SpecLoader(yaml.SafeLoader):
    """safe_load's reading, except that fold names stay text as written: YAML 1.1 reads `08` as 8
    and `010` as an octal 8, so a spec naming fold `08` would ask for another fold or for none.
    Merge keys (`<<: *anchor`) are resolved first, so a merged `folds` is kept as text too."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            self.flatten_mapping(node)
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == "folds":
                    items = value.value if isinstance(value, yaml.SequenceNode) else [value]
                    for item in items:
                        if isinstance(item, yaml.ScalarNode):
                            item.tag = "tag:yaml.org,2002:str"
        return super().construct_mapping(node, deep=deep)


_SETTABLE = tuple(k for k in _GRID_KEYS if k != "train") + ("missing_caches",)


def apply_sets(data: Any, sets: tuple[str, ...], source: str) -> dict[str, Any]:
    """The spec's mapping with each `KEY=VALUE` set at its top level: KEY one of _SETTABLE (folds,
    seeds, caches, ...) or `train.FIELD`, VALUE read as YAML (`folds=[2]`, `missing_caches=skip`,
    `train.threads=1`). So one shipped grid file serves a part of it (one fold, one cache) without
    an edited copy; the runs' keys are those the edited copy would give. A KEY that a subgrid sets
    itself is refused: the value would not reach that subgrid's runs."""
    if not isinstance(data, dict):
        return data  # parse_grid names the problem
    train = data.get("train") or {}
    data = {**data, "train": dict(train) if isinstance(train, dict) else train}
    entries = data.get("subgrids") if isinstance(data.get("subgrids"), list) else []
    for item in sets:
        key, eq, text = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise GridSpecError(f"--set {item!r}: expected KEY=VALUE, e.g. folds=[2] or train.threads=1")
        try:
            # fold names stay text as written: YAML 1.1 reads 08 as 8 and 010 as an octal 8
            value = yaml.load(text, Loader=yaml.BaseLoader) if key == "folds" else yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise GridSpecError(f"--set {item!r}: the value is not valid YAML: {exc}") from exc
        top, _, field_name = key.partition(".")
        if (top == "train") != bool(field_name) or (top != "train" and top not in _SETTABLE):
            raise GridSpecError(f"--set {key!r}: KEY is one of {list(_SETTABLE)} or train.FIELD")
        if field_name and not isinstance(data["train"], dict):
            raise GridSpecError(f"--set {key!r}: {source}'s 'train' must be a mapping of TrainConfig fields")
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict):
                continue  # parse_grid names it
            own_train = entry.get("train") if isinstance(entry.get("train"), dict) else {}
            if (field_name in own_train) if field_name else top in entry:
                raise GridSpecError(f"--set {key!r}: {source} subgrids[{i}] sets {key} itself, so the value "
                                    "would not reach its runs; edit the spec instead")
        if field_name:
            data["train"][field_name] = value
        else:
            data[top] = value
    return data


# --- expansion ----------------------------------------------------------------------------------

def run_key(config: TrainConfig, cache_identity: str, partial: str | None = None, n_test_folds: int = 1) -> str:
    """16 hex digits of sha256 over the TrainConfig and the cache identity: two runs share a key
    exactly when they train the same thing on the same stored states. Every field counts except
    NON_RESULT_FIELDS (threads, device, ...), which the trainer resumes across too; so a grid
    rerun with more threads or on a GPU finds its finished runs. `partial`: an unfinished cache's
    CacheReader.partial_hash (an --allow-missing run on part of the utterances), which its identity
    hash does not change with; None, a complete cache, adds nothing: the keys runs always had.
    `n_test_folds`: how many test folds the run has. A fusion chosen on validation (`best`) on
    several once chose one layer by the mean over folds and now chooses per fold
    (run_metrics.choose_on_validation), other results under a new key; on one fold (per-fold
    grids) the choice is the same, and so is the key."""
    payload = {"config": result_settings(asdict(config)), "cache_identity": cache_identity}
    if partial is not None:
        payload["partial"] = partial
    if n_test_folds > 1 and FUSION_SPECS[config.fusion].chosen_on_validation:
        payload["layer_choice"] = "per test fold"
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


# Fields with their own results-table columns (or, for seed and folds, what a report cell pools over)
_NOT_SETTINGS = ("seed", "folds", "fusion", "layers")


def settings_key(config: TrainConfig, cache_identity: str, partial: str | None = None) -> str:
    """The run key with seed and test folds neutralised: runs that share it differ in those alone, so
    a report may pool them into one cell; runs that differ in it (a run on part of an unfinished
    cache included) never share one."""
    return run_key(replace(config, seed=0, folds="all"), cache_identity, partial)


def train_settings(config: TrainConfig) -> dict[str, Any]:
    """The result settings other than fusion, layers, seed and folds (lr, epochs, ...): what the
    report names when runs of one fusion differ in them."""
    return {k: v for k, v in result_settings(asdict(config)).items() if k not in _NOT_SETTINGS}


def _cache_paths(entries: tuple[str, ...], missing: list[str]) -> list[str]:
    """The cache paths of a `caches:` list; entries that name nothing are appended to `missing`."""
    from pipeline.cache.reader import is_url

    paths: list[str] = []
    for entry in entries:
        if is_url(entry):  # opened (and refused if absent) at expansion like any cache
            found = [entry]
        elif glob.has_magic(entry):
            found = sorted(glob.glob(entry))
            if not found:
                missing.append(f"cache pattern {entry!r} matches nothing")
        else:
            found = [entry] if Path(entry).exists() else []
            if not found:
                missing.append(f"no cache at {entry}")
        paths += [p for p in found if p not in paths]
    return paths


def _existing_caches(spec: GridSpec) -> list[list[str]]:
    """Each subgrid's cache paths. Every missing cache is named in one refusal, or, with
    `missing_caches: skip`, in one warning, its runs left out."""
    missing: list[str] = []
    paths = [_cache_paths(sub.caches, missing) for sub in spec.subgrids]
    missing = list(dict.fromkeys(missing))  # subgrids often share a cache list
    if missing:
        names = "\n  ".join(missing)
        if spec.missing_caches == "refuse":
            raise GridSpecError(f"{spec.source}: {len(missing)} missing cache(s) "
                                f"(build them first, or set `missing_caches: skip` to run the rest):\n  {names}")
        warnings.warn(f"{spec.source}: skipping the runs of {len(missing)} missing cache(s) "
                      f"(missing_caches: skip):\n  {names}", MissingCacheWarning, stacklevel=2)
    return paths


def _stack(selection: LayerSelection) -> str:
    return "+".join(s for s, idx in (("enc", selection.encoder), ("dec", selection.decoder)) if idx)


def _train_fields(train: dict[str, Any], where: str) -> dict[str, Any]:
    names = {f.name for f in fields(TrainConfig)} - set(_PER_RUN_FIELDS)
    per_run = set(train) & set(_PER_RUN_FIELDS)
    if per_run:
        raise GridSpecError(f"{where}: train.{sorted(per_run)} is set by the grid itself "
                            "(use the top-level fusions / layers / seeds / folds)")
    unknown = set(train) - names
    if unknown:
        raise GridSpecError(f"{where}: unknown train setting(s) {sorted(unknown)}; known: {sorted(names)}")
    # One torch thread per run unless asked: each Dask worker runs one run at a time, and the
    # workers, not torch's thread pool, are how a grid uses the machine's cores.
    defaults = {f.name: f.default for f in fields(TrainConfig)}
    return {"threads": 1, **{k: _coerce(v, type(defaults[k]), f"{where}: train.{k}") for k, v in train.items()}}


def _coerce(value: Any, kind: type, what: str) -> Any:
    """A train value as its TrainConfig type. YAML reads `1e-4` (no dot) as a string, and a
    string lr would change the run key and fail only inside the run."""
    if kind not in (bool, int, float, str):
        return value  # e.g. an optional field (default None): taken as written
    try:
        if kind is bool or isinstance(value, bool):
            if isinstance(value, bool) and kind is bool:
                return value
        elif kind is float:
            return float(value)
        elif kind is int and float(value) == int(float(value)):
            return int(float(value))
        elif kind is str and isinstance(value, str):
            return value
    except (TypeError, ValueError):
        pass
    raise GridSpecError(f"{what} must be {kind.__name__}, got {value!r}")


def expand(spec: GridSpec, derive: bool = True) -> list[RunSpec]:
    """Every run of the grid, in spec order, duplicates (same key) dropped. Raises GridSpecError
    for anything that would fail for a reason the spec alone decides.

    A run whose fusion's candidates train as one-layer runs that the grid also has is derived
    from them (RunSpec.sources), unless `derive` (the CLI's --no-derive) or its subgrid's
    `derive:` is false."""
    from pipeline.cache.reader import CacheReader

    readers: dict[str, CacheReader] = {}
    runs: dict[str, RunSpec] = {}
    wanted: dict[str, tuple[str, ...]] = {}  # run key -> keys of the one-layer runs it could be derived from
    cache_paths = _existing_caches(spec)
    for i, sub in enumerate(spec.subgrids):
        where = spec.source if len(spec.subgrids) == 1 else f"{spec.source} subgrids[{i}]"
        unknown = [f for f in sub.fusions if f not in FUSION_SPECS]
        if unknown:
            raise GridSpecError(f"{where}: unknown fusion(s) {unknown}; known: {sorted(FUSION_SPECS)}")
        train = _train_fields(sub.train, where)
        for seed in sub.seeds:  # epochs 0, batch_size 0, lr <= 0, ... fail here, not in every run
            try:
                TrainConfig(seed=int(seed), **train).check()
            except NserError as exc:
                raise GridSpecError(f"{where}: {exc}") from exc
        for path in cache_paths[i]:
            if path not in readers:
                try:
                    readers[path] = CacheReader(path)
                except NserError as exc:
                    raise GridSpecError(f"{where}: cannot open cache {path}: {exc}") from exc
            reader = readers[path]
            fold_names = _fold_names(reader, sub, where, path)
            for fusion in sub.fusions:
                for text in sub.layers:
                    for label, selection in _selections(reader, fusion, text, where, path):
                        for seed in sub.seeds:
                            for folds in fold_names:
                                cfg = TrainConfig(fusion=fusion, layers=selection.spec(), seed=int(seed),
                                                  folds=folds, **train)
                                key = run_key(cfg, reader.identity_hash, reader.partial_hash,
                                              _n_test_folds(reader, folds))
                                if key not in runs:
                                    runs[key] = _run(spec.out, key, path, reader, cfg, label, selection)
                                    if derive and sub.derive:
                                        wanted[key] = _candidate_run_keys(reader, cfg, selection)
    return [replace(run, sources=wanted[key]) if wanted.get(key) and all(k in runs for k in wanted[key]) else run
            for key, run in runs.items()]


def _candidate_run_keys(reader: CacheReader, cfg: TrainConfig, selection: LayerSelection) -> tuple[str, ...]:
    """Keys of the one-layer runs, with this run's other settings, that train exactly what this
    run trains per candidate; () for a fusion that trains a model of its own."""
    fusion = FUSION_SPECS[cfg.fusion]
    if fusion.candidates_train_as is None:
        return ()
    candidates = fusion.candidates(selection, reader.n_encoder_states, reader.n_decoder_states)
    return tuple(run_key(replace(cfg, fusion=fusion.candidates_train_as, layers=c.spec()), reader.identity_hash,
                         reader.partial_hash, _n_test_folds(reader, cfg.folds)) for c in candidates)


def _n_test_folds(reader: CacheReader, folds: str) -> int:
    """How many test folds a run with `folds` has on this cache (as pipeline.folds.fold_plan
    makes them: one for a split cache, one per fold name otherwise)."""
    if folds != "all":
        return len(folds.split(","))
    return 1 if reader.meta.corpus.protocol == "split" else len({str(f) for f in reader.table["fold"]})


def _fold_names(reader: CacheReader, sub: SubGrid, where: str, path: str) -> list[str]:
    """The `folds` values of the grid's TrainConfigs for this cache: one entry ("all" or a
    comma list) normally, one per test fold with `per_fold`."""
    from pipeline.folds import fold_plan

    if sub.folds == "all" and not sub.per_fold:
        return ["all"]
    try:
        available = [p[0] for p in fold_plan(reader)]
    except NserError as exc:
        raise GridSpecError(f"{where}: cache {path}: {exc}") from exc
    wanted = available if sub.folds == "all" else list(sub.folds)
    missing = [f for f in wanted if f not in available]
    if missing:
        raise GridSpecError(f"{where}: fold(s) {missing} are not test folds of cache {path} (it has {available})")
    return wanted if sub.per_fold else [",".join(wanted)]


def _selections(reader: CacheReader, fusion: str, text: str, where: str,
                path: str) -> list[tuple[str, LayerSelection]]:
    """(label, LayerSelection) pairs for one layers entry: several for "each:", else one."""
    one_layer = FUSION_SPECS[fusion].one_layer
    each = text.startswith(EACH)
    body = text[len(EACH):] if each else text
    try:
        selection = reader.selection(body)
    except NserError as exc:
        raise GridSpecError(f"{where}: layers {text!r} on cache {path}: {exc}") from exc
    if each:
        if not one_layer:
            sweeps = layer_sweep_fusions()
            raise GridSpecError(f"{where}: layers {text!r} with fusion {fusion!r}: 'each:' expands to one "
                                f"single-layer run per layer and goes with fusion {' or '.join(map(repr, sweeps))} "
                                f"only; put it in a subgrid with `fusions: [{', '.join(sweeps)}]`")
        return ([(f"enc:{i}", LayerSelection((i,), ())) for i in selection.encoder]
                + [(f"dec:{i}", LayerSelection((), (i,))) for i in selection.decoder])
    try:
        resolve_layers(fusion, selection, reader.n_encoder_states, reader.n_decoder_states)
    except NserError as exc:
        hint = (f"; for one run per layer write layers: ['each:{body}']"
                if one_layer and len(selection) > 1 else "")
        raise GridSpecError(f"{where}: fusion {fusion!r} with layers {text!r}: {exc}{hint}") from exc
    return [(stack_label(selection, reader.n_encoder_states, reader.n_decoder_states) or text, selection)]


def _run(out: Path, key: str, path: str, reader: CacheReader, cfg: TrainConfig, label: str,
         selection: LayerSelection) -> RunSpec:
    meta = reader.meta
    cond = meta.condition
    return RunSpec(key=key, run_dir=out / "runs" / key, cache=str(path), cache_identity=reader.identity_hash,
                   config=cfg, layers=label, selection=selection.spec(), stack=_stack(selection),
                   n_layers=len(selection), corpus=meta.corpus.name, condition=cond.name,
                   noise_type=cond.noise_type, snr_db=None if cond.snr_db is None else float(cond.snr_db),
                   model=meta.model.name, partial=reader.partial_hash)
