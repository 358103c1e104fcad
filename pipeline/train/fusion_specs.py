"""What each `--fusion` name means apart from its model, without torch: which layer selections it
trains on and how the trainer, the grid and the report treat it. The models register against
these names in pipeline/train/fusion.py.

The registry's order is the report's order of methods.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from pipeline.errors import LayerSelectionError
from pipeline.layers import LayerSelection

# (fusion name, the selection asked for, stored encoder states, stored decoder states) -> candidates
CandidateRule = Callable[[str, LayerSelection, int, int], list[LayerSelection]]


def as_given(name: str, selection: LayerSelection, n_encoder_states: int,
             n_decoder_states: int) -> list[LayerSelection]:
    return [selection]


def exactly_one(name: str, selection: LayerSelection, n_encoder_states: int,
                n_decoder_states: int) -> list[LayerSelection]:
    if len(selection) != 1:
        raise LayerSelectionError(f"--fusion {name} needs exactly one layer, got {len(selection)} "
                                  f"({', '.join(selection.names)}); e.g. --layers enc:6")
    return [selection]


def stack_last(name: str, selection: LayerSelection, n_encoder_states: int,
               n_decoder_states: int) -> list[LayerSelection]:
    """The final state of the one selected stack, which the selection must include."""
    if selection.encoder and selection.decoder:
        raise LayerSelectionError(f"--fusion {name} takes the last state of one stack; select one: "
                                  "--layers enc:all or --layers dec:all")
    stack, chosen, count = (("enc", selection.encoder, n_encoder_states) if selection.encoder
                            else ("dec", selection.decoder, n_decoder_states))
    last = count - 1
    if last not in chosen:
        one_layer = ", ".join(layer_sweep_fusions())
        raise LayerSelectionError(
            f"--fusion {name} uses {stack}{last}, the stack's last state, which --layers does not select "
            f"({', '.join(selection.names)}); use --layers {stack}:all, or --fusion {one_layer} for another layer")
    return [LayerSelection((last,), ()) if stack == "enc" else LayerSelection((), (last,))]


def each_layer(name: str, selection: LayerSelection, n_encoder_states: int,
               n_decoder_states: int) -> list[LayerSelection]:
    return ([LayerSelection((i,), ()) for i in selection.encoder]
            + [LayerSelection((), (i,)) for i in selection.decoder])


ADAPTERS = ("layer", "stack", "none")


@dataclass(frozen=True)
class FusionSpec:
    name: str
    rule: CandidateRule = as_given
    # Trains on the one layer the selection names: a layer sweep is one run of it per layer
    # (grid `each:`), and the report draws its layer-wise curves from these runs.
    one_layer: bool = False
    # Trains a model per candidate on every fold and keeps, per test fold, the candidate with the
    # best validation UAR on that fold's validation part; only the kept models see the test folds.
    chosen_on_validation: bool = False
    # The one-layer fusion whose run on each candidate trains exactly this fusion's model for it
    # (same model, seeds and folds): a grid that has those runs derives this run from them
    # instead of training it again (docs/grid.md). None: the fusion trains a model of its own.
    candidates_train_as: str | None = None
    # Takes one vector per utterance (openSMILE functionals; `fc`) rather than frame sequences.
    per_utterance: bool = False
    # Has learned softmax layer weights (parameters named `*logits`), which --layer-weight-lr tunes.
    learned_layer_weights: bool = False
    # Standardises its one input vector itself (training-part statistics), so --state-norm adds nothing.
    standardises_input: bool = False
    # Its recurrent adapters, most of a run's time (the grid starts its longest runs first): "layer",
    # one per selected layer; "stack", one per stack after mixing its layers; "none", no recurrence.
    adapters: str = "stack"  # one of ADAPTERS

    def __post_init__(self):
        if self.adapters not in ADAPTERS:
            raise ValueError(f"fusion {self.name!r}: adapters must be one of {ADAPTERS}, got {self.adapters!r}")

    def candidates(self, selection: LayerSelection, n_encoder_states: int,
                   n_decoder_states: int) -> list[LayerSelection]:
        """The selection(s) this fusion trains on, given the one asked for and the cache's state
        counts; exactly one unless `chosen_on_validation`."""
        return self.rule(self.name, selection, n_encoder_states, n_decoder_states)

    def check_source(self, source: str, per_utterance: bool) -> None:
        """Refuse, before any training, a cache whose states this fusion's head cannot take: a
        BiGRU or mean-pool over the single row of a per-utterance vector, or `fc` over frames."""
        if per_utterance and not self.per_utterance:
            fits = ", ".join(n for n, s in FUSION_SPECS.items() if s.per_utterance)
            raise LayerSelectionError(f"--fusion {self.name} runs over frame sequences, but the cache's {source} "
                                      f"source stores one vector per utterance; use --fusion {fits}")
        if self.per_utterance and not per_utterance:
            fits = ", ".join(n for n, s in FUSION_SPECS.items() if s.name == "mean-fc")
            raise LayerSelectionError(f"--fusion {self.name} takes one vector per utterance, but the cache's "
                                      f"{source} source stores frame sequences; use --fusion {fits} (mean over "
                                      "frames, then the same head) or a frame fusion such as single")


FUSION_SPECS: dict[str, FusionSpec] = {s.name: s for s in (
    FusionSpec("single", exactly_one, one_layer=True),
    FusionSpec("last", stack_last, candidates_train_as="single"),
    FusionSpec("best", each_layer, chosen_on_validation=True, candidates_train_as="single"),
    FusionSpec("mean"),
    FusionSpec("attention"),
    FusionSpec("scalar-mix", learned_layer_weights=True),
    FusionSpec("weighted-sum", learned_layer_weights=True),
    FusionSpec("l-adapter", learned_layer_weights=True, adapters="layer"),
    # The paper's baseline heads (Table II): HSF functionals -> FC; SSL states -> mean-pool -> FC.
    FusionSpec("fc", exactly_one, per_utterance=True, standardises_input=True, adapters="none"),
    FusionSpec("mean-fc", exactly_one, standardises_input=True, adapters="none"),
)}


def fusion_spec(name: str) -> FusionSpec:
    if name not in FUSION_SPECS:
        raise ValueError(f"unknown fusion {name!r}; known: {', '.join(sorted(FUSION_SPECS))}")
    return FUSION_SPECS[name]


def layer_sweep_fusions() -> list[str]:
    return [name for name, spec in FUSION_SPECS.items() if spec.one_layer]


def resolve_layers(fusion: str, selection: LayerSelection, n_encoder_states: int,
                   n_decoder_states: int) -> list[LayerSelection]:
    """The selection(s) `fusion` trains on: `best` gets one single-layer candidate per selected
    layer (the trainer keeps the best by validation), `last` the final state of the one selected
    stack, the others the selection as given."""
    return fusion_spec(fusion).candidates(selection, n_encoder_states, n_decoder_states)
