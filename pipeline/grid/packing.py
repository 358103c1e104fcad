"""Which trained runs share one Dask task ("pack"), so their states are read once (docs/grid.md,
"Packed runs").

Runs can share their resident states when they read the same cache over the same folds with the
same seed, memory budget, device and threads, and their layers overlap: the pack reads the union of
its runs' layers once and trains each run from it in turn (pipeline/grid/runner.py execute_pack).
Runs on disjoint layers gain nothing from one task, so they stay apart. Each such group is split
into at most `n_workers` packs of about equal cost, so every worker still gets work. No torch, no
cache reads: this runs on the client, also for --dry-run.
"""

from __future__ import annotations

from typing import Hashable

from pipeline.grid.spec import RunSpec
from pipeline.train.fusion_specs import FUSION_SPECS


def share_key(run: RunSpec) -> Hashable:
    """What must be equal for two runs to train from one read of the states."""
    c = run.config
    return (run.cache, run.cache_identity, c.folds, c.seed, c.memory_budget, c.device, c.threads)


def layer_set(run: RunSpec) -> frozenset[str]:
    """The run's layers from its canonical selection ("enc:0,1;dec:1" -> {enc0, enc1, dec1}); a run
    chosen on validation trains each of them, so these are the states it reads either way."""
    out = set()
    for part in filter(None, run.selection.split(";")):
        stack, _, layers = part.partition(":")
        out.update(f"{stack}{i}" for i in layers.split(","))
    return frozenset(out)


# An adapter's time over one stack relative to the decoder's: encoder states have 50 frames per second
# of audio, the decoder a few tokens per second plus the prompt. On 2 CPU cores (full-length EmoDB) a
# `single` run took ~10x as long on an encoder state as on a decoder one (median 476 s vs 49 s); on an
# H100, where a step's time is kernel latency more than frames, ~1.3x. The CPU's ratio, rounded down,
# since that is where a grid's order matters most; it only orders and balances tasks.
_STACK_TIME = {"enc": 8.0, "dec": 1.0}


def training_cost(run: RunSpec) -> float:
    """Relative training time of a run: its recurrent adapters, each weighted by its stack's
    sequence length. `l-adapter` trains one per layer, `best` one model per candidate layer, the
    mixing fusions one per stack; the pooled heads (`fc`, `mean-fc`) none, so almost nothing."""
    spec = FUSION_SPECS[run.config.fusion]
    if spec.adapters == "none":
        return 0.1
    per_stack: dict[str, int] = {}
    for state in layer_set(run):
        stack = state[:3]
        per_stack[stack] = per_stack.get(stack, 0) + 1
    per_layer = spec.adapters == "layer" or spec.chosen_on_validation
    return sum(_STACK_TIME.get(stack, 1.0) * (n if per_layer else 1) for stack, n in per_stack.items())


def longest_first(tasks: list[list[RunSpec]]) -> list[list[RunSpec]]:
    """The tasks in the order to submit them: the costliest first (stable; the usual rule for ending
    a set of jobs on several workers early), so that no worker is left with a long `l-adapter` that
    started last, and a grid stopped early has its longest runs, usually the ones a comparison is
    about, already done."""
    return sorted(tasks, key=lambda t: -sum(training_cost(r) for r in t))


def _overlapping(runs: list[RunSpec]) -> list[list[RunSpec]]:
    """Connected components of `runs` by shared layers, in first-appearance order."""
    groups: list[tuple[set[str], list[RunSpec]]] = []
    for run in runs:
        layers = layer_set(run)
        touching = [g for g in groups if g[0] & layers]
        merged = (set(layers), [run])
        for g in touching:
            merged[0].update(g[0])
            merged[1][:0] = g[1]
            groups.remove(g)
        groups.append(merged)
    order = {id(r): i for i, r in enumerate(runs)}
    return sorted((sorted(g[1], key=lambda r: order[id(r)]) for g in groups), key=lambda g: order[id(g[0])])


def _split(group: list[RunSpec], n: int) -> list[list[RunSpec]]:
    """At most `n` packs of about equal total cost (longest first onto the lightest pack); each pack
    keeps the grid's run order."""
    n = max(1, min(n, len(group)))
    packs: list[list[RunSpec]] = [[] for _ in range(n)]
    load = [0.0] * n
    for run in sorted(group, key=training_cost, reverse=True):  # stable: ties keep the grid's order
        k = load.index(min(load))
        packs[k].append(run)
        load[k] += training_cost(run)
    order = {id(r): i for i, r in enumerate(group)}
    return [sorted(p, key=lambda r: order[id(r)]) for p in packs if p]


def plan_packs(runs: list[RunSpec], n_workers: int, pack: bool = True) -> list[list[RunSpec]]:
    """The Dask tasks for `runs` (trained runs only): one run each without `pack`."""
    if not pack:
        return [[r] for r in runs]
    by_key: dict[Hashable, list[RunSpec]] = {}
    for run in runs:
        by_key.setdefault(share_key(run), []).append(run)
    return [p for group in by_key.values() for component in _overlapping(group) for p in _split(component, n_workers)]


def describe_packs(packs: list[list[RunSpec]]) -> str:
    n_runs = sum(map(len, packs))
    shared = [p for p in packs if len(p) > 1]
    return (f"{n_runs} runs in {len(packs)} tasks ({sum(map(len, shared))} runs in {len(shared)} packed tasks, "
            f"{n_runs - sum(map(len, shared))} alone)")
