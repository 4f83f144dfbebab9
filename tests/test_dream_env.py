"""The dream as an environment: pure reset/step, termination, horizon, auto-reset, and
the CMA-ES rollout played through it unchanged."""

import json
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from handmade_rnn import counter_rnn

from world_models.config import make_config
from world_models.dream.rollout import make_dream
from world_models.envs import get_spec
from world_models.models.controller import (
    LinearController,
    make_controller,
    num_parameters,
)
from world_models.models.mdnrnn import MDNRNN

CAR = get_spec("CarRacing-v3")
Z = 3
RECORDED = Path(__file__).parent / "data" / "dream_returns_before_env.json"


def _counter_dream(done_step, horizon=20):
    """Reward 1.5 a step, -7 on the step M terminates (``done_step``, counted from
    each reset: M's one hidden unit counts the steps)."""
    rnn = counter_rnn(Z, CAR.action_size, done_step=done_step, reward=1.5,
                      terminal_reward=-7.0)
    mu = np.arange(5 * Z, dtype=np.float32).reshape(5, Z)
    template = LinearController(rnn.z_dim + rnn.hidden_size, CAR.action_size,
                                key=jax.random.key(0))
    return make_dream(rnn, (mu, np.zeros_like(mu)), template, CAR, horizon, 1.0)


NO_ACTION = jnp.zeros(CAR.action_size)


def test_reset_and_step_are_pure_and_jit_compile():
    dream = _counter_dream(done_step=50)
    reset, step = eqx.filter_jit(dream.reset), eqx.filter_jit(dream.step)
    obs, state = reset(jax.random.key(1))
    again_obs, again_state = dream.reset(jax.random.key(1))
    np.testing.assert_array_equal(obs, again_obs)
    assert obs.shape == (Z + dream.rnn.hidden_size,)
    np.testing.assert_array_equal(obs, jnp.concatenate([state.z, state.rnn_state[0]]))
    first = step(jax.random.key(2), state, NO_ACTION)
    second = dream.step(jax.random.key(2), again_state, NO_ACTION)
    for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(second), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)


@pytest.mark.parametrize("done_step", [1, 4])
def test_an_episode_ends_on_termination_with_the_terminal_reward(done_step):
    dream = _counter_dream(done_step)
    _, state = dream.reset(jax.random.key(0))
    rewards, dones = [], []
    for t in range(done_step):
        _, state, reward, done = dream.step(jax.random.key(t), state, NO_ACTION)
        rewards.append(float(reward))
        dones.append(bool(done))
    assert dones == [False] * (done_step - 1) + [True]
    np.testing.assert_allclose(rewards, [1.5] * (done_step - 1) + [-7.0], rtol=1e-6)


def test_the_horizon_ends_an_episode_that_never_terminates():
    dream = _counter_dream(done_step=50, horizon=3)
    _, state = dream.reset(jax.random.key(0))
    dones = []
    for t in range(3):
        _, state, reward, done = dream.step(jax.random.key(t), state, NO_ACTION)
        dones.append(bool(done))
    assert dones == [False, False, True] and float(reward) == pytest.approx(1.5)


def test_auto_reset_starts_a_new_episode_and_leaks_no_step_across():
    dream = _counter_dream(done_step=3)
    step = eqx.filter_jit(dream.step_auto_reset)
    _, state = dream.reset(jax.random.key(0))
    rewards, dones = [], []
    for t in range(8):
        key = jax.random.key(100 + t)
        obs, state, reward, done = step(key, state, NO_ACTION)
        rewards.append(float(reward))
        dones.append(bool(done))
        if done:  # the new episode's first observation and state, from the reset key
            reset_obs, reset_state = dream.reset(jax.random.split(key)[1])
            np.testing.assert_array_equal(obs, reset_obs)
            np.testing.assert_array_equal(state.z, reset_state.z)
            assert int(state.t) == 0
        else:
            assert int(state.t) == t % 3 + 1
    # each episode pays 1.5, 1.5 then the terminal -7: the counter restarts at reset
    assert dones == [False, False, True] * 2 + [False, False]
    np.testing.assert_allclose(rewards, [1.5, 1.5, -7.0] * 2 + [1.5, 1.5], rtol=1e-6)


def test_a_batch_of_envs_vmaps():
    dream = _counter_dream(done_step=2)
    keys = jax.random.split(jax.random.key(0), 4)
    obs, states = jax.vmap(dream.reset)(keys)
    actions = jnp.zeros((4, CAR.action_size))
    obs, states, rewards, dones = jax.vmap(dream.step_auto_reset)(keys, states, actions)
    assert obs.shape == (4, Z + dream.rnn.hidden_size) and rewards.shape == (4,)
    assert not bool(dones.any())


@pytest.mark.parametrize("heads, dropout, ensemble", [
    (1, 0.0, "sample"), (3, 0.2, "sample"), (3, 0.0, "pessimistic")])
def test_rollouts_through_the_env_return_what_they_returned_before_it(
        heads, dropout, ensemble):
    """Returns and lengths recorded with the dream as it was before it became an
    environment (same M, starts, controllers and keys)."""
    recorded = json.loads(RECORDED.read_text())
    rnn = MDNRNN(8, CAR.action_input_size, hidden_size=16, num_mixtures=3,
                 num_heads=heads, key=jax.random.key(3))
    rnn = eqx.tree_at(lambda m: m.terminal_reward, rnn, jnp.float32(-5.0))
    starts = (np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32),
              np.full((5, 8), -2.0, np.float32))
    template = make_controller(make_config("smoke"), key=jax.random.key(0))
    dream = make_dream(rnn, starts, template, CAR, horizon=50, temperature=0.7,
                       dropout=dropout, ensemble=ensemble)
    population = jax.random.normal(jax.random.key(1), (6, num_parameters(template))) * 2
    returns, lengths = dream.population_returns(population, jax.random.key(2), 4)
    tag = f"{heads}_{dropout}_{ensemble}"
    np.testing.assert_allclose(returns, recorded[f"{tag}_r"], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(lengths, recorded[f"{tag}_l"])
