"""The corpus reader registry."""

import pytest

from pipeline.corpora.manifest import CORPORA, corpus_readers, read_corpus
from pipeline.errors import NserError


def test_every_reader_module_registers_its_reader():
    readers = corpus_readers()
    assert readers is CORPORA
    assert set(readers) == {"casia", "csv", "emodb", "iemocap", "meld", "ravdess"}
    assert all(callable(r) for r in readers.values())


def test_read_corpus_refuses_an_unknown_name(tmp_path):
    with pytest.raises(NserError, match="unknown corpus 'timit'; known: casia, csv, emodb, iemocap, meld, ravdess"):
        read_corpus("timit", tmp_path)
