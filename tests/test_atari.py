"""Atari worlds: crops that keep the playfield, drivers that play, real episode ends."""

import dataclasses
import runpy
from pathlib import Path

import jax
import numpy as np
import pytest

from world_models.agent import Agent
from world_models.config import make_config
from world_models.data.atari import landing_column
from world_models.data.collection import collect
from world_models.data.episodes import list_episodes, load_episode
from world_models.data.play import play_episode
from world_models.data.policies import make_policy
from world_models.dream.rollout import make_dream
from world_models.envs import (
    FRAME_SIZE,
    ServeWrapper,
    get_spec,
    make_env,
    preprocess_frame,
)
from world_models.models.controller import controller_to_flat, make_controller
from world_models.models.mdnrnn import rnn_from_config
from world_models.models.vae import ConvVAE

ROOT = Path(__file__).resolve().parents[1]
ATARI = {"ALE/Pong-v5": "pong_tracker", "ALE/Breakout-v5": "breakout_tracker"}


@pytest.mark.parametrize("env_id", sorted(ATARI))
def test_a_marked_pixel_lands_where_the_crop_and_resize_put_it(env_id):
    spec = get_spec(env_id)
    top, bottom = spec.crop_rows
    frame = np.zeros((210, 160, 3), np.uint8)
    row, col = top + 100, 60
    frame[row:row + 4, col:col + 4] = 255  # a 4x4 block, about 1.5 frame pixels
    small = preprocess_frame(frame, spec).sum(axis=-1)
    found = np.unravel_index(small.argmax(), small.shape)
    scale = (FRAME_SIZE / (bottom - top), FRAME_SIZE / 160)
    expected = ((row + 2 - top) * scale[0], (col + 2) * scale[1])
    assert abs(found[0] - expected[0]) <= 1 and abs(found[1] - expected[1]) <= 1
    outside = np.zeros_like(frame)
    outside[:top] = 255  # the score rows
    outside[bottom:] = 255
    assert preprocess_frame(outside, spec).max() == 0


def test_pongs_ball_survives_the_resize():
    spec = get_spec("ALE/Pong-v5")
    env = make_env("ALE/Pong-v5")
    observation, _ = env.reset(seed=0)
    for _ in range(60):  # until the served ball is in the field
        observation, *_ = env.step(0)
    env.close()
    top, bottom = spec.crop_rows
    rows, cols = np.nonzero((observation[top:bottom] == (236, 236, 236)).all(-1))
    assert rows.size > 0, "no ball in the field after 60 steps"
    at = (int(rows.mean() * FRAME_SIZE / (bottom - top)), int(cols.mean() * 0.4))
    background, ball = np.array([144, 72, 17]), np.array([236, 236, 236])
    contrast = np.abs(ball - background).sum()

    def ball_contrast(spec):
        small = preprocess_frame(observation, spec).astype(int)
        around = small[max(at[0] - 1, 0):at[0] + 2, max(at[1] - 1, 0):at[1] + 2]
        return np.abs(around - background).sum(-1).max() / contrast

    # grown before the resize, the ball keeps most of its contrast on a frame pixel;
    # a plain resize averages it into the field
    assert ball_contrast(spec) > 0.8
    assert ball_contrast(dataclasses.replace(spec, grow_objects=1)) < 0.7


@pytest.mark.parametrize("env_id", sorted(ATARI))
def test_the_drivers_outplay_sticky_random(env_id):
    def total(policy):
        return sum(
            play_episode(env_id, policy, seed=seed, max_steps=600)["rewards"].sum()
            for seed in (0, 1)
        )

    driver = make_policy(ATARI[env_id], env_id, epsilon=0.0)
    assert total(driver) > total(make_policy("brownian", env_id)) + 4
    with pytest.raises(ValueError, match="does not play"):
        make_policy(ATARI[env_id], "CarRacing-v3")


def test_the_breakout_driver_reads_bounces_off_the_walls():
    assert landing_column((100, 50), (110, 60)) == pytest.approx(139)  # no wall
    assert landing_column((100, 140), (110, 150)) == pytest.approx(2 * 152 - 229)
    assert landing_column((110, 60), (100, 70)) == 70  # rising: follow it


@pytest.mark.parametrize("env_id", sorted(ATARI))
def test_a_lost_game_ends_as_termination_not_truncation(env_id):
    episode = play_episode(env_id, "brownian", seed=3, max_steps=5000)
    steps = len(episode["rewards"])
    assert steps < 5000
    assert episode["terminated"].tolist() == [False] * (steps - 1) + [True]
    assert not episode["truncated"].any()


