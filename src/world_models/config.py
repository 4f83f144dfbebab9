"""Run configuration: one frozen dataclass per stage, built from a preset, JSON I/O.

A run directory holds a single resolved ``config.json``. Every stage reads it back, so no
stage re-declares another stage's constant. Overrides use dotted paths
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

from world_models.presets import PRESETS, preset_sections

ENSEMBLE_MODES = ("sample", "pessimistic")


class ConfigError(ValueError):
    """A configuration value or file is invalid."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclass(frozen=True)
class CollectConfig:
    # understeer: without a driver that misses bends, M learns that the road bends to
    # stay under a steering car, and the dream pays controllers that drive off
    # (docs/transfer.md, fourth pass).
    policies: tuple[str, ...] = ("brownian", "recovery", "aggressive", "understeer")
    episodes_per_policy: int = 8
    max_steps: int = 1000  # 0 means the environment's own step limit
    workers: int = 2
    seed: int = 0

    def __post_init__(self):
        _require(
            len(self.policies) > 0, "collect.policies must name at least one policy"
        )
        _require(
            self.episodes_per_policy > 0, "collect.episodes_per_policy must be > 0"
        )
        _require(self.max_steps >= 0, "collect.max_steps must be >= 0")
        _require(self.workers > 0, "collect.workers must be > 0")


@dataclass(frozen=True)
class VAEConfig:
    z_dim: int = 32
    batch_size: int = 100
    learning_rate: float = 1e-4
    steps: int = 2000
    kl_tolerance: float = 0.5  # free-bits floor: KL >= kl_tolerance * z_dim
    beta: float = 1.0
    beta_anneal_steps: int = 0  # linear ramp of beta from 0 over this many steps
    val_fraction: float = 0.1
    eval_every: int = 200
    checkpoint_every: int = 500
    seed: int = 0

    def __post_init__(self):
        _require(self.z_dim > 0, "vae.z_dim must be > 0")
        _require(self.batch_size > 0, "vae.batch_size must be > 0")
        _require(self.learning_rate > 0, "vae.learning_rate must be > 0")
        _require(self.steps >= 0, "vae.steps must be >= 0")
        _require(self.beta >= 0, "vae.beta must be >= 0")
        _require(0 <= self.val_fraction < 1, "vae.val_fraction must be in [0, 1)")
        _require(self.eval_every > 0, "vae.eval_every must be > 0")
        _require(self.checkpoint_every > 0, "vae.checkpoint_every must be > 0")


