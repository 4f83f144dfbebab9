import numpy as np
import pytest

from world_models.data.car_view import dashboard_speed, road_center, road_mask
from world_models.data.policies import (
    DRIVER_NAMES,
    env_action_bounds,
    make_policy,
    policy_names,
    register_policy,
)
from world_models.envs import make_env


def test_registry():
    assert {"brownian", "recovery", "aggressive", "agent"} <= set(policy_names())
    with pytest.raises(ValueError, match="known: .*brownian"):
        make_policy("nope", "CarRacing-v3")
    with pytest.raises(ValueError, match="CarRacing-v3 only"):
        make_policy("recovery", "LunarLander-v3")
    register_policy("test_constant", lambda env_id: make_policy("brownian", env_id))
    assert "test_constant" in policy_names()


def test_every_driver_name_makes_its_driver():
    """The registry imports the drivers' module on demand; each name it lists for it
    must be registered there under that name."""
    for name in DRIVER_NAMES:
        policy = make_policy(name, "CarRacing-v3")
        assert type(policy).__module__ == "world_models.data.drivers", name


def test_brownian_continuous_stays_in_bounds_and_is_seeded():
    low, high = env_action_bounds("CarRacing-v3")
    policy = make_policy("brownian", "CarRacing-v3")
    runs = []
    for seed in (0, 0, 1):
        policy.reset(seed)
        runs.append(np.stack([policy.act(None, None) for _ in range(200)]))
    assert runs[0].dtype == np.float32 and runs[0].shape == (200, 3)
    assert (runs[0] >= low).all() and (runs[0] <= high).all()
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])
    steps = np.abs(np.diff(runs[0], axis=0))
    assert steps.max() < 1.5 and steps.mean() < 0.4  # a walk, not white noise
    assert runs[0][:, 1].mean() > runs[0][:, 2].mean()  # biased to gas over brake


def test_sticky_random_repeats_and_covers_actions():
    policy = make_policy("brownian", "ALE/Pong-v5", repeat_prob=0.75)
    policy.reset(0)
    actions = np.array([policy.act(None, None) for _ in range(2000)])
    assert set(actions) == set(range(6))
    repeats = (actions[1:] == actions[:-1]).mean()
    assert 0.7 < repeats < 0.85  # 0.75 + 0.25 / 6


def test_pixel_helpers_on_a_real_frame():
    env = make_env("CarRacing-v3")
    observation, _ = env.reset(seed=0)
    for _ in range(60):
        observation, *_ = env.step(np.array([0.0, 0.6, 0.0], np.float32))
    speed = float(np.linalg.norm(env.unwrapped.car.hull.linearVelocity))
    env.close()
    road = road_mask(observation)
    assert road.shape == (84, 96)
    assert road[60, 48] and not road[60, 5]  # on the straight start: road, grass aside
    centre = road_center(road[60], 47.5)
    assert abs(centre - 47.5) < 8
    assert abs(dashboard_speed(observation) - speed) < 0.25 * speed + 3


def test_road_center_picks_nearest_run():
    row = np.zeros(96, bool)
    row[10:20] = True
    row[60:80] = True
    assert road_center(row, 50) == 69.5
    assert road_center(row, 25) == 14.5
    assert road_center(np.zeros(96, bool), 50) is None


def test_model_policies_load_on_first_use():
    from world_models.data.policies import get_factory

    assert callable(get_factory("on_policy")) and callable(get_factory("agent"))


def _play(name: str, seed: int, steps: int, **kwargs) -> tuple[np.ndarray, list[bool]]:
    """The policy's actions on CarRacing ``seed`` and, per step, whether the car is on
    the road."""
    env = make_env("CarRacing-v3")
    policy = make_policy(name, "CarRacing-v3", **kwargs)
    observation, _ = env.reset(seed=seed)
    policy.reset(seed)
    actions, on_road = [], []
    for _ in range(steps):
        action = policy.act(None, observation)
        observation, *_ = env.step(action)
        actions.append(action)
        on_road.append(road_mask(observation)[60:66, 44:52].mean() > 0.5)
    env.close()
    return np.stack(actions), on_road


def _play_reckless(seed: int, steps: int) -> tuple[np.ndarray, list[bool]]:
    return _play("reckless", seed, steps, drive_steps=(40, 41), hold_steps=(100, 101),
                 stop_prob=0.0)


def test_reckless_drives_then_leaves_the_road_for_good():
    actions, on_road = _play_reckless(3, 400)
    # after its 40 driving steps it holds one action per 100-step stretch ...
    for start in (40, 140, 240):
        held = actions[start : start + 100]
        assert (held == held[0]).all() and held[0, 2] == 0.0 and held[0, 1] >= 0.3
    assert not np.array_equal(actions[40], actions[140])
    # ... and the car, on the road while driving, spends most of the rest off it
    assert np.mean(on_road[10:40]) > 0.9  # after the opening zoom
    assert np.mean(on_road[200:]) < 0.5
    np.testing.assert_array_equal(_play_reckless(3, 400)[0], actions)


def test_understeer_misses_corners_that_full_steering_takes():
    weak, weak_road = _play("understeer", 3, 500)
    full, full_road = _play("understeer", 3, 500, steer_gain=(1.0, 1.0))
    weak_on_road, full_on_road = np.mean(weak_road[50:]), np.mean(full_road[50:])
    aggressive, _ = _play("aggressive", 3, 500)
    np.testing.assert_array_equal(full, aggressive)  # gain 1: aggressive exactly
    assert weak_on_road < full_on_road - 0.1  # 0.36 against 0.52
    assert np.abs(weak[:, 0]).mean() < np.abs(full[:, 0]).mean()
    np.testing.assert_array_equal(_play("understeer", 3, 500)[0], weak)


def test_overspeed_rushes_into_corners_without_braking():
    rushing, rushing_road = _play("overspeed", 3, 500, rush_prob=1.0,
                                  rush_speed=(60.0, 60.0))
    calm, _ = _play("overspeed", 3, 500, rush_prob=0.0)
    aggressive, aggressive_road = _play("aggressive", 3, 500)
    np.testing.assert_array_equal(calm, aggressive)  # no rush: aggressive exactly
    assert (rushing[:, 2] == 0).all() and (aggressive[:, 2] > 0).any()
    assert np.mean(rushing_road[50:]) < np.mean(aggressive_road[50:]) - 0.1
    mixed, _ = _play("overspeed", 3, 500)
    np.testing.assert_array_equal(_play("overspeed", 3, 500)[0], mixed)
    assert not np.array_equal(mixed, aggressive)


def test_lander_sets_down_on_its_legs_and_explores_with_epsilon():
    env = make_env("LunarLander-v3")
    driver = make_policy("lander", "LunarLander-v3", epsilon=0.0)
    landed = 0
    for seed in (0, 1, 2):
        observation, _ = env.reset(seed=seed)
        driver.reset(seed)
        for _ in range(1000):
            observation, _, terminated, truncated, _ = env.step(
                driver.act(None, observation)
            )
            if terminated or truncated:
                break
        # at rest on both legs ends the episode; a crash ends it in the air or tipped
        landed += bool(terminated and observation[6] and observation[7])
    env.close()
    assert landed >= 2
    explorer = make_policy("lander", "LunarLander-v3", epsilon=1.0)
    explorer.reset(0)
    actions = [explorer.act(None, observation) for _ in range(400)]
    assert sorted(set(actions)) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="flies LunarLander-v3 only"):
        make_policy("lander", "CarRacing-v3")
