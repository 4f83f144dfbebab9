"""Model-free PPO from real frames: the CNN acts on real frames, training in real
LunarLander envs resumes to the parameters of an uninterrupted run, and the saved policy
plays through the library's evaluation."""

import dataclasses

import equinox as eqx
import jax
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from world_models.checkpoint import CheckpointError
from world_models.data.play import play_episode
from world_models.data.policies import make_policy
from world_models.envs import get_spec, make_env, preprocess_frame, raw_frame
from world_models.logs import read_metrics
from world_models.models.controller import head_bounds
from world_models.rl.frame_envs import FrameEnvs
from world_models.rl.frame_training import (
    POLICY_DIRNAME,
    checkpointer_for,
    initial_state,
    train,
)
from world_models.rl.ppo_core import sample_action
from world_models.rl.ppo_frames import (
    FramePPOSettings,
    greedy_action,
    load_policy,
    new_network,
)
from world_models.seeds import real_learner_seeds

LANDER = "LunarLander-v3"
SETTINGS = FramePPOSettings(num_envs=2, num_steps=16, total_steps=64, epochs=2,
                            minibatches=2)


def _train(out, settings=SETTINGS):
    return train(LANDER, settings, out, checkpoint_every=1, show_progress=False,
                 tensorboard=False)


def _parameters(out):
    net, _ = load_policy(out / POLICY_DIRNAME, LANDER)
    return np.asarray(ravel_pytree(eqx.filter(net, eqx.is_array))[0])


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    return out, _train(out)


@pytest.mark.parametrize("env_id", [LANDER, "CarRacing-v3"])
def test_the_network_acts_on_a_real_frame(env_id):
    spec = get_spec(env_id)
    env = make_env(env_id)
    observation, _ = env.reset(seed=0)
    frame = preprocess_frame(raw_frame(env, observation, spec), spec)
    env.close()
    net = new_network(spec, -0.5, 0)
    action, raw, value, log_prob = sample_action(net, frame, jax.random.key(0), spec)
    greedy = np.asarray(greedy_action(net, frame, spec))
    assert np.isfinite(value) and np.isfinite(log_prob) and value.shape == ()
    if spec.discrete:
        assert action.dtype == np.int32 and action.shape == greedy.shape == ()
        assert 0 <= int(action) < spec.action_size and int(raw) == int(action)
    else:
        low, high = head_bounds(spec)
        for a in (action, greedy):
            assert a.shape == (spec.action_size,)
            assert np.all(low <= a) and np.all(a <= high)


def test_training_resumes_to_the_parameters_of_an_uninterrupted_run(
        uninterrupted, tmp_path):
    out, summary = uninterrupted
    assert summary["real_steps"] == 64 and summary["updates"] == 2
    rows = read_metrics(out / "metrics.jsonl")
    assert [row["step"] for row in rows] == [32, 64]  # env steps
    assert all(np.isfinite(row["value_loss"]) and row["entropy"] > 0 for row in rows)
    assert (out / "curve.png").is_file()

    _train(tmp_path, dataclasses.replace(SETTINGS, total_steps=32))
    state = checkpointer_for(tmp_path, LANDER, SETTINGS).restore(
        initial_state(LANDER, SETTINGS))
    book = jax.device_get(state["book"])
    assert int(state["update"]) == 1 and book["step"].min() > 0  # cut mid-episode
    own_seeds = real_learner_seeds("ppo_frames", SETTINGS.seed)
    assert set(book["seed"].tolist()) <= set(own_seeds)
    resumed = _train(tmp_path)
    assert resumed["resumed_at_update"] == 1 and resumed["real_steps"] == 64
    np.testing.assert_array_equal(_parameters(tmp_path), _parameters(out))
    again = read_metrics(tmp_path / "metrics.jsonl")
    assert [row["value_loss"] for row in again] == [row["value_loss"] for row in rows]


def test_a_resume_under_other_settings_is_refused(uninterrupted):
    out, _ = uninterrupted
    with pytest.raises(CheckpointError, match="learning_rate"):
        _train(out, dataclasses.replace(SETTINGS, learning_rate=1e-3))


def test_a_replay_that_does_not_reproduce_its_episode_is_refused():
    envs = FrameEnvs(LANDER, 1, 0)
    envs.start()
    for _ in range(3):
        envs.step(np.zeros(1, np.int32))
    envs.close()
    book = {k: v.copy() for k, v in envs.book.state.items()}
    replayed = FrameEnvs(LANDER, 1, 0)
    replayed.book.load(book)
    replayed.start()  # the same book replays
    replayed.close()
    book["episode_return"] += 1.0
    tampered = FrameEnvs(LANDER, 1, 0)
    tampered.book.load(book)
    with pytest.raises(RuntimeError, match="not deterministic"):
        tampered.start()
    tampered.close()


def test_the_trained_policy_plays_a_real_episode(uninterrupted):
    out, _ = uninterrupted
    policy = make_policy("ppo_frames", LANDER, path=str(out / POLICY_DIRNAME))
    first, second = (play_episode(LANDER, policy, 3, 6) for _ in range(2))
    assert first["actions"].shape == (6,) and first["actions"].dtype == np.int32
    np.testing.assert_array_equal(first["actions"], second["actions"])


def test_a_missing_or_foreign_policy_is_refused(uninterrupted, tmp_path):
    out, _ = uninterrupted
    with pytest.raises(CheckpointError, match="train_model_free"):
        make_policy("ppo_frames", LANDER, path=str(tmp_path))
    with pytest.raises(CheckpointError, match="plays LunarLander-v3, not CarRacing"):
        make_policy("ppo_frames", "CarRacing-v3", path=str(out / POLICY_DIRNAME))


@pytest.mark.parametrize("bad", [
    dict(num_envs=0), dict(minibatches=3), dict(total_steps=10), dict(clip=0.0),
    dict(gamma=1.5), dict(learning_rate=-1.0), dict(entropy_coef=-0.1), dict(seed=100),
    dict(reward_scale=0.0),
])
def test_bad_settings_are_refused(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        FramePPOSettings(**{**dataclasses.asdict(SETTINGS), **bad})