@dataclass(frozen=True)
class RNNConfig:
    hidden_size: int = 256
    num_mixtures: int = 5
    batch_size: int = 100
    seq_len: int = 999
    learning_rate: float = 1e-3
    grad_clip: float = 1.0
    steps: int = 4000
    reward_weight: float = 1.0
    optimism_weight: float = 5.0  # weight of over-predicted reward in the reward loss
    # The reward head learns the mean reward of the next reward_window steps (1: the
    # step's own): see data.forward_mean_rewards
    reward_window: int = 10
    done_weight: float = 1.0
    # Weight of terminated steps in the termination BCE. Terminations are rare (at most
    # one per episode: CarRacing has hundreds of negatives per positive), so unweighted
    # M rarely pushes sigmoid(done_logit) past the dream's 0.5 threshold. A weight w
    # multiplies the predicted odds by w, so the dream ends once the true per-step
    # termination probability exceeds ~1/(1+w): ~9 % at 10. Larger weights (50+) end
    # dreams early wherever M is merely unsure.
    done_pos_weight: float = 10.0
    dropout: float = 0.0  # dropout on the h M's head reads, one mask per window
    # Prediction heads on the one LSTM (an ensemble sharing h, which C reads), each
    # trained on its own bootstrap weighting of the windows.
    heads: int = 1
    # Fraction of training windows whose tail, from a random step on, M reads its own
    # samples (at temperature open_loop_temperature) instead of the data's z, while
    # still scored on the data: M learns to follow reality from its own dreams' inputs.
    open_loop_fraction: float = 0.0
    open_loop_temperature: float = 0.5
    log_std_min: float = -7.0
    log_std_max: float = 3.0
    val_fraction: float = 0.1
    eval_every: int = 200
    checkpoint_every: int = 500
    seed: int = 0

    def __post_init__(self):
        _require(self.hidden_size > 0, "rnn.hidden_size must be > 0")
        _require(self.num_mixtures > 0, "rnn.num_mixtures must be > 0")
        _require(self.batch_size > 0, "rnn.batch_size must be > 0")
        _require(self.seq_len > 0, "rnn.seq_len must be > 0")
        _require(self.learning_rate > 0, "rnn.learning_rate must be > 0")
        _require(self.steps >= 0, "rnn.steps must be >= 0")
        _require(self.optimism_weight > 0, "rnn.optimism_weight must be > 0")
        _require(self.reward_window > 0, "rnn.reward_window must be > 0")
        _require(self.done_pos_weight > 0, "rnn.done_pos_weight must be > 0")
        _require(0 <= self.dropout < 1, "rnn.dropout must be in [0, 1)")
        _require(self.heads > 0, "rnn.heads must be > 0")
        _require(0 <= self.open_loop_fraction <= 1, "rnn.open_loop_fraction in [0, 1]")
        _require(
            self.open_loop_temperature > 0, "rnn.open_loop_temperature must be > 0"
        )
        _require(self.log_std_min < self.log_std_max, "rnn.log_std_min < log_std_max")
        _require(0 <= self.val_fraction < 1, "rnn.val_fraction must be in [0, 1)")
        _require(self.eval_every > 0, "rnn.eval_every must be > 0")
        _require(self.checkpoint_every > 0, "rnn.checkpoint_every must be > 0")


@dataclass(frozen=True)
class DreamConfig:
    controller: str = "linear"  # "linear" or "mlp"
    mlp_hidden: int = 32
    population: int = 64
    rollouts: int = 16
    sigma0: float = 0.1
    generations: int = 200
    # Measured on CarRacing (docs/transfer.md): at 1.0 the dream brings the road back
    # under a car that left it, and controllers that drive off transfer; 0.5 does not.
    temperature: float = 0.5
    dropout: float = 0.0  # per-rollout dropout mask on the h M's head reads
    # With rnn.heads > 1: "sample" plays each rollout in one head drawn at random;
    # "pessimistic" takes that head's next z, the lowest reward and highest done logit.
    ensemble: str = "sample"
    max_steps: int = 1000  # dream horizon; 0 means the environment's step limit
    # 0: dreams start at episode starts (h = 0); k > 0: also at every k-th real frame,
    # from M's state after reading the episode up to it (see dream.py)
    branch_every: int = 0
    real_eval_every: int = 25
    real_eval_episodes: int = 4
    # At the end of a search the best `finalists` real checks are played again, all on
    # one fresh block of `final_check_episodes`, and the best there is kept: the best of
    # many small checks overstates its controller (docs/transfer.md). 0 keeps the best check.
    finalists: int = 0
    final_check_episodes: int = 16
    chunk_size: int = 0  # candidates x rollouts per vmapped chunk; 0 = no chunking
    seed: int = 0

    def __post_init__(self):
        _require(self.controller in ("linear", "mlp"), "dream.controller: linear | mlp")
        _require(self.mlp_hidden > 0, "dream.mlp_hidden must be > 0")
        _require(self.population >= 4, "dream.population must be >= 4")
        _require(self.rollouts > 0, "dream.rollouts must be > 0")
        _require(self.sigma0 > 0, "dream.sigma0 must be > 0")
        _require(self.generations >= 0, "dream.generations must be >= 0")
        _require(self.temperature > 0, "dream.temperature must be > 0")
        _require(0 <= self.dropout < 1, "dream.dropout must be in [0, 1)")
        _require(
            self.ensemble in ENSEMBLE_MODES,
            f"dream.ensemble must be one of {ENSEMBLE_MODES}",
        )
        _require(self.max_steps >= 0, "dream.max_steps must be >= 0")
        _require(self.branch_every >= 0, "dream.branch_every must be >= 0")
        _require(self.real_eval_every > 0, "dream.real_eval_every must be > 0")
        _require(self.real_eval_episodes > 0, "dream.real_eval_episodes must be > 0")
        _require(self.finalists >= 0, "dream.finalists must be >= 0")
        _require(
            self.final_check_episodes > 0, "dream.final_check_episodes must be > 0"
        )
        _require(self.chunk_size >= 0, "dream.chunk_size must be >= 0")


