"""nser cache export: format and pooling choices are the exporter's."""

from click.testing import CliRunner

from pipeline.cache.export import FORMATS, POOLS
from pipeline.cli.cache import cache_export


def test_export_choices_are_the_exporters(tmp_path):
    params = {p.name: p for p in cache_export.params}
    assert params["fmt"].type.choices == FORMATS and params["pool"].type.choices == POOLS
    res = CliRunner().invoke(cache_export, [str(tmp_path / "c.zarr"), "--format", "parquet",
                                            "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "'parquet' is not one of 'hdf5', 'npy'" in res.output
