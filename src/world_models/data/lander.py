"""LunarLander's collection driver: a hover-and-descend controller on the state vector.

The frames V sees come from ``render()``; the driver reads the 8-number state the env
returns as its observation (x, y, vx, vy, angle, angular velocity, two leg contacts), so
it flies well without any model. Two proportional-derivative loops: lean toward the pad
while far from it, and hold a height that shrinks with the horizontal offset, so the
lander comes in over the pad and sets down. With probability ``epsilon`` a step takes a
uniform random action instead: crashes and recoveries M has to learn too.
"""

from __future__ import annotations

import numpy as np

from world_models.data.policies import EpsilonDriver, Policy, register_policy
from world_models.envs import get_spec

NOOP, LEFT_ENGINE, MAIN_ENGINE, RIGHT_ENGINE = range(4)
MAX_LEAN = 0.4  # radians: more tips the lander over
DEAD_BAND = 0.05  # commands smaller than this fire nothing


class LanderDriver(EpsilonDriver):
    num_actions = 4

    def follow(self, observation: np.ndarray) -> int:
        x, y, vx, vy, angle, spin, left_leg, right_leg = (float(v) for v in observation)
        lean = np.clip(0.5 * x + vx, -MAX_LEAN, MAX_LEAN)
        turn = 0.5 * (lean - angle) - spin
        lift = 0.5 * (0.55 * abs(x) - y) - 0.5 * vy
        if left_leg or right_leg:  # touching down: only soften the fall
            turn, lift = 0.0, -0.5 * vy
        if lift > abs(turn) and lift > DEAD_BAND:
            return MAIN_ENGINE
        if turn < -DEAD_BAND:
            return RIGHT_ENGINE
        if turn > DEAD_BAND:
            return LEFT_ENGINE
        return NOOP


def make_lander(env_id: str, epsilon: float = 0.1) -> Policy:
    if "lander" not in get_spec(env_id).heuristic_policies:
        raise ValueError(f"policy 'lander' flies LunarLander-v3 only, not {env_id!r}")
    return LanderDriver(epsilon)


register_policy("lander", make_lander)
