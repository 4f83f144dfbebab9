"""MDN-RNNs with hand-set weights whose dreams have known outcomes (for tests)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from world_models.models.mdnrnn import MDNRNN

OPEN = 30.0  # gate pre-activation that makes sigmoid(gate) == 1 in float32


def _set(rnn: MDNRNN, weight_ih, bias, head_weight, head_bias) -> MDNRNN:
    rnn = eqx.tree_at(
        lambda m: m.cell.weight_ih, rnn, jnp.asarray(weight_ih, jnp.float32)
    )
    rnn = eqx.tree_at(
        lambda m: m.cell.weight_hh, rnn, jnp.zeros_like(rnn.cell.weight_hh)
    )
    rnn = eqx.tree_at(lambda m: m.cell.bias, rnn, jnp.asarray(bias, jnp.float32))
    rnn = eqx.tree_at(
        lambda m: m.head.weight, rnn, jnp.asarray(head_weight, jnp.float32)
    )
    return eqx.tree_at(lambda m: m.head.bias, rnn, jnp.asarray(head_bias, jnp.float32))


def counter_rnn(
    z_dim: int,
    action_size: int,
    done_step: int,
    rate: float = 0.1,
    reward: float = 1.0,
    terminal_reward: float = 0.0,
) -> MDNRNN:
    """One hidden unit counts steps, h_t = tanh(rate * t); the termination logit turns
    positive at step ``done_step`` (1-based); the reward is ``reward`` every step but
    the terminating one, which pays ``terminal_reward``."""
    rnn = MDNRNN(
        z_dim, action_size, hidden_size=1, num_mixtures=1, key=jax.random.key(0)
    )
    # gates (i, f, g, o): i, f, o open; g = tanh(atanh(rate)) = rate, so c_t = rate * t
    bias = [OPEN, OPEN, float(np.arctanh(rate)), OPEN]
    head_weight = np.zeros((3 * z_dim + 2, 1), np.float32)
    head_bias = np.zeros(3 * z_dim + 2, np.float32)
    head_bias[-2] = reward
    head_weight[-1, 0] = 1000.0
    head_bias[-1] = -1000.0 * np.tanh(rate * (done_step - 0.5))
    rnn = _set(rnn, np.zeros((4, z_dim + action_size)), bias, head_weight, head_bias)
    return eqx.tree_at(lambda m: m.terminal_reward, rnn, jnp.float32(terminal_reward))


def steering_reward_rnn(z_dim: int, action_size: int = 3) -> MDNRNN:
    """CarRacing-shaped M whose reward is tanh(tanh(3 steer)) - tanh(tanh(3 gas)): the
    best action is steer = +1, gas = 0. It never terminates. With a one-hot action
    input (a discrete env's ``action_size``), action 0 pays tanh(tanh(3)) and action 1
    as much less; the others pay 0."""
    hidden = 2
    rnn = MDNRNN(
        z_dim, action_size, hidden_size=hidden, num_mixtures=1, key=jax.random.key(0)
    )
    weight_ih = np.zeros((4 * hidden, z_dim + action_size), np.float32)
    weight_ih[2 * hidden + 0, z_dim + 0] = 3.0  # g of unit 0 <- steer
    weight_ih[2 * hidden + 1, z_dim + 1] = 3.0  # g of unit 1 <- gas
    bias = np.concatenate(
        [
            np.full(hidden, OPEN),
            np.full(hidden, -OPEN),
            np.zeros(hidden),
            np.full(hidden, OPEN),
        ]
    )
    head_weight = np.zeros((3 * z_dim + 2, hidden), np.float32)
    head_weight[-2] = [1.0, -1.0]
    head_bias = np.zeros(3 * z_dim + 2, np.float32)
    head_bias[-1] = -100.0
    return _set(rnn, weight_ih, bias, head_weight, head_bias)
