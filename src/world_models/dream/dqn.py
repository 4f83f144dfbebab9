"""DQN inside M's dream: a Q-network over [z, h] and a finite action set.

``make_train(dream, settings, actions)`` returns ``train(key)``, one pure function that
jit compiles whole: ``num_envs`` dreams step in lockstep (``Dream.step_auto_reset``
under vmap) with ε-greedy actions, every step's transitions enter a circular replay
buffer held in arrays, and after ``warmup`` steps each iteration takes one Huber-loss
gradient step on a uniform minibatch against a target network copied every
``target_every`` iterations (the network and the step: ``rl.dqn_core``, shared with
DQN in the real env). ``actions`` is the action set: the env's action for each
Q-value (``discrete_actions``: the indices of a discrete env; ``CAR_ACTIONS``: five
CarRacing actions, as a DQN on [z, h] for CarRacing has used; ``action_set``: the
one of an env).
"""

from __future__ import annotations

from dataclasses import dataclass

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, PRNGKeyArray

from world_models.dream.rollout import Dream
from world_models.envs import EnvSpec
from world_models.rl.dqn_core import Transitions, q_network, td_update

# steer, gas, brake: straight on gas, left, right, brake, coast
CAR_ACTIONS = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [1.0, 0.0, 0.0],
                        [0.0, 0.0, 0.8], [0.0, 0.0, 0.0]], np.float32)


def discrete_actions(spec: EnvSpec) -> np.ndarray:
    """The action set of a discrete env: its action indices."""
    if not spec.discrete:
        raise ValueError(f"{spec.env_id} has continuous actions: pass an action set")
    return np.arange(spec.action_size, dtype=np.int32)


def action_set(spec: EnvSpec) -> np.ndarray:
    """The default action set of ``spec``'s env: its indices, or ``CAR_ACTIONS``."""
    if spec.discrete:
        return discrete_actions(spec)
    if spec.action_squash == "car":
        return CAR_ACTIONS
    raise ValueError(f"{spec.env_id} has no default action set for DQN: pass one")


@dataclass(frozen=True)
class DQNSettings:
    num_envs: int = 16
    iterations: int = 2000  # env steps per env; one gradient step each after warmup
    buffer_size: int = 50_000
    batch_size: int = 64
    warmup: int = 100  # iterations before learning starts
    learning_rate: float = 1e-3
    gamma: float = 0.99
    epsilon_start: float = 1.0
    epsilon_end: float = 0.05
    epsilon_iterations: int = 1000  # linear decay over these iterations
    target_every: int = 100
    hidden: int = 64

    def __post_init__(self):
        if min(self.num_envs, self.iterations, self.buffer_size, self.batch_size,
               self.target_every, self.hidden, self.epsilon_iterations) <= 0:
            raise ValueError(f"DQN sizes must be > 0: {self}")


def make_train(dream: Dream, settings: DQNSettings, actions: np.ndarray):
    """``train(key) -> (q_network, metrics)``; ``metrics`` per iteration: the mean
    return of the dream episodes that ended in it (NaN if none did) and the loss."""
    s = settings
    table = jnp.asarray(actions)
    num_actions = table.shape[0]
    obs_size = dream.rnn.z_dim + dream.rnn.hidden_size
    optimizer = optax.adam(s.learning_rate)

    def train(key: PRNGKeyArray):
        init_key, reset_key, key = jax.random.split(key, 3)
        network = q_network(obs_size, num_actions, s.hidden, init_key)
        params, static = eqx.partition(network, eqx.is_array)
        obs, states = jax.vmap(dream.reset)(jax.random.split(reset_key, s.num_envs))
        replay = Transitions(
            jnp.zeros((s.buffer_size, obs_size)), jnp.zeros(s.buffer_size, jnp.int32),
            jnp.zeros(s.buffer_size), jnp.zeros((s.buffer_size, obs_size)),
            jnp.zeros(s.buffer_size))
        filled = cursor = jnp.array(0)  # the buffer's size so far, the next slot

        def iteration(runner, index):
            (params, target, opt_state, obs, states, returns, replay, filled, cursor,
             key) = runner
            keys = jax.random.split(key, 5)
            key, explore_key, choice_key, step_key, sample_key = keys
            epsilon = jnp.interp(index, jnp.array([0, s.epsilon_iterations]),
                                 jnp.array([s.epsilon_start, s.epsilon_end]))
            greedy = jax.vmap(eqx.combine(params, static))(obs).argmax(axis=1)
            random = jax.random.randint(choice_key, (s.num_envs,), 0, num_actions)
            explore = jax.random.uniform(explore_key, (s.num_envs,)) < epsilon
            chosen = jnp.where(explore, random, greedy)
            # the observation after a step that ended an episode is the next one's
            # first; the transition stores the ended episode's (done stops bootstrap)
            next_obs, states, reward, done = jax.vmap(dream.step_auto_reset)(
                jax.random.split(step_key, s.num_envs), states, table[chosen])
            slots = (cursor + jnp.arange(s.num_envs)) % s.buffer_size
            new = Transitions(obs, chosen, reward, next_obs, done.astype(jnp.float32))
            replay = jax.tree.map(lambda a, b: a.at[slots].set(b), replay, new)
            filled = jnp.minimum(filled + s.num_envs, s.buffer_size)
            cursor = (cursor + s.num_envs) % s.buffer_size
            returns = returns + reward
            ended = done.sum()
            mean_return = jnp.where(
                ended > 0, jnp.where(done, returns, 0.0).sum() / jnp.maximum(ended, 1),
                jnp.nan)
            returns = jnp.where(done, 0.0, returns)

            rows = jax.random.randint(sample_key, (s.batch_size,), 0, filled)
            batch = jax.tree.map(lambda x: x[rows], replay)
            learned, learned_opt_state, loss = td_update(
                optimizer, s.gamma, params, static, target, opt_state, batch)
            learn = index >= s.warmup
            params, opt_state = jax.tree.map(
                lambda new, old: jnp.where(learn, new, old),
                (learned, learned_opt_state), (params, opt_state))
            copy = index % s.target_every == 0
            target = jax.tree.map(lambda p, t: jnp.where(copy, p, t), params, target)
            runner = (params, target, opt_state, next_obs, states, returns, replay,
                      filled, cursor, key)
            return runner, dict(episode_return=mean_return, loss=loss,
                                reward_per_step=reward.mean())

        runner = (params, params, optimizer.init(params), obs, states,
                  jnp.zeros(s.num_envs), replay, filled, cursor, key)
        runner, metrics = jax.lax.scan(iteration, runner, jnp.arange(s.iterations))
        return eqx.combine(runner[0], static), metrics

    return train


def greedy_action(network: eqx.nn.MLP, actions: np.ndarray, obs: Array) -> Array:
    """The env action the Q-network prefers for ``obs`` = [z, h]."""
    return jnp.asarray(actions)[network(obs).argmax()]