@pytest.mark.parametrize("env_id", sorted(ATARI))
def test_worker_processes_collect_with_the_driver(tmp_path, env_id):
    manifest = collect(tmp_path, env_id, ATARI[env_id], episodes=2, seed=5,
                       workers=2, max_steps=40, progress=False)
    assert manifest["total_episodes"] == 2
    alone = play_episode(env_id, ATARI[env_id], seed=5, max_steps=40)
    first = load_episode(list_episodes(tmp_path)[0])
    np.testing.assert_array_equal(first["actions"], alone["actions"])
    np.testing.assert_array_equal(first["obs"], alone["obs"])


@pytest.mark.parametrize("env_id", sorted(ATARI))
def test_discrete_actions_run_through_m_the_dream_and_the_agent(env_id):
    spec = get_spec(env_id)
    config = make_config("smoke", env_id)
    rnn = rnn_from_config(config, key=jax.random.key(1))
    controller = jax.tree.map(
        lambda x: 5 * x, make_controller(config, key=jax.random.key(2))
    )
    z = config.vae.z_dim
    starts = (np.zeros((3, z), np.float32), np.zeros((3, z), np.float32))
    dream = make_dream(rnn, starts, controller, spec, horizon=6, temperature=1.0)
    size = controller_to_flat(controller).size
    population = jax.random.normal(jax.random.key(3), (4, size))
    returns, lengths = dream.population_returns(population, jax.random.key(4), 2)
    again, _ = dream.population_returns(population, jax.random.key(4), 2)
    assert returns.shape == (4, 2) and np.isfinite(returns).all()
    np.testing.assert_array_equal(returns, again)
    assert rnn.cell.input_size == z + spec.action_size  # one-hot actions into M

    agent = Agent(ConvVAE(z, key=jax.random.key(0)), rnn, controller, spec)
    episode = play_episode(env_id, agent, seed=0, max_steps=10)
    actions = episode["actions"]
    assert actions.dtype == np.int32 and actions.shape == (10,)
    assert set(actions.tolist()) <= set(range(spec.action_size))


def _object_masks() -> dict:
    return runpy.run_path(str(ROOT / "scripts" / "object_in_v.py"))


def test_object_in_v_finds_breakouts_ball_and_paddle_where_they_are():
    masks = _object_masks()
    spec = get_spec("ALE/Breakout-v5")
    env = make_env("ALE/Breakout-v5")
    observation, _ = env.reset(seed=0)
    observation, *_ = env.step(1)  # FIRE serves the ball
    for _ in range(12):  # until it falls below the bricks
        observation, *_ = env.step(0)
    env.close()
    top, bottom = spec.crop_rows
    field = observation[top:bottom, 8:152].astype(int)  # inside the side walls
    lit = np.argwhere(field.max(-1) > 60)
    ball = lit[(lit[:, 0] > 93 - top) & (lit[:, 0] < 189 - top)]  # below the bricks
    paddle = lit[lit[:, 0] >= 189 - top]
    assert len(ball) and len(paddle), "no ball in the field after 12 steps"
    scale = np.array([FRAME_SIZE / (bottom - top), FRAME_SIZE / 160])
    small = preprocess_frame(observation, spec)[None]
    for mask, truth in (("breakout_ball_mask", ball), ("breakout_paddle_mask", paddle)):
        found = np.argwhere(masks[mask](small)[0])
        assert len(found) >= 2, mask
        expected = (truth.mean(0) + [0, 8]) * scale  # back in full-frame columns
        np.testing.assert_allclose(found.mean(0), expected, atol=1.5, err_msg=mask)
    assert not masks["breakout_ball_mask"](np.zeros_like(small)).any()


class _Noop:
    def reset(self, seed):
        pass

    def act(self, frame, observation):
        return 0


def test_breakout_serves_the_ball_so_a_policy_that_never_fires_still_plays():
    episode = play_episode("ALE/Breakout-v5", _Noop(), seed=0, max_steps=3000)
    steps = len(episode["rewards"])
    assert steps < 3000 and episode["terminated"][-1]  # five lives lost, not stalled
    assert not episode["truncated"].any()
    assert _object_masks()["breakout_ball_mask"](episode["obs"][1:]).any()  # a ball
    plain = get_spec("ALE/Pong-v5")
    assert plain.serve_action is None and not isinstance(
        make_env(plain.env_id), ServeWrapper
    )
