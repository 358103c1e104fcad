"""The registered command tree: every command and parameter documented, every command on the one
error path, the console scripts pointing into it, and `nser --help` free of heavy imports."""

import configparser
import importlib
import subprocess
import sys
from pathlib import Path

import click

from pipeline.cli import main
from pipeline.cli.common import NserCommand, NserGroup

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "transformers", "dask", "distributed", "pandas", "matplotlib", "sklearn")


def walk(command: click.Command, path: str = "nser"):
    """(path, command) for the command and everything registered under it."""
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from walk(sub, f"{path} {name}")


def missing_help(command: click.Command) -> list[str]:
    """Commands without a docstring and parameters (options and arguments) without help text."""
    ctx = click.Context(command)
    missing = []
    for path, cmd in walk(command):
        if not (cmd.help or "").strip():
            missing.append(path)
        missing += [f"{path} {p.name}" for p in cmd.get_params(ctx) if not (p.help or "").strip()]
    return missing


def test_every_command_option_and_argument_has_help():
    assert missing_help(main) == []


def test_missing_help_is_found():
    @click.group(cls=NserGroup)
    def group():
        """Documented."""

    @group.command("sub")
    @click.argument("path")
    @click.option("--bare")
    @click.option("--fine", help="Documented.")
    def sub(path, bare, fine):
        """Documented."""

    @group.command("undocumented")
    def undocumented():
        pass

    assert missing_help(group) == ["nser sub path", "nser sub bare", "nser undocumented"]


def test_every_command_is_an_nser_command():
    commands = dict(walk(main))
    assert {"nser extract", "nser train", "nser cache info", "nser cache errors", "nser cache verify",
            "nser cache export", "nser cache asr-metrics", "nser demo-corpus", "nser probe", "nser grid",
            "nser report"} <= set(commands)
    for path, cmd in commands.items():
        assert isinstance(cmd, NserGroup if isinstance(cmd, click.Group) else NserCommand), path


def test_console_scripts_are_the_registered_commands():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    scripts = dict(line.split(" = ") for line in cfg["options.entry_points"]["console_scripts"].strip().splitlines())
    registered = {id(cmd) for _, cmd in walk(main)}
    assert set(scripts) == {"nser", "nser-extract", "nser-train", "nser-grid", "nser-report", "nser-probe"}
    for script, target in scripts.items():
        module, attr = target.split(":")
        assert module.startswith("pipeline.cli"), script
        assert id(getattr(importlib.import_module(module), attr)) in registered, script


def test_help_imports_nothing_heavy():
    code = ("import sys; from pipeline.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[-1] == "[]"
    assert "Commands:" in res.stdout and "demo-corpus" in res.stdout
