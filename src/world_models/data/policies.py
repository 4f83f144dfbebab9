"""Data-collection policies: seeded objects mapping an observation to an action; the
registry and the random policies (CarRacing's heuristic drivers are in ``drivers``,
LunarLander's in ``lander``).

A policy is reset with the episode's seed and is then deterministic. Factories are
module-level functions ``factory(env_id, **kwargs) -> Policy`` so worker processes can
receive them by reference (pickle) and import the module that defines them.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from world_models.envs import get_spec, make_env


class Policy(Protocol):
    def reset(self, seed: int) -> None: ...

    def act(self, frame: np.ndarray, raw_obs: np.ndarray) -> np.ndarray | int: ...


PolicyFactory = Callable[..., Policy]
_FACTORIES: dict[str, PolicyFactory] = {}


def register_policy(name: str, factory: PolicyFactory) -> None:
    """Make ``factory(env_id, **kwargs)`` available as ``make_policy(name, ...)``."""
    _FACTORIES[name] = factory


DRIVER_NAMES = ("recovery", "aggressive", "reckless", "understeer", "overspeed")
# Policies defined in other modules, imported on first use: the model policies import
# JAX (plain collection never pays for it), and the drivers register themselves.
_POLICY_MODULES = {
    "agent": "world_models.agent",
    "on_policy": "world_models.agent",
    **dict.fromkeys(DRIVER_NAMES, "world_models.data.drivers"),
    "lander": "world_models.data.lander",
    "pong_tracker": "world_models.data.atari",
    "breakout_tracker": "world_models.data.atari",
    "ppo_frames": "world_models.rl.ppo_frames",
    "q_agent": "world_models.rl.q_agent",
}


def policy_names() -> list[str]:
    """Every policy ``make_policy`` knows, registered or importable on demand."""
    return sorted(set(_FACTORIES) | set(_POLICY_MODULES))


def get_factory(name: str) -> PolicyFactory:
    if name not in _FACTORIES and name in _POLICY_MODULES:
        importlib.import_module(_POLICY_MODULES[name])
    try:
        return _FACTORIES[name]
    except KeyError:
        raise ValueError(
            f"unknown policy {name!r}; known: {', '.join(policy_names())}"
        ) from None


def make_policy(name: str, env_id: str, **kwargs: Any) -> Policy:
    return get_factory(name)(env_id, **kwargs)


@functools.cache
def env_action_bounds(env_id: str) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) float32 bounds of a continuous env's action space."""
    env = make_env(env_id)
    try:
        space = env.action_space
        return space.low.astype(np.float32), space.high.astype(np.float32)
    finally:
        env.close()


# --------------------------------------------------------------------------- brownian


class BrownianPolicy:
    """a_{t+1} = clip(a_t + drift·dt + sqrt(dt)·N(0, I)) inside the action bounds.

    ``drift`` biases the walk; for CarRacing the default pushes gas up and brake down so
    the car actually moves (an unbiased walk spends half its time braking and stalls).
    """

    def __init__(self, low: np.ndarray, high: np.ndarray, dt: float, drift: np.ndarray):
        self.low, self.high, self.dt = low, high, dt
        self.drift = np.asarray(drift, np.float32)
        self.reset(0)

    def reset(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.action = np.clip(np.zeros_like(self.low), self.low, self.high)

    def act(self, frame: np.ndarray, raw_obs: np.ndarray) -> np.ndarray:
        step = self.drift * self.dt + np.sqrt(self.dt) * self.rng.standard_normal(
            self.low.shape
        )
        self.action = np.clip(self.action + step, self.low, self.high).astype(
            np.float32
        )
        return self.action.copy()


class StickyRandomPolicy:
    """Uniform random discrete action, repeating the previous one with probability p."""

    def __init__(self, num_actions: int, repeat_prob: float):
        self.num_actions, self.repeat_prob = num_actions, repeat_prob
        self.reset(0)

    def reset(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.action: int | None = None

    def act(self, frame: np.ndarray, raw_obs: np.ndarray) -> int:
        if self.action is None or self.rng.random() >= self.repeat_prob:
            self.action = int(self.rng.integers(self.num_actions))
        return self.action


class EpsilonDriver:
    """A hand-written driver for a discrete env: ``follow`` reads the raw observation;
    with probability ``epsilon`` a step is a uniform random action instead, so the
    data holds the driver's mistakes and what comes after them."""

    num_actions: int

    def __init__(self, epsilon: float):
        if not 0 <= epsilon <= 1:
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
        self.epsilon = epsilon
        self.reset(0)

    def reset(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def act(self, frame: np.ndarray, raw_obs: np.ndarray) -> int:
        if self.epsilon and self.rng.random() < self.epsilon:
            return int(self.rng.integers(self.num_actions))
        return self.follow(np.asarray(raw_obs))

    def follow(self, observation: np.ndarray) -> int:
        raise NotImplementedError


def make_brownian(
    env_id: str,
    dt: float = 0.1,
    repeat_prob: float = 0.8,
    drift: tuple[float, ...] | None = None,
) -> Policy:
    spec = get_spec(env_id)
    if spec.discrete:
        return StickyRandomPolicy(spec.action_size, repeat_prob)
    low, high = env_action_bounds(env_id)
    if drift is None:
        drift = spec.brownian_drift or (0.0,) * len(low)
    return BrownianPolicy(low, high, dt, np.asarray(drift, np.float32))


register_policy("brownian", make_brownian)
