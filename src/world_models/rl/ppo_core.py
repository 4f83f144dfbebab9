"""The parts of PPO that do not care where trajectories come from: M's dream
(``dream/ppo``) and the real environment's frames (``rl/ppo_frames``) both call them.

A network is any Equinox module with ``__call__(obs) -> (mean, value)`` and a
``log_std`` array. Continuous actions: a Gaussian over the raw outputs ``mean`` with
the state-independent std ``exp(log_std)``, the env's action being ``action_head`` of
the sample. Discrete actions: a categorical over ``mean`` as logits (``log_std``
unused).
Settings are any object with the fields ``learning_rate``, ``max_grad_norm``,
``gamma``, ``gae_lambda``, ``clip``, ``entropy_coef``, ``value_coef``, ``epochs`` and
``minibatches`` (``PPOSettings``, ``FramePPOSettings``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, PRNGKeyArray

from world_models.envs import EnvSpec
from world_models.models.controller import action_head


class Transition(NamedTuple):
    obs: Array
    raw: Array  # the sampled raw outputs (continuous) or action index (discrete)
    log_prob: Array
    value: Array
    reward: Array
    done: Array


def log_prob(log_std: Array, mean: Array, raw: Array, discrete: bool) -> Array:
    if discrete:
        return jax.nn.log_softmax(mean)[raw]
    std = jnp.exp(log_std)
    return jnp.sum(jax.scipy.stats.norm.logpdf(raw, mean, std))


def entropy(log_std: Array, mean: Array, discrete: bool) -> Array:
    if discrete:
        log_p = jax.nn.log_softmax(mean)
        return -jnp.sum(jnp.exp(log_p) * log_p)
    return jnp.sum(log_std + 0.5 * jnp.log(2 * jnp.pi * jnp.e))


def sample_action(net: Any, obs: Array, key: PRNGKeyArray, spec: EnvSpec):
    """``(env action, raw, value, log_prob)`` of one observation."""
    mean, value = net(obs)
    if spec.discrete:
        raw = jax.random.categorical(key, mean)
        return raw, raw, value, log_prob(net.log_std, mean, raw, True)
    raw = mean + jnp.exp(net.log_std) * jax.random.normal(key, mean.shape)
    return action_head(raw, spec), raw, value, log_prob(net.log_std, mean, raw, False)


def make_optimizer(settings: Any) -> optax.GradientTransformation:
    return optax.chain(optax.clip_by_global_norm(settings.max_grad_norm),
                       optax.adam(settings.learning_rate))


def advantages_of(trajectory: Transition, last_value: Array, settings: Any):
    """GAE over a (time, ...) trajectory: ``(advantages, value targets)``.
    ``last_value``: the value of the observation after the trajectory's last step."""
    def backwards(carry, step: Transition):
        advantage, next_value = carry
        alive = 1.0 - step.done
        delta = step.reward + settings.gamma * next_value * alive - step.value
        advantage = delta + settings.gamma * settings.gae_lambda * alive * advantage
        return (advantage, step.value), advantage

    _, advantages = jax.lax.scan(
        backwards, (jnp.zeros_like(last_value), last_value), trajectory, reverse=True)
    return advantages, advantages + trajectory.value


def loss(params, static, minibatch: Transition, advantages, targets, settings: Any,
         discrete: bool):
    """The clipped-surrogate loss of a minibatch, with its parts for logging."""
    net = eqx.combine(params, static)
    mean, value = jax.vmap(net)(minibatch.obs)
    log_probs = jax.vmap(lambda m, r: log_prob(net.log_std, m, r, discrete))(
        mean, minibatch.raw)
    log_ratio = log_probs - minibatch.log_prob
    ratio = jnp.exp(log_ratio)
    normalised = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    clip = settings.clip
    surrogate = jnp.minimum(
        ratio * normalised, jnp.clip(ratio, 1 - clip, 1 + clip) * normalised)
    policy_loss = -surrogate.mean()
    value_loss = 0.5 * jnp.mean((value - targets) ** 2)
    mean_entropy = jnp.mean(jax.vmap(lambda m: entropy(net.log_std, m, discrete))(mean))
    total = (policy_loss + settings.value_coef * value_loss
             - settings.entropy_coef * mean_entropy)
    approx_kl = jnp.mean(ratio - 1 - log_ratio)
    return total, dict(policy_loss=policy_loss, value_loss=value_loss,
                       entropy=mean_entropy, approx_kl=approx_kl)


def update_epochs(params, static, opt_state, key: PRNGKeyArray, trajectory: Transition,
                  advantages: Array, targets: Array, settings: Any, discrete: bool,
                  unroll: bool = False):
    """``epochs`` passes of clipped-surrogate steps over shuffled minibatches of one
    batch of (time, env) trajectories: ``(params, opt_state, mean of loss parts)``.
    ``unroll``: no loops in the compiled program (XLA's CPU convolutions run many
    times slower inside a loop than outside)."""
    optimizer = make_optimizer(settings)
    batch = advantages.size
    size = batch // settings.minibatches

    def epoch(carry, _):
        params, opt_state, key = carry
        key, shuffle_key = jax.random.split(key)
        order = jax.random.permutation(shuffle_key, batch)
        flat = jax.tree.map(
            lambda x: x.reshape(batch, *x.shape[2:])[order].reshape(
                settings.minibatches, size, *x.shape[2:]),
            (trajectory, advantages, targets))

        def minibatch_step(carry, minibatch):
            params, opt_state = carry
            grads, parts = jax.grad(
                lambda p: loss(p, static, *minibatch, settings, discrete),
                has_aux=True)(params)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), parts

        (params, opt_state), parts = jax.lax.scan(
            minibatch_step, (params, opt_state), flat, unroll=unroll or 1)
        return (params, opt_state, key), parts

    (params, opt_state, _), parts = jax.lax.scan(
        epoch, (params, opt_state, key), None, settings.epochs, unroll=unroll or 1)
    return params, opt_state, jax.tree.map(jnp.mean, parts)
