"""What DQN in the dream (``dream.dqn``) and DQN in the real env
(``rl.dqn_features``) share: the Q-network over [z, h], the transitions a replay
buffer holds, and the Huber-loss TD gradient step against a target network."""

from __future__ import annotations

from typing import Any, NamedTuple

import equinox as eqx
import jax
import optax
from jaxtyping import Array, PRNGKeyArray


class Transitions(NamedTuple):
    obs: Array
    action: Array
    reward: Array
    next_obs: Array
    done: Array


def q_network(obs_size: int, num_actions: int, hidden: int, key: PRNGKeyArray):
    """A fresh Q-network: one Q-value per entry of the action set."""
    return eqx.nn.MLP(obs_size, num_actions, hidden, depth=2,
                      activation=jax.nn.relu, key=key)


def td_loss(params: Any, static: Any, target: Any, batch: Transitions, gamma: float):
    """Huber loss of Q(obs, action) against r + γ max Q_target(next_obs) (no
    bootstrap past ``done``)."""
    q = jax.vmap(eqx.combine(params, static))(batch.obs)
    chosen = jax.numpy.take_along_axis(q, batch.action[:, None], axis=1)[:, 0]
    best_next = jax.vmap(eqx.combine(target, static))(batch.next_obs).max(axis=1)
    wanted = batch.reward + gamma * (1.0 - batch.done) * best_next
    return optax.huber_loss(chosen, jax.lax.stop_gradient(wanted)).mean()


def td_update(
    optimizer: optax.GradientTransformation,
    gamma: float,
    params: Any,
    static: Any,
    target: Any,
    opt_state: Any,
    batch: Transitions,
) -> tuple[Any, Any, Array]:
    """One gradient step of ``td_loss``: (new params, new optimizer state, loss)."""
    loss, grads = jax.value_and_grad(td_loss)(params, static, target, batch, gamma)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss
