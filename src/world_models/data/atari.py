"""Atari collection drivers: Pong and Breakout paddles that follow the ball.

Both read the raw 210x160 RGB observation: the ball and the player's paddle have
colours of their own within the playfield (Pong's ball is the walls' white, Pong's
paddle green; Breakout's ball and paddle share the bricks' red, so the ball is looked
for only between the lowest bricks and the paddle). The paddle moves toward the ball
when it is more than a dead band away; with probability ``epsilon`` a step is random
(``EpsilonDriver``), so the data holds misses and the frames after them.
"""

from __future__ import annotations

import numpy as np

from world_models.data.policies import EpsilonDriver, Policy, register_policy
from world_models.envs import get_spec

DEAD_BAND = 3  # pixels of the raw frame within which the paddle holds still

# Pong: rows of the playfield (between the walls: the env's crop); the player's
# paddle's columns
PONG_FIELD = get_spec("ALE/Pong-v5").crop_rows
PONG_PADDLE_COLUMNS = (140, 144)
PONG_BALL = (236, 236, 236)
PONG_PADDLE = (92, 186, 92)
PONG_NOOP, PONG_UP, PONG_DOWN = 0, 2, 3  # RIGHT moves the paddle up, LEFT down

# Breakout: the ball is looked for below the lowest bricks and above the paddle
BREAKOUT_BALL_ROWS = (93, 189)
BREAKOUT_PADDLE_ROWS = (189, 194)
BREAKOUT_RED = (200, 72, 72)
BREAKOUT_WALLS = (8, 152)  # the columns between the side walls
LOST_BALL_STEPS = 20  # unseen this long, the ball is lost: serve a new one
BREAKOUT_NOOP, BREAKOUT_FIRE, BREAKOUT_RIGHT, BREAKOUT_LEFT = range(4)


def colour_mask(pixels: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    return (pixels == np.asarray(colour, dtype=pixels.dtype)).all(axis=-1)


def mean_position(mask: np.ndarray, axis: int) -> float | None:
    """Mean row (axis 0) or column (axis 1) of the mask's pixels; None if empty."""
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return None
    return float((rows if axis == 0 else cols).mean())


def toward(position: float, target: float, less: int, more: int, hold: int) -> int:
    """The action that moves ``position`` toward ``target``: ``less`` lowers it."""
    if position > target + DEAD_BAND:
        return less
    if position < target - DEAD_BAND:
        return more
    return hold


class PongDriver(EpsilonDriver):
    num_actions = 6

    def follow(self, observation: np.ndarray) -> int:
        top, bottom = PONG_FIELD
        field = observation[top:bottom]
        left, right = PONG_PADDLE_COLUMNS
        paddle = mean_position(colour_mask(field[:, left:right], PONG_PADDLE), 0)
        ball = mean_position(colour_mask(field, PONG_BALL), 0)
        if paddle is None:
            return PONG_NOOP
        target = (bottom - top) / 2 if ball is None else ball
        return toward(paddle, target, PONG_UP, PONG_DOWN, PONG_NOOP)


class BreakoutDriver(EpsilonDriver):
    """Moves the paddle to where the falling ball will meet the paddle's row: the
    ball's last two sightings give its velocity, the side walls reflect it."""

    num_actions = 4

    def reset(self, seed: int) -> None:
        super().reset(seed)
        self.last_ball: tuple[float, float] | None = None
        self.target: float | None = None
        self.unseen = 0  # steps since the ball was last seen below the bricks

    def follow(self, observation: np.ndarray) -> int:
        top, bottom = BREAKOUT_BALL_ROWS
        ball_mask = colour_mask(observation[top:bottom], BREAKOUT_RED)
        paddle = mean_position(
            colour_mask(observation[slice(*BREAKOUT_PADDLE_ROWS)], BREAKOUT_RED), 1
        )
        ball = None
        if ball_mask.any():
            ball = (mean_position(ball_mask, 0) + top, mean_position(ball_mask, 1))
        if ball is not None and self.last_ball is not None:
            self.target = landing_column(self.last_ball, ball)
        self.last_ball = ball
        self.unseen = 0 if ball is not None else self.unseen + 1
        if self.unseen > LOST_BALL_STEPS:
            self.target = None
        if paddle is None or (ball is None and self.target is None):
            return BREAKOUT_FIRE  # launches a ball when none is in play
        target = self.target if self.target is not None else ball[1]
        return toward(paddle, target, BREAKOUT_LEFT, BREAKOUT_RIGHT, BREAKOUT_NOOP)


def landing_column(before: tuple[float, float], now: tuple[float, float]) -> float:
    """Column where a ball seen at ``before`` then ``now`` (row, column) crosses the
    paddle's row, bouncing off the side walls; its column now if it is rising."""
    rows, cols = now[0] - before[0], now[1] - before[1]
    if rows <= 0:
        return now[1]
    column = now[1] + cols * (BREAKOUT_PADDLE_ROWS[0] - now[0]) / rows
    left, right = BREAKOUT_WALLS
    width = right - left
    folded = (column - left) % (2 * width)  # the walls mirror the path
    return left + (folded if folded <= width else 2 * width - folded)


def _check_env(name: str, env_id: str) -> None:
    if name not in get_spec(env_id).heuristic_policies:
        raise ValueError(f"policy {name!r} does not play {env_id!r}")


def make_pong_tracker(env_id: str, epsilon: float = 0.1) -> Policy:
    _check_env("pong_tracker", env_id)
    return PongDriver(epsilon)


def make_breakout_tracker(env_id: str, epsilon: float = 0.1) -> Policy:
    _check_env("breakout_tracker", env_id)
    return BreakoutDriver(epsilon)


register_policy("pong_tracker", make_pong_tracker)
register_policy("breakout_tracker", make_breakout_tracker)
