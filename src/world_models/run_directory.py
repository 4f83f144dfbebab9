"""A run directory: its ``config.json``, written once and read back by every stage.

A run made under one config refuses another (``--fresh`` starts over); the changes
accepted in place are more curriculum rounds and where the real episodes are played
(``RELOCATABLE_KEYS``: the same seeds give the same episodes on either pool).
"""

from __future__ import annotations

import os
import typing
from pathlib import Path

from world_models.config import (
    Config,
    ConfigError,
    apply_overrides,
    config_diff,
    load_config,
)
from world_models.files import write_atomic_text
from world_models.seeds import write_seed_plan

CONFIG_FILENAME = "config.json"
# Settings that change where episodes are played, never what is played: a run started
# on this machine's pool may resume on a Ray cluster and back.
RELOCATABLE_KEYS = frozenset({"collect.backend", "collect.ray_address"})


def init_run(run_dir: str | os.PathLike, config: Config, fresh: bool = False) -> Config:
    """Create ``run_dir`` with ``config``, or check it matches the config already there.

    A run directory made under another config is refused unless ``fresh``, in which case
    the saved config is replaced (the caller decides which outputs to discard). Accepted
    without ``fresh``: more curriculum rounds (every round's seeds and step targets
    depend on its own index only, so a finished run grows by rounds without touching
    what earlier rounds wrote) and another pool (``RELOCATABLE_KEYS``).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / CONFIG_FILENAME
    if path.exists() and not fresh:
        saved = load_config(path)
        diff = config_diff(saved, config)
        grows = config.pipeline.rounds > saved.pipeline.rounds
        accepted = RELOCATABLE_KEYS | ({"pipeline.rounds"} if grows else set())
        if set(diff) - accepted:
            raise ConfigError(
                f"{run_dir} was made under another config "
                f"(differs in: {', '.join(diff)}); "
                "use the same settings, another --run, or --fresh to start over"
            )
        if not diff:
            return saved
    write_atomic_text(path, config.to_json())
    write_seed_plan(run_dir, config)
    return config


def load_run_config(
    run_dir: str | os.PathLike, overrides: typing.Iterable[str] = ()
) -> Config:
    """The config saved in ``run_dir``; overrides that would change it are refused."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(
            f"run directory {run_dir} does not exist; run collect_data.py "
            "or run_pipeline.py with --run first"
        )
    saved = load_config(run_dir / CONFIG_FILENAME)
    overrides = list(overrides)
    if overrides:
        wanted = apply_overrides(saved, overrides)
        diff = config_diff(saved, wanted)
        if diff:
            raise ConfigError(
                f"{run_dir} was made under another config (overrides change: "
                f"{', '.join(diff)}); use run_pipeline.py --fresh to start over"
            )
    return saved
