"""A CarRacing policy that takes 50 ms per step (a 1000-step episode lasts 50 s), for
tests that need a worker busy in the middle of an episode. Importable by spawned
workers: they get the parent's sys.path."""

import time

import numpy as np


class SlowPolicy:
    def reset(self, seed: int) -> None:
        pass

    def act(self, frame: np.ndarray, raw_obs: np.ndarray) -> np.ndarray:
        time.sleep(0.05)
        return np.array([0.0, 0.0, 0.0], np.float32)


def make_slow(env_id: str) -> SlowPolicy:
    return SlowPolicy()


def make_cpu_only(env_id: str) -> SlowPolicy:
    """A policy that refuses to play unless its process keeps JAX on the CPU."""
    import jax

    if jax.config.jax_platforms != "cpu":
        raise RuntimeError(f"worker JAX platforms: {jax.config.jax_platforms!r}")
    return SlowPolicy()
