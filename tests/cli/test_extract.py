"""nser-extract's choices come from the registries, and refuse other values before any work."""

from click.testing import CliRunner

from pipeline.cli.extract import extract_command
from pipeline.corpora.manifest import CORPORA, Corpus, register_corpus


def choices(name: str) -> tuple[str, ...]:
    return next(p for p in extract_command.params if p.name == name).type.choices


def test_corpus_choices_follow_the_reader_registry(tmp_path):
    assert set(choices("corpus")) == {"casia", "csv", "emodb", "iemocap", "meld", "ravdess"}

    @register_corpus("registered-later")
    def read_nothing(root):
        return Corpus("registered-later", [], [], "en", "cv")

    try:
        assert "registered-later" in choices("corpus")
        res = CliRunner().invoke(extract_command, ["--corpus", "registered-later", "--data-root", str(tmp_path),
                                                   "--out", str(tmp_path / "c.zarr"), "--quiet"])
        # past option parsing, into the reader: its empty corpus is the reader's error (exit 1)
        assert res.exit_code == 1 and "registered-later reader found no usable utterances" in res.output
    finally:
        del CORPORA["registered-later"]


def test_unknown_corpus_and_preset_are_usage_errors(tmp_path):
    base = ["--data-root", str(tmp_path), "--out", str(tmp_path / "c.zarr"), "--quiet"]
    res = CliRunner().invoke(extract_command, ["--corpus", "timit", *base])
    assert res.exit_code == 2 and "'timit' is not one of 'casia', 'csv', 'emodb'" in res.output
    res = CliRunner().invoke(extract_command, ["--corpus", "csv", "--noise-preset", "cafe", *base])
    assert res.exit_code == 2 and "'cafe' is not one of 'human', 'park', 'traffic'" in res.output
    assert not (tmp_path / "c.zarr").exists()


def test_dtype_choices_are_the_extractors():
    from pipeline.extract.run import DTYPES

    assert choices("dtype") == ("auto", *DTYPES)
