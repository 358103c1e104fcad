import pytest

from pipeline.errors import LayerSelectionError
from pipeline.layers import parse_layers


@pytest.mark.parametrize("text,enc,dec", [
    ("enc:all,dec:all", list(range(7)), list(range(7))),
    ("dec:0-4", [], [0, 1, 2, 3, 4]),
    ("enc:5,6", [5, 6], []),
    ("enc:last", [6], []),
    ("enc:1,dec:2,enc:3", [1, 3], [2]),
    ("enc:5-6", [5, 6], []),
])
def test_parse(text, enc, dec):
    sel = parse_layers(text, 7, 7)
    assert list(sel.encoder) == enc and list(sel.decoder) == dec
    assert len(sel) == len(enc) + len(dec)


@pytest.mark.parametrize("text,msg", [
    ("enc:7", "not in the cache"),
    ("5", "stack prefix"),
    ("enc:x", "bad layer selection"),
    ("enc:4-2", "empty layer range"),
    ("", "selects no layer"),
    ("enc:-3-5", "negative layer index in 'enc:-3-5'"),
    ("enc:-1", "negative layer index.*'enc:last'"),
    ("dec:2--1", "negative layer index"),
    ("enc:0-5000000", r"encoder layer\(s\) 0-5000000 not in the cache: it stores encoder states 0..6"),
    ("dec:9", r"decoder layer\(s\) 9 not in the cache"),
    ("enc:" + "9" * 5000, "bad layer selection item 'enc:999"),
])
def test_errors(text, msg):
    with pytest.raises(LayerSelectionError, match=msg):
        parse_layers(text, 7, 7)


def test_range_bounds_are_checked_before_the_range_is_built():
    """'enc:0-500000000' used to build a 500M-element list before refusing it."""
    import tracemalloc

    tracemalloc.start()
    with pytest.raises(LayerSelectionError, match="0-500000000 not in the cache"):
        parse_layers("enc:0-500000000", 7, 7)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1 << 20, f"{peak} bytes allocated to refuse a range"
