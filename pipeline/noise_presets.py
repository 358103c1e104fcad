"""Named noise conditions (``--noise-preset human|park|traffic``) backed by DEMAND environments.

A DEMAND environment holds 16 microphone channels of one scene and the paper uses a single
channel, so a DEMAND environment resolves to its ``ch01.wav`` file (`NoiseBank` takes a file as
well as a folder): the bank, its file list and its fingerprint then see exactly that channel. The
noise type recorded in the cache is the preset name (or the environment name when a DEMAND
folder is given without a preset).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from pipeline.errors import NserError


def load_presets() -> dict:
    return yaml.safe_load((Path(__file__).parent / "noise_presets.yaml").read_text())


def is_demand_environment(folder: Path, channel: str = "ch01.wav") -> bool:
    """A folder of the multichannel release: the chosen channel plus at least one sibling channel."""
    return (folder / channel).is_file() and (folder / "ch02.wav").is_file()


def find_environment(root: Path, env: str, layouts: list[str], channel: str = "ch01.wav") -> Path | None:
    """The DEMAND environment folder for `env` under `root` (or `root` itself if it is that environment)."""
    if root.name.upper() == env.upper() and (root / channel).is_file():
        return root
    for layout in layouts:
        cand = root / layout.format(env=env)
        if (cand / channel).is_file():
            return cand
    return None


def demand_environments(root: Path, layouts: list[str], channel: str = "ch01.wav") -> list[str]:
    """Names of the DEMAND environments directly under `root` in any of the release's layouts."""
    if not root.is_dir():
        return []
    found = set()
    for sub in root.iterdir():
        env = sub.name.split("_")[0]
        if any(is_demand_environment(root / lay.format(env=env), channel) for lay in layouts):
            found.add(env)
    return sorted(found)


def resolve_noise(noise_arg: str | None, preset: str | None) -> tuple[str | None, str | None]:
    """(noise folder or file for NoiseBank, noise type for the cache) from ``--noise`` and ``--noise-preset``.

    Without a preset a plain folder passes through unchanged (noise type: the folder name, as before);
    a DEMAND environment folder is narrowed to its single channel."""
    cfg = load_presets()
    channel: str = cfg["channel"]
    if preset is None:
        if noise_arg is None:
            return None, None
        folder = Path(noise_arg)
        if is_demand_environment(folder, channel):
            return str(folder / channel), folder.resolve().name
        envs = demand_environments(folder, cfg["layouts"], channel)
        if len(envs) > 1:
            # Mixing every environment and channel of the release is none of the paper's conditions.
            raise NserError(f"--noise {folder} holds {len(envs)} DEMAND environments ({', '.join(envs[:6])}"
                            f"{', ...' if len(envs) > 6 else ''}): choose one with --noise-preset "
                            f"{'|'.join(sorted(cfg['presets']))} (make: NOISE_PRESET=...), or give one "
                            "environment's folder as --noise")
        return noise_arg, None
    presets: dict[str, str] = cfg["presets"]
    if preset not in presets:
        raise NserError(f"unknown --noise-preset {preset!r}; known: {', '.join(sorted(presets))}")
    if noise_arg is None:
        raise NserError(f"--noise-preset {preset} needs --noise DEMAND_ROOT (the folder holding "
                        f"{', '.join(sorted(presets.values()))})")
    root, env = Path(noise_arg), presets[preset]
    env_dir = find_environment(root, env, cfg["layouts"], channel)
    if env_dir is None:
        tried = ", ".join(str(root / lay.format(env=env) / channel) for lay in cfg["layouts"])
        raise NserError(f"DEMAND environment {env} (preset {preset}) not found under {root}: tried {tried}")
    return str(env_dir / channel), preset
