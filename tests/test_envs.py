import numpy as np
import pytest

from world_models.data.play import play_episode
from world_models.envs import (
    ENVS,
    EnvSpec,
    UnknownEnvError,
    get_spec,
    make_env,
    observed_frame,
    preprocess_frame,
    raw_frame,
)


def test_unknown_env_lists_supported():
    with pytest.raises(UnknownEnvError, match="CarRacing-v3.*LunarLander-v3"):
        get_spec("CartPole-v1")


@pytest.mark.parametrize("env_id", sorted(ENVS))
def test_frames_and_action_space(env_id):
    spec = get_spec(env_id)
    env = make_env(env_id)
    obs, _ = env.reset(seed=3)
    frame = preprocess_frame(raw_frame(env, obs, spec), spec)
    assert frame.shape == (64, 64, 3) and frame.dtype == np.uint8
    if spec.discrete:
        assert env.action_space.n == spec.action_size
    else:
        assert env.action_space.shape == (spec.action_size,)
    env.close()


def test_carracing_crop_drops_dashboard():
    spec = get_spec("CarRacing-v3")
    frame = np.zeros((96, 96, 3), np.uint8)
    frame[84:] = 255  # the dashboard rows
    assert preprocess_frame(frame, spec).max() == 0
    frame[:84] = 100
    np.testing.assert_array_equal(preprocess_frame(frame, spec), 100)


def test_preprocess_rejects_non_rgb():
    with pytest.raises(ValueError, match="RGB"):
        preprocess_frame(np.zeros((96, 96), np.uint8), get_spec("CarRacing-v3"))


def test_env_spec_refuses_inconsistent_action_settings():
    with pytest.raises(ValueError, match="action_squash 'sigmoid'"):
        EnvSpec("X-v0", "continuous", 2, 100, None, action_squash="sigmoid")
    with pytest.raises(ValueError, match="steer, gas, brake"):
        EnvSpec("X-v0", "continuous", 2, 100, None, action_squash="car")
    with pytest.raises(ValueError, match="brownian_drift"):
        EnvSpec("X-v0", "continuous", 2, 100, None, brownian_drift=(0.0, 1.0, 0.0))
    with pytest.raises(ValueError, match="action_kind"):
        EnvSpec("X-v0", "box", 2, 100, None)
    with pytest.raises(ValueError, match="grow_objects 2"):
        EnvSpec("X-v0", "discrete", 2, 100, None, grow_objects=2)
    car = get_spec("CarRacing-v3")
    assert car.action_squash == "car" and len(car.brownian_drift) == car.action_size


def test_lunarlanders_crash_ends_as_termination_and_its_cap_as_truncation():
    episode = play_episode("LunarLander-v3", "brownian", seed=1, max_steps=1000)
    steps = len(episode["rewards"])
    assert steps < 1000 and len(episode["obs"]) == steps + 1
    assert episode["terminated"].tolist() == [False] * (steps - 1) + [True]
    assert not episode["truncated"].any() and episode["rewards"][-1] == -100  # crash
    cut = play_episode("LunarLander-v3", "brownian", seed=1, max_steps=20)
    assert cut["truncated"].tolist() == [False] * 19 + [True]
    assert not cut["terminated"].any()


def test_the_lander_is_in_the_frame_where_its_body_is():
    # render() draws 30 pixels per Box2D unit, 600 x 400, y up; the frame is 64 x 64
    spec = get_spec("LunarLander-v3")
    env = make_env(spec.env_id)
    rng = np.random.default_rng(0)
    observation, _ = env.reset(seed=4)
    checked = 0
    for step in range(75):  # falling, side engines only: in view from step 29 on
        observation, *_ = env.step(int(rng.choice([0, 1, 3])))
        if step % 15 == 14 and step >= 29:
            frame = observed_frame(env, observation, spec).astype(int)
            red, green, blue = np.moveaxis(frame, -1, 0)
            rows, cols = np.nonzero((blue > red + 40) & (blue > green + 40))  # violet
            x, y = env.unwrapped.lander.position
            assert len(rows) >= 8
            assert abs(rows.mean() - (400 - 30 * y) / 400 * 64) < 1.5
            assert abs(cols.mean() - 30 * x / 600 * 64) < 1.5
            checked += 1
    env.close()
    assert checked == 4
