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


def test_blocks_are_the_papers_layers_without_the_embeddings():
    from pipeline.layers import PAPER_LAYERS

    sel = parse_layers(PAPER_LAYERS, 13, 13)  # whisper-small: 12 + 12 blocks, 13 + 13 stored states
    assert sel.encoder == tuple(range(1, 13)) and sel.decoder == tuple(range(1, 13)) and len(sel) == 24
    assert parse_layers("enc:blocks,dec:0", 7, 7).names == [f"enc{i}" for i in range(1, 7)] + ["dec0"]
    with pytest.raises(LayerSelectionError, match="'dec:blocks' needs a stack with blocks"):
        parse_layers("dec:blocks", 7, 1)


@pytest.mark.parametrize("text,label", [
    ("enc:blocks", "enc:blocks"), ("enc:1-6", "enc:blocks"), ("enc:0-6", "enc:all"), ("enc:all", "enc:all"),
    ("dec:all,enc:1-6", "enc:blocks,dec:all"), ("enc:blocks,dec:blocks", "enc:blocks,dec:blocks"),
    ("enc:2-6", None), ("enc:all,dec:0-3", None), ("enc:6", None),
])
def test_whole_stacks_get_one_label_whatever_the_spelling(text, label):
    from pipeline.layers import stack_label

    assert stack_label(parse_layers(text, 7, 7), 7, 7) == label
