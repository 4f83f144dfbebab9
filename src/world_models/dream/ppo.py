"""PPO inside M's dream: the controller trained by gradient instead of evolution.

``make_train(dream, settings)`` returns ``train(key)``, one pure function that jit
compiles whole: ``num_envs`` dreams stepped in lockstep (``Dream.step_auto_reset`` under
vmap), ``num_steps`` of them per update, then ``epochs`` passes of clipped-surrogate
updates over shuffled minibatches, all in nested ``lax.scan``s (the purejaxrl shape).

The policy's mean is the library's controller (``dream.template``: linear or MLP over
[z, h]), so a trained policy is a flat controller vector that the agent, the real-env
evaluation and a CMA-ES search all take as they are. Continuous actions: a Gaussian over
the controller's raw outputs with a learned state-independent log std, the env's action
being ``action_head`` of the sample (CarRacing's squash is part of the environment to
PPO). Discrete actions: a categorical over the raw outputs as logits. The critic is a
separate tanh MLP over [z, h]. An episode cut by the dream's horizon is treated as
ended (no bootstrap), as the CMA-ES dream scores it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, PRNGKeyArray

from world_models.dream.rollout import Dream
from world_models.models.controller import controller_from_flat, controller_to_flat
from world_models.rl.ppo_core import (
    Transition,
    advantages_of,
    make_optimizer,
    sample_action,
    update_epochs,
)

PPO_DIR = "ppo"  # RUN/ppo: scripts/train_ppo.py's trained policy, a search start


@dataclass(frozen=True)
class PPOSettings:
    num_envs: int = 64
    num_steps: int = 64  # dream steps per env between updates
    updates: int = 100
    epochs: int = 4
    minibatches: int = 4
    learning_rate: float = 3e-4
    max_grad_norm: float = 0.5
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip: float = 0.2
    entropy_coef: float = 0.0
    value_coef: float = 0.5
    critic_hidden: int = 64
    log_std_init: float = -0.5

    def __post_init__(self):
        if min(self.num_envs, self.num_steps, self.updates, self.epochs,
               self.minibatches, self.critic_hidden) <= 0:
            raise ValueError(f"PPO sizes must be > 0: {self}")
        if (self.num_envs * self.num_steps) % self.minibatches:
            raise ValueError("num_envs x num_steps must divide into minibatches")


class ActorCritic(eqx.Module):
    controller: Any  # the library's controller: the policy's mean (or logits)
    log_std: Array
    critic: eqx.nn.MLP

    def __call__(self, obs: Array) -> tuple[Array, Array]:
        return self.controller(obs), self.critic(obs)[0]


def policy_params(net: ActorCritic) -> Array:
    """The trained policy's mean as a flat controller vector (deterministic acting)."""
    return controller_to_flat(net.controller)


class PPOStages(NamedTuple):
    """PPO in the dream cut where it can be checkpointed: ``start(key)`` is the runner
    before the first update, ``advance(runner, n)`` runs ``n`` updates (``n`` static)
    and returns (runner, metrics per update), ``policy(runner)`` is the trained net.
    Advancing by pieces gives what advancing at once gives."""

    start: Callable[[PRNGKeyArray], Any]
    advance: Callable[[Any, int], tuple[Any, dict[str, Array]]]
    policy: Callable[[Any], ActorCritic]


def make_stages(
    dream: Dream, settings: PPOSettings, init_params: Array | None = None
) -> PPOStages:
    """The stages of PPO in ``dream`` from the controller ``init_params`` (default:
    the template's own values); metrics per update: the mean return of the dream
    episodes that ended in it (NaN if none did), their count, reward per step."""
    spec, s = dream.spec, settings
    optimizer = make_optimizer(s)

    def init(key: PRNGKeyArray) -> ActorCritic:
        controller = dream.template
        if init_params is not None:
            controller = controller_from_flat(controller, init_params)
        obs_size = dream.rnn.z_dim + dream.rnn.hidden_size
        critic = eqx.nn.MLP(obs_size, 1, s.critic_hidden, depth=2,
                            activation=jnp.tanh, key=key)
        log_std = jnp.full(spec.action_size, s.log_std_init, jnp.float32)
        return ActorCritic(controller, log_std, critic)

    # the network's non-array part does not depend on the key
    _, static = eqx.partition(init(jax.random.key(0)), eqx.is_array)

    def act(net, obs, key):
        return sample_action(net, obs, key, spec)

    def start(key: PRNGKeyArray):
        init_key, reset_key, key = jax.random.split(key, 3)
        params, _ = eqx.partition(init(init_key), eqx.is_array)
        opt_state = optimizer.init(params)
        obs, states = jax.vmap(dream.reset)(jax.random.split(reset_key, s.num_envs))
        episode_return = jnp.zeros(s.num_envs)
        return (params, opt_state, obs, states, episode_return, key)

    def update(runner, _):
        params, opt_state, obs, states, episode_return, key = runner
        net = eqx.combine(params, static)

        def env_step(carry, _):
            obs, states, episode_return, key = carry
            key, act_key, step_key = jax.random.split(key, 3)
            action, raw, value, log_prob = jax.vmap(act, (None, 0, 0))(
                net, obs, jax.random.split(act_key, s.num_envs))
            next_obs, states, reward, done = jax.vmap(dream.step_auto_reset)(
                jax.random.split(step_key, s.num_envs), states, action)
            episode_return = episode_return + reward
            ended = (jnp.where(done, episode_return, 0.0).sum(), done.sum())
            episode_return = jnp.where(done, 0.0, episode_return)
            step = Transition(obs, raw, log_prob, value, reward,
                              done.astype(jnp.float32))
            return (next_obs, states, episode_return, key), (step, ended)

        (obs, states, episode_return, key), (trajectory, ended) = jax.lax.scan(
            env_step, (obs, states, episode_return, key), None, s.num_steps)
        last_value = jax.vmap(lambda o: net(o)[1])(obs)
        advantages, targets = advantages_of(trajectory, last_value, s)
        key, epoch_key = jax.random.split(key)
        params, opt_state, _ = update_epochs(
            params, static, opt_state, epoch_key, trajectory, advantages, targets,
            s, spec.discrete)
        total, count = (x.sum() for x in ended)
        metrics = dict(
            episode_return=jnp.where(count > 0, total / jnp.maximum(count, 1),
                                     jnp.nan),
            episodes=count,
            reward_per_step=trajectory.reward.mean(),
        )
        return (params, opt_state, obs, states, episode_return, key), metrics

    def advance(runner, updates: int):
        return jax.lax.scan(update, runner, None, updates)

    def policy(runner) -> ActorCritic:
        return eqx.combine(runner[0], static)

    return PPOStages(start, advance, policy)


def make_train(dream: Dream, settings: PPOSettings, init_params: Array | None = None):
    """``train(key) -> (net, metrics)``: all ``settings.updates`` updates of
    ``make_stages`` in one call."""
    stages = make_stages(dream, settings, init_params)

    def train(key: PRNGKeyArray):
        runner, metrics = stages.advance(stages.start(key), settings.updates)
        return stages.policy(runner), metrics

    return train
