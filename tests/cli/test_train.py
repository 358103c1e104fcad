"""nser-train's option parsing: --device and the registry-backed --fusion."""

import pytest
from click.testing import CliRunner

from pipeline.cli.train import train_command


def parsed(*args: str) -> dict:
    """The parameters as the command would receive them, without running it."""
    return train_command.make_context("nser-train", ["--cache", "c.zarr", "--out", "run", *args]).params


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:12"])
def test_device_accepts_a_gpu_index(device):
    assert parsed("--device", device)["device"] == device


@pytest.mark.parametrize("device", ["gpu", "cuda:", "cuda:-1", "cuda:x", "CPU", "mps"])
def test_device_refuses_other_values(tmp_path, device):
    res = CliRunner().invoke(train_command, ["--cache", str(tmp_path / "c.zarr"), "--out", str(tmp_path / "run"),
                                             "--device", device])
    assert res.exit_code == 2 and f"Invalid value for '--device': {device!r} is not one of" in res.output
    assert not (tmp_path / "run").exists()


def test_fusion_choices_are_the_registry():
    from pipeline.train.fusion import FUSIONS

    assert set(train_command.params[[p.name for p in train_command.params].index("fusion")].type.choices) \
        == set(FUSIONS)
    for name in FUSIONS:
        assert parsed("--fusion", name)["fusion"] == name


def test_default_layers_are_the_papers():
    from pipeline.train.config import TrainConfig

    assert parsed()["layers"] == TrainConfig().layers == "enc:blocks,dec:blocks"
    assert "enc:blocks,dec:blocks" in CliRunner().invoke(train_command, ["--help"]).output


def test_adapter_dropout_is_the_papers_and_checked(tmp_path):
    assert parsed()["adapter_dropout"] == 0.5 and parsed("--adapter-dropout", "0")["adapter_dropout"] == 0.0
    res = CliRunner().invoke(train_command, ["--cache", str(tmp_path / "c.zarr"), "--out", str(tmp_path / "run"),
                                             "--adapter-dropout", "1.5"])
    assert res.exit_code == 1 and "adapter_dropout must be in [0, 1)" in res.output
