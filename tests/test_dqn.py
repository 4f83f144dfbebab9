"""DQN in the dream learns a toy M's paying action, discrete and from CarRacing's
action set, and is a pure function of its key."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from handmade_rnn import steering_reward_rnn

from world_models.dream.dqn import (
    CAR_ACTIONS,
    DQNSettings,
    discrete_actions,
    greedy_action,
    make_train,
)
from world_models.dream.rollout import make_dream
from world_models.envs import get_spec
from world_models.models.controller import LinearController

Z = 3
SETTINGS = DQNSettings(num_envs=16, iterations=400, warmup=50, epsilon_iterations=200,
                       target_every=50, batch_size=64, buffer_size=4096)


def _dream(env_id):
    spec = get_spec(env_id)
    rnn = steering_reward_rnn(Z, spec.action_input_size)
    template = LinearController(Z + rnn.hidden_size, spec.action_size,
                                key=jax.random.key(0))
    mu = np.zeros((4, Z), np.float32)
    return make_dream(rnn, (mu, np.full_like(mu, -4.0)), template, spec, 16, 1.0)


def _train(dream, actions, key=0):
    return eqx.filter_jit(make_train(dream, SETTINGS, actions))(jax.random.key(key))


def _obs(dream):
    return jnp.zeros(Z + dream.rnn.hidden_size)


def test_dqn_learns_the_paying_discrete_action():
    dream = _dream("LunarLander-v3")
    actions = discrete_actions(dream.spec)
    network, metrics = _train(dream, actions)
    assert int(greedy_action(network, actions, _obs(dream))) == 0
    reward = np.asarray(metrics["reward_per_step"])
    assert reward[-50:].mean() > 0.5 > reward[:20].mean()


def test_dqn_learns_to_steer_right_without_gas_from_the_car_action_set():
    dream = _dream("CarRacing-v3")
    network, _ = _train(dream, CAR_ACTIONS)
    np.testing.assert_array_equal(greedy_action(network, CAR_ACTIONS, _obs(dream)),
                                  [1.0, 0.0, 0.0])


def test_dqn_is_a_pure_function_of_its_key_and_needs_an_action_set():
    dream = _dream("LunarLander-v3")
    actions = discrete_actions(dream.spec)
    (a, ma), (b, mb) = _train(dream, actions, 1), _train(dream, actions, 1)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(ma["loss"], mb["loss"])
    with pytest.raises(ValueError, match="continuous actions"):
        discrete_actions(get_spec("CarRacing-v3"))
