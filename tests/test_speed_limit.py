"""The agent's speed governor (``dream.speed_limit``): CarRacing's gas is cut, before M
steps on the action, wherever the dashboard shows more than the limit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny_run import make_tiny_run

from world_models.agent import Agent, latent_key, make_agent
from world_models.config import ConfigError, make_config
from world_models.data.car_view import GAS, dashboard_speed
from world_models.data.play import play_episode
from world_models.data.policies import make_policy
from world_models.envs import get_spec
from world_models.evaluation.real import evaluate_run, policy_setup
from world_models.models.controller import head_bounds, make_controller, zero_controller
from world_models.models.mdnrnn import action_to_input, rnn_from_config
from world_models.models.vae import ConvVAE, encode_frames, sample_posterior

STEPS = 70
LIMIT = 8.0
NOISE = 0.2


class Speedometer:
    """The agent, with the dashboard speed of every raw observation it acted on."""

    def __init__(self, agent):
        self.agent = agent

    def reset(self, seed):
        self.agent.reset(seed)
        self.speeds = []

    def act(self, frame, raw_obs):
        self.speeds.append(dashboard_speed(raw_obs))
        return self.agent.act(frame, raw_obs)


def _zero_agent(speed_limit):
    """The zero controller: C's own action is (0, 0.5, 0) at every step."""
    config = make_config("smoke")
    rnn = rnn_from_config(config, key=jax.random.key(1))
    controller = zero_controller(make_controller(config, key=jax.random.key(2)))
    vae = ConvVAE(config.vae.z_dim, key=jax.random.key(0))
    spec = get_spec("CarRacing-v3")
    return Agent(vae, rnn, controller, spec, noise=NOISE, speed_limit=speed_limit)


@pytest.fixture(scope="module")
def governed():
    policy = Speedometer(_zero_agent(LIMIT))
    return policy, play_episode("CarRacing-v3", policy, seed=5, max_steps=STEPS)


def test_gas_is_cut_exactly_where_the_dashboard_passes_the_limit(governed):
    policy, episode = governed
    fast = np.array(policy.speeds) > LIMIT
    assert fast.any() and (~fast).any()  # both regimes are played
    rng = np.random.default_rng(5)  # the episode's noise: drawn at every step
    low, high = head_bounds(policy.agent.spec)
    for t, action in enumerate(episode["actions"]):
        expected = np.clip(np.array([0, 0.5, 0]) + NOISE * rng.standard_normal(3),
                           low, high)
        if fast[t]:
            expected[GAS] = 0.0
        np.testing.assert_allclose(action, expected, atol=1e-5)


def test_m_steps_on_the_governed_action_it_sent(governed):
    policy, episode = governed
    agent = policy.agent
    frames = episode["obs"][:-1]
    mu, logvar = encode_frames(agent.vae, frames)
    state = agent.rnn.initial_state()
    for t, action in enumerate(episode["actions"]):
        z = sample_posterior(jnp.asarray(mu[t]), jnp.asarray(logvar[t]),
                             latent_key(5, t))
        state, _ = agent.rnn.step(state, z, action_to_input(action, agent.spec))
    np.testing.assert_allclose(agent.state[0], state[0], atol=1e-4)


def test_without_a_limit_the_same_stream_keeps_the_gas(governed):
    policy, _ = governed
    free = Speedometer(_zero_agent(0.0))
    episode = play_episode("CarRacing-v3", free, seed=5, max_steps=STEPS)
    assert max(free.speeds) > LIMIT
    assert np.all(episode["actions"][:, GAS] > 0)


def test_a_speed_limit_needs_a_dashboard():
    with pytest.raises(ConfigError, match="dashboard"):
        make_config("smoke", env_id="LunarLander-v3",
                    overrides=["dream.speed_limit=40"])
    with pytest.raises(ConfigError, match="speed_limit"):
        make_config("smoke", overrides=["dream.speed_limit=-1"])
    config = make_config("smoke", env_id="LunarLander-v3")
    with pytest.raises(ValueError, match="dashboard"):
        Agent(ConvVAE(config.vae.z_dim, key=jax.random.key(0)),
              rnn_from_config(config, key=jax.random.key(1)),
              make_controller(config, key=jax.random.key(2)),
              get_spec("LunarLander-v3"), speed_limit=40)


def test_a_runs_agent_acts_with_its_speed_limit_unless_told_otherwise(tmp_path):
    run = make_tiny_run(tmp_path / "run", overrides=("dream.speed_limit=44",))
    assert make_agent("CarRacing-v3", str(run), controller="zero").speed_limit == 44
    registered, kwargs = policy_setup(run, "zero", speed_limit=0)
    assert make_policy(registered, "CarRacing-v3", **kwargs).speed_limit == 0
    with pytest.raises(ValueError, match="speed limit is for"):
        policy_setup(run, "brownian", speed_limit=40)
    with pytest.raises(ConfigError, match="speed_limit"):
        policy_setup(run, "zero", speed_limit=-1)
    report = evaluate_run(run, policy="zero", episodes=1, seed=3, workers=1,
                          progress=False, speed_limit=10)
    assert report["speed_limit"] == 10
    assert (run / "eval" / "zero_limit10.json").is_file()


def test_quick_governs_carracing_and_leaves_worlds_without_a_dashboard_alone():
    assert make_config("quick").dream.speed_limit > 0
    assert make_config("standard").dream.speed_limit == 0
    for env_id in ("LunarLander-v3", "ALE/Pong-v5"):
        assert make_config("quick", env_id).dream.speed_limit == 0  # not refused