@dataclass(frozen=True)
class EvalConfig:
    episodes: int = 100
    seed: int = 10_000  # evaluation seeds never overlap the collection seeds
    workers: int = 2
    max_steps: int = 0  # 0 means the environment's step limit
    video: bool = True  # the pipeline records the agent's first test episode
    # Brownian and zero-controller baselines play the first of the same test seeds;
    # 0 means all eval.episodes of them.
    baseline_episodes: int = 0

    def __post_init__(self):
        _require(self.episodes > 0, "eval.episodes must be > 0")
        _require(
            0 <= self.baseline_episodes <= self.episodes,
            "eval.baseline_episodes must be in [0, eval.episodes]",
        )
        _require(self.workers > 0, "eval.workers must be > 0")
        _require(self.max_steps >= 0, "eval.max_steps must be >= 0")


@dataclass(frozen=True)
class PipelineConfig:
    rounds: int = 1
    on_policy_episodes: int = 8
    on_policy_noise: float = 0.1
    heuristic_policies_later_rounds: tuple[str, ...] = ("recovery",)
    retrain_vae: bool = False
    retrain_rnn: bool = False  # a fresh M each round on all data, not the last one's
    warm_start_es: bool = True
    # Later rounds train only M's heads: the h a kept controller reads keeps its meaning.
    freeze_lstm: bool = False
    # Round 0 trains this many M's (seeds rnn.seed + c), searches a controller in each
    # dream and keeps the M whose controller scores best in reality: M's seed has moved
    # the test score by ~450 points (pipeline/candidates.py, docs/transfer.md).
    rnn_candidates: int = 1

    def __post_init__(self):
        _require(self.rounds > 0, "pipeline.rounds must be > 0")
        # A continued search tells a new M by its checkpoint step; a fresh M of the
        # same length would pass for the old one. A new search each round re-scores.
        _require(
            not (self.retrain_rnn and self.warm_start_es),
            "pipeline.retrain_rnn needs pipeline.warm_start_es=false",
        )
        _require(
            not (self.retrain_rnn and self.freeze_lstm),
            "pipeline.freeze_lstm keeps round 0's LSTM; it cannot retrain_rnn",
        )
        _require(
            self.on_policy_episodes >= 0, "pipeline.on_policy_episodes must be >= 0"
        )
        _require(self.on_policy_noise >= 0, "pipeline.on_policy_noise must be >= 0")
        _require(self.rnn_candidates > 0, "pipeline.rnn_candidates must be > 0")


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

        _require(
            self.preset is None or self.preset in PRESETS,
            f"unknown preset {self.preset!r}; known: {PRESETS}",
        )
        _require(
            self.pipeline.rnn_candidates == 1 or self.dream.finalists > 0,
            "pipeline.rnn_candidates > 1 compares the candidates' final checks: "
            "set dream.finalists > 0",
        )
        try:
            check_seed_plan(self)
        except ValueError as error:
            raise ConfigError(str(error)) from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def make_config(
    preset: str = "quick",
    env_id: str = "CarRacing-v3",
    overrides: typing.Iterable[str] = (),
) -> Config:
    """Build the config of ``preset`` for ``env_id`` with dotted ``key=value`` overrides."""
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
    config = Config(
        env_id=env_id,
        preset=preset,
        **{name: _section_type(name)(**values) for name, values in sections.items()},
    )
    return apply_overrides(config, overrides)


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
            return tuple(part.strip() for part in text.split(",") if part.strip())
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
