"""M's prediction of the next step: the per-dimension mixture of Gaussians over
z_{t+1}, the reward and the termination logit, and the mixture's math (density,
sampling at a temperature, mode), for one head or an ensemble of heads."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

_LOG_SQRT_2PI = 0.5 * float(np.log(2.0 * np.pi))


class MDNOutput(NamedTuple):
    """M's prediction for one step (a leading time/batch axis is added by scan/vmap)."""

    logit_pi: Float[Array, "z k"]  # unnormalised mixture logits per latent dimension
    mu: Float[Array, "z k"]
    log_sigma: Float[Array, "z k"]  # already clamped to [log_std_min, log_std_max]
    reward: Float[Array, ""]
    done_logit: Float[Array, ""]


def select_head(outputs: MDNOutput, member: int | Array, axis: int = 0) -> MDNOutput:
    """One head's prediction out of ``heads`` outputs (heads on ``axis``)."""
    return jax.tree.map(lambda x: jnp.take(x, member, axis=axis), outputs)


def pessimistic(outputs: MDNOutput, member: int | Array) -> MDNOutput:
    """Head ``member``'s next-z mixture with the ensemble's lowest reward and highest
    termination logit: the dream pays what the least optimistic head predicts."""
    chosen = select_head(outputs, member)
    return chosen._replace(
        reward=outputs.reward.min(), done_logit=outputs.done_logit.max()
    )


def mdn_log_prob(
    out: MDNOutput, z_next: Float[Array, "... z"]
) -> Float[Array, "... z"]:
    """log p(z_next) under the per-dimension mixture, one value per latent dimension.

    Works for any leading axes shared by ``out`` (…, Z, K) and ``z_next`` (…, Z).
    """
    log_pi = jax.nn.log_softmax(out.logit_pi, axis=-1)
    scaled = (z_next[..., None] - out.mu) * jnp.exp(-out.log_sigma)
    log_normal = -0.5 * scaled**2 - out.log_sigma - _LOG_SQRT_2PI
    return jax.nn.logsumexp(log_pi + log_normal, axis=-1)


def sample_next_z(
    out: MDNOutput, key: PRNGKeyArray, temperature: float | Array = 1.0
) -> Float[Array, " z"]:
    """Draw z_{t+1}: per dim a component ~ softmax(logits/τ), then N(mu, (σ√τ)²)."""
    component_key, noise_key = jax.random.split(key)
    component = jax.random.categorical(
        component_key, out.logit_pi / temperature, axis=-1
    )
    mu = jnp.take_along_axis(out.mu, component[..., None], axis=-1)[..., 0]
    log_sigma = jnp.take_along_axis(out.log_sigma, component[..., None], axis=-1)[
        ..., 0
    ]
    noise = jax.random.normal(noise_key, mu.shape, mu.dtype)
    return mu + jnp.exp(log_sigma) * jnp.sqrt(temperature) * noise


def mode_next_z(out: MDNOutput) -> Float[Array, " z"]:
    """Mean of the most likely component per dimension (the τ -> 0 limit)."""
    component = jnp.argmax(out.logit_pi, axis=-1)
    return jnp.take_along_axis(out.mu, component[..., None], axis=-1)[..., 0]
