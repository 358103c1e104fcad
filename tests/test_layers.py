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
])
def test_errors(text, msg):
    with pytest.raises(LayerSelectionError, match=msg):
        parse_layers(text, 7, 7)
