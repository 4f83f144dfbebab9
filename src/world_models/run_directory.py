"""A run directory: its ``config.json``, written once and read back by every stage,
and its ``environment.json``, the env's protocol (``envs.env_protocol``).

A run made under one config refuses another (``--fresh`` starts over); the changes
accepted in place are more curriculum rounds and where the real episodes are played
(``RELOCATABLE_KEYS``: the same seeds give the same episodes on either pool). A run
whose env now plays by another protocol (this library's env settings or the env's
registration changed since it began) is refused too.
"""

from __future__ import annotations

import json
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
from world_models.envs import env_protocol, env_versions
from world_models.files import write_atomic_text
from world_models.seeds import write_seed_plan

CONFIG_FILENAME = "config.json"
ENVIRONMENT_FILENAME = "environment.json"
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
        _check_environment(run_dir, saved.env_id)
        if not diff:
            return saved
    else:
        _record_environment(run_dir, config.env_id)
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


def _record_environment(run_dir: Path, env_id: str) -> None:
    """``environment.json``: the env's protocol, and the versions that played it
    (recorded, not compared: another gymnasium playing the same protocol may resume)."""
    record = dict(env_protocol(env_id), versions=env_versions(env_id))
    write_atomic_text(run_dir / ENVIRONMENT_FILENAME, json.dumps(record, indent=2))


def _check_environment(run_dir: Path, env_id: str) -> None:
    """Refuse a run whose env plays by another protocol than when it began; record
    the protocol of a run made before runs recorded it."""
    path = run_dir / ENVIRONMENT_FILENAME
    if not path.exists():
        _record_environment(run_dir, env_id)
        return
    saved = json.loads(path.read_text())
    saved.pop("versions", None)
    now = json.loads(json.dumps(env_protocol(env_id)))
    changed = sorted(k for k in saved.keys() | now.keys() if saved.get(k) != now.get(k))
    if changed:
        raise ConfigError(
            f"{run_dir} was made under another protocol of {env_id} (differs in: "
            f"{', '.join(changed)}; see {path}); use another --run, or --fresh to "
            "start over"
        )
