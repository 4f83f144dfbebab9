"""PPO in the dream learns a toy M's preferred action, continuous and discrete, and is
a pure function of its key."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from handmade_rnn import steering_reward_rnn

from world_models.dream.ppo import PPOSettings, make_train, policy_params
from world_models.dream.rollout import make_dream
from world_models.envs import get_spec
from world_models.models.controller import (
    LinearController,
    act,
    controller_from_flat,
    controller_to_flat,
)

Z = 3
SETTINGS = PPOSettings(num_envs=16, num_steps=16, updates=40, learning_rate=3e-3)


def _dream(env_id):
    spec = get_spec(env_id)
    rnn = steering_reward_rnn(Z, spec.action_input_size)
    template = LinearController(Z + rnn.hidden_size, spec.action_size,
                                key=jax.random.key(0))
    template = controller_from_flat(
        template, jnp.zeros_like(controller_to_flat(template)))  # starts neutral
    mu = np.zeros((4, Z), np.float32)
    return make_dream(rnn, (mu, np.full_like(mu, -4.0)), template, spec, 16, 1.0)


def _train(dream, key=0):
    return eqx.filter_jit(make_train(dream, SETTINGS))(jax.random.key(key))


def _greedy_action(dream, net):
    controller = controller_from_flat(dream.template, policy_params(net))
    return act(controller, jnp.zeros(Z), jnp.zeros(dream.rnn.hidden_size), dream.spec)


def test_ppo_learns_to_steer_right_and_lift_the_gas():
    dream = _dream("CarRacing-v3")
    net, metrics = _train(dream)
    returns = np.asarray(metrics["episode_return"])
    assert np.isfinite(returns).all()  # every update ends 16 episodes of 16 steps
    assert returns[-5:].mean() > returns[:5].mean() + 5.0
    steer, gas, _ = np.asarray(_greedy_action(dream, net))
    assert steer > 0.3 and gas < 0.3


def test_ppo_learns_the_paying_discrete_action():
    dream = _dream("LunarLander-v3")
    net, metrics = _train(dream)
    assert int(_greedy_action(dream, net)) == 0
    reward = np.asarray(metrics["reward_per_step"])
    assert reward[-5:].mean() > 0.5 > reward[:2].mean()


def test_ppo_is_a_pure_function_of_its_key():
    dream = _dream("CarRacing-v3")
    (a, ma), (b, mb), (c, _) = _train(dream, 1), _train(dream, 1), _train(dream, 2)
    np.testing.assert_array_equal(policy_params(a), policy_params(b))
    np.testing.assert_array_equal(ma["episode_return"], mb["episode_return"])
    assert not np.array_equal(policy_params(a), policy_params(c))
