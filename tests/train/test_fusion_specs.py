"""The FusionSpec registry: what each fusion name means to the trainer, the grid and the report."""

from __future__ import annotations

import pandas as pd
import pytest

from pipeline.errors import LayerSelectionError
from pipeline.grid.spec import GridSpecError, expand, parse_grid
from pipeline.layers import LayerSelection
from pipeline.report import aggregate
from pipeline.train import fusion_specs
from pipeline.train.fusion import FUSIONS, SingleLayerFusion, register_fusion
from pipeline.train.fusion_specs import FUSION_SPECS, FusionSpec, exactly_one, fusion_spec, layer_sweep_fusions
from tests.helpers import make_cache

BOTH = LayerSelection((1, 2), (0,))


def test_every_spec_has_a_model_and_no_model_lacks_a_spec():
    assert list(FUSIONS) and set(FUSIONS) == set(FUSION_SPECS)
    with pytest.raises(ValueError, match="unknown fusion 'sum'"):
        register_fusion("sum")


def test_declared_meanings():
    assert layer_sweep_fusions() == ["single"]
    assert [n for n, s in FUSION_SPECS.items() if s.chosen_on_validation] == ["best"]
    # one-layer fusions train one model: single, last and best share it
    assert {n for n, cls in FUSIONS.items() if cls is SingleLayerFusion} == {"single", "last", "best"}


def test_candidates_per_fusion():
    assert [s.names for s in fusion_spec("best").candidates(BOTH, 7, 7)] == [["enc1"], ["enc2"], ["dec0"]]
    assert fusion_spec("last").candidates(LayerSelection((), (0, 6)), 7, 7) == [LayerSelection((), (6,))]
    assert fusion_spec("single").candidates(LayerSelection((3,), ()), 7, 7) == [LayerSelection((3,), ())]
    for name, spec in FUSION_SPECS.items():
        if spec.rule is fusion_specs.as_given:
            assert spec.candidates(BOTH, 7, 7) == [BOTH], name
    with pytest.raises(LayerSelectionError, match="--fusion single needs exactly one layer, got 3"):
        fusion_spec("single").candidates(BOTH, 7, 7)
    with pytest.raises(LayerSelectionError, match="or --fusion single for another layer"):
        fusion_spec("last").candidates(LayerSelection((0,), ()), 7, 7)


def test_report_order_is_the_registry_order():
    methods = ["l-adapter", "weighted-sum [enc:0,1]", "best", "single, best†", "mean", "last", "single, last",
               "unknown"]
    ranked = sorted(methods, key=aggregate._method_rank)
    assert ranked == ["single, last", "single, best†", "last", "best", "mean", "weighted-sum [enc:0,1]",
                      "l-adapter", "unknown"]


def test_grid_and_report_follow_a_new_sweep_fusion(monkeypatch, tmp_path):
    """A second one-layer fusion is treated as `single` is, by declaration alone."""
    monkeypatch.setitem(FUSION_SPECS, "probe", FusionSpec("probe", exactly_one, one_layer=True))
    assert layer_sweep_fusions() == ["single", "probe"]
    cache = make_cache(tmp_path / "c.zarr")
    runs = expand(parse_grid({"out": str(tmp_path / "g"), "caches": [str(cache)], "fusions": ["probe", "mean"],
                              "subgrids": [{"fusions": ["probe"], "layers": ["each:enc:all"]},
                                           {"fusions": ["mean"], "layers": ["enc:all"]}]}))
    assert [(r.config.fusion, r.layers) for r in runs] == [("probe", "enc:0"), ("probe", "enc:1"),
                                                           ("probe", "enc:2"), ("mean", "enc:all")]
    with pytest.raises(GridSpecError, match="goes with fusion 'single' or 'probe' only"):
        expand(parse_grid({"out": str(tmp_path / "g"), "caches": [str(cache)], "fusions": ["mean"],
                           "layers": ["each:enc:all"]}))
    rows = [dict(fusion="probe", layers=f"enc:{i}", selection=f"enc:{i}", uar=u, macro_f1=u, condition="clean")
            for i, u in enumerate([0.4, 0.7, 0.5])]
    rows.append(dict(fusion="mean", layers="enc:all", selection="enc:0,1,2", uar=0.6, macro_f1=0.6,
                     condition="clean"))
    df = aggregate.normalize(pd.DataFrame(rows))
    assert list(aggregate.layerwise(df)["clean"]["layer"]) == [0, 1, 2]
    order, cells = aggregate.method_cells(df)
    assert order == [("enc", "mean"), ("enc", "probe, last"), ("enc", "probe, best†")]  # registry order
    assert cells[("enc", "probe, best†")]["clean"].note == "enc1"
    assert cells[("enc", "probe, last")]["clean"].uar.mean == pytest.approx(0.5)


def test_declared_adapters_match_the_models():
    """`adapters` (what the grid's longest-first order counts) is what each model builds: a recurrent
    layer adapter per selected layer, one per stack after mixing, or none."""
    from pipeline.train.fusion import LayerAdapter

    for name, spec in FUSION_SPECS.items():
        one_model = FUSIONS[name] is SingleLayerFusion or spec.rule is exactly_one  # trains on one layer
        n_enc, n_dec = (1, 0) if one_model else (3, 2)
        model = FUSIONS[name](n_layers=n_enc + n_dec, d_in=8, n_classes=4, hidden=4, n_encoder=n_enc, n_decoder=n_dec)
        adapters = sum(isinstance(m, LayerAdapter) for m in model.modules())
        assert adapters == {"layer": n_enc + n_dec, "stack": (n_enc > 0) + (n_dec > 0), "none": 0}[spec.adapters], name
    with pytest.raises(ValueError, match="adapters must be one of"):
        FusionSpec("typo", adapters="layers")
