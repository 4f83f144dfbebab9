"""Run configuration: a ``Config`` of one section per stage (``config_sections.py``),
built from a preset, with typed ``--set`` overrides and JSON I/O.

A run directory holds a single resolved ``config.json``. Every stage reads it back,
so no stage re-declares another stage's constant. Overrides use dotted paths
(``vae.batch_size=64``) and are type-checked against the field they replace.
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from world_models.config_sections import (
    CollectConfig,
    ConfigError,
    DreamConfig,
    EvalConfig,
    PipelineConfig,
    RNNConfig,
    VAEConfig,
    require,
)
from world_models.presets import PRESETS, preset_sections


@dataclass(frozen=True)
class Config:
    env_id: str = "CarRacing-v3"
    preset: str | None = (
        None  # the preset make_config started from; None: these defaults
    )
    collect: CollectConfig = field(default_factory=CollectConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    rnn: RNNConfig = field(default_factory=RNNConfig)
    dream: DreamConfig = field(default_factory=DreamConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)

    def __post_init__(self):
        from world_models.seeds import check_seed_plan

        require(
            self.preset is None or self.preset in PRESETS,
            f"unknown preset {self.preset!r}; known: {PRESETS}",
        )
        require(
            self.pipeline.candidates == 1 or self.dream.finalists > 0,
            "pipeline.rnn_candidates or search_candidates > 1 compares the "
            "candidates' final checks: set dream.finalists > 0",
        )
        self._check_env()
        try:
            check_seed_plan(self)
        except ValueError as error:
            raise ConfigError(str(error)) from None

    def _check_env(self) -> None:
        """Refuse, before any episode is played, a driver the env cannot collect with
        (a typo found by round 1's collection would cost a whole round 0) and a speed
        limit where there is no dashboard to read it from."""
        from world_models.envs import UnknownEnvError, get_spec

        try:
            spec = get_spec(self.env_id)
        except UnknownEnvError as error:
            raise ConfigError(str(error)) from None
        require(not self.dream.speed_limit or spec.action_squash == "car",
                f"dream.speed_limit reads CarRacing's dashboard; {self.env_id} has "
                "none")
        known = ("brownian",) + spec.heuristic_policies
        for key, names in (
            ("collect.policies", self.collect.policies),
            (
                "pipeline.heuristic_policies_later_rounds",
                self.pipeline.heuristic_policies_later_rounds,
            ),
        ):
            unknown = [name for name in names if name not in known]
            require(
                not unknown,
                f"{key}: {', '.join(map(repr, unknown))} cannot collect in "
                f"{self.env_id}; known: {', '.join(known)}",
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def make_config(
    preset: str = "quick",
    env_id: str = "CarRacing-v3",
    overrides: typing.Iterable[str] = (),
) -> Config:
    """The config of ``preset`` for ``env_id``: the env's own preset overrides, then
    the dotted ``key=value`` ``overrides`` (which win)."""
    from world_models.envs import get_spec

    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    spec = get_spec(env_id)
    sections = preset_sections(preset)
    # Heuristic drivers exist for some envs only. Of the drivers asked for, the ones
    # this env has; if it has none of them, its own (LunarLander's lander, none for
    # Atari: brownian alone).
    def drivers(requested: tuple[str, ...]) -> tuple[str, ...]:
        asked = tuple(p for p in requested if p != "brownian")
        kept = tuple(p for p in asked if p in spec.heuristic_policies)
        return kept if kept or not asked else spec.heuristic_policies

    requested = sections["collect"].get("policies", CollectConfig.policies)
    sections["collect"]["policies"] = (
        ("brownian",) if "brownian" in requested else ()
    ) + drivers(requested)
    sections["pipeline"]["heuristic_policies_later_rounds"] = drivers(
        PipelineConfig.heuristic_policies_later_rounds
    )
    if spec.action_squash != "car":  # a preset's speed limit reads the car's dashboard
        sections["dream"].pop("speed_limit", None)
    if spec.preset_max_steps and preset != "full":  # full keeps the env's protocol
        for name, default in (("collect", CollectConfig), ("eval", EvalConfig)):
            if not sections[name].get("max_steps", default.max_steps):
                sections[name]["max_steps"] = spec.preset_max_steps
    config = Config(
        env_id=env_id,
        preset=preset,
        **{name: _section_type(name)(**values) for name, values in sections.items()},
    )
    return apply_overrides(config, (*spec.preset_overrides, *overrides))


def _section_type(name: str) -> type:
    hints = typing.get_type_hints(Config)
    if name not in hints or not dataclasses.is_dataclass(hints[name]):
        raise ConfigError(f"unknown config section {name!r}")
    return hints[name]


def _parse_value(text: str, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    try:
        if hint is bool:
            lowered = text.lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(text)
            return lowered in ("true", "1", "yes")
        if hint in (int, float, str):
            return hint(text)
        if origin is tuple:
            item = typing.get_args(hint)[0]
            return tuple(item(part.strip()) for part in text.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"{key}: cannot read {text!r} as {hint}") from None
    raise ConfigError(f"{key}: unsupported field type {hint}")


def apply_overrides(config: Config, overrides: typing.Iterable[str]) -> Config:
    """Return ``config`` with each ``section.field=value`` (or ``env_id=...``) applied.

    All overrides are applied at once, so that fields checked together (e.g.
    pipeline.retrain_rnn and pipeline.warm_start_es) can be changed together.
    """
    top: dict[str, Any] = {}
    changes: dict[str, dict[str, Any]] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, text = item.split("=", 1)
        path = key.strip().split(".")
        if len(path) == 1:
            hints = typing.get_type_hints(Config)
            if path[0] not in ("env_id", "preset"):
                raise ConfigError(f"unknown config key {key!r}")
            top[path[0]] = _parse_value(text, hints[path[0]], key)
            continue
        if len(path) != 2:
            raise ConfigError(f"unknown config key {key!r}")
        section_name, field_name = path
        section = getattr(config, section_name, None)
        if section is None or not dataclasses.is_dataclass(section):
            raise ConfigError(f"unknown config section {section_name!r}")
        hints = typing.get_type_hints(type(section))
        if field_name not in hints:
            known = ", ".join(f.name for f in fields(section))
            raise ConfigError(f"unknown field {key!r}; {section_name} has: {known}")
        value = _parse_value(text, hints[field_name], key)
        changes.setdefault(section_name, {})[field_name] = value
    sections = {
        name: replace(getattr(config, name), **values)
        for name, values in changes.items()
    }
    return replace(config, **top, **sections) if top or sections else config


def config_from_dict(data: dict[str, Any]) -> Config:
    """Rebuild a Config from ``to_dict`` output, refusing unknown keys."""
    top_hints = typing.get_type_hints(Config)
    unknown = set(data) - set(top_hints)
    if unknown:
        raise ConfigError(f"unknown config keys: {sorted(unknown)}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        hint = top_hints[name]
        if dataclasses.is_dataclass(hint):
            section_hints = typing.get_type_hints(hint)
            bad = set(value) - set(section_hints)
            if bad:
                raise ConfigError(f"unknown keys in section {name!r}: {sorted(bad)}")
            kwargs[name] = hint(
                **{
                    key: tuple(v)
                    if typing.get_origin(section_hints[key]) is tuple
                    else v
                    for key, v in value.items()
                }
            )
        else:
            kwargs[name] = value
    return Config(**kwargs)


def load_config(path: str | os.PathLike) -> Config:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no config file at {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path} is not valid JSON: {error}") from None
    return config_from_dict(data)


def config_diff(a: Config, b: Config) -> list[str]:
    """Dotted keys whose values differ between two configs."""
    flat_a, flat_b = _flatten(a.to_dict()), _flatten(b.to_dict())
    return sorted(
        k for k in flat_a.keys() | flat_b.keys() if flat_a.get(k) != flat_b.get(k)
    )


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return flat
