"""The dream: controllers act inside M's imagination, with no environment in the loop.

``Dream.rollout`` is one candidate's episode, a pure function of (controller
parameters, key): a start latent is drawn from V's posterior at the first frame of a
real episode, the hidden state starts at zero (exactly like the acting agent at reset),
then M is stepped with temperature τ and its predicted rewards are summed up to the
horizon or until its termination head fires. ``Dream.evaluate`` vmaps that over
rollouts and candidates.

Termination: the dream ends at the first step whose termination probability
sigmoid(done_logit) exceeds ``done_threshold`` (0.5, the paper's Doom rule). That step
pays M's ``terminal_reward`` (the real env also pays a reward on its terminating step,
CarRacing's -100 for leaving the playfield); nothing after it counts. A threshold rather than a Bernoulli draw keeps a badly calibrated,
uniformly small termination probability from killing dreams at random.

Common random numbers: rollout r of every candidate uses the same key, hence the same
start state, the same noise sequence (component choice and Gaussian noise per step) and
the same dropout mask.

Dropout (``dropout`` > 0): each rollout draws one mask over the h that M's head reads
(``mdnrnn.dropout_mask``), so every dream is played in a slightly different world model
and a controller cannot tune itself to one model's quirks. An ensemble (M with several
heads on one LSTM) does the same explicitly: each rollout draws a head, and with
``ensemble="pessimistic"`` it is paid the lowest reward and ended by the highest
termination logit of all heads.
"""

from __future__ import annotations

import os
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from world_models.controller import Controller, act, controller_from_flat
from world_models.data import list_episodes, load_latents
from world_models.envs import EnvSpec
from world_models.mdnrnn import (
    MDNRNN,
    action_to_input,
    dropout_mask,
    pessimistic,
    sample_next_z,
    select_head,
)


class Dream(eqx.Module):
    """M's dream environment with the start-state pool and a controller template."""

    rnn: MDNRNN
    start_mu: Float[Array, "n z"]
    start_logvar: Float[Array, "n z"]
    template: Controller  # structure of the controller; its values are never used
    spec: EnvSpec = eqx.field(static=True)
    horizon: int = eqx.field(static=True)
    temperature: float = eqx.field(static=True)
    dropout: float = eqx.field(static=True, default=0.0)
    ensemble: str = eqx.field(static=True, default="sample")
    done_threshold: float = eqx.field(static=True, default=0.5)

    def __check_init__(self):
        if self.start_mu.ndim != 2 or self.start_mu.shape != self.start_logvar.shape:
            raise ValueError(
                f"start_mu/start_logvar must both be (N, Z); got {self.start_mu.shape} "
                f"and {self.start_logvar.shape}"
            )
        if self.start_mu.shape[1] != self.rnn.z_dim:
            raise ValueError(
                f"start latents have Z={self.start_mu.shape[1]} but M "
                f"expects z_dim={self.rnn.z_dim}"
            )
        if self.horizon <= 0 or self.temperature <= 0:
            raise ValueError(
                f"horizon ({self.horizon}) and temperature "
                f"({self.temperature}) must be > 0"
            )
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dream dropout must be in [0, 1), got {self.dropout}")

    def sample_start(self, key: PRNGKeyArray) -> Float[Array, " z"]:
        """z_0 ~ N(mu, exp(logvar)) of a uniformly chosen real episode start."""
        index_key, noise_key = jax.random.split(key)
        index = jax.random.randint(index_key, (), 0, self.start_mu.shape[0])
        noise = jax.random.normal(noise_key, (self.start_mu.shape[1],))
        return self.start_mu[index] + jnp.exp(0.5 * self.start_logvar[index]) * noise

    def rollout(
        self, params: Float[Array, " d"], key: PRNGKeyArray
    ) -> tuple[Float[Array, ""], Float[Array, ""]]:
        """(dream return, steps lived) of the controller with flat ``params``."""
        controller = controller_from_flat(self.template, params)
        start_key, noise_key, mask_key, member_key = jax.random.split(key, 4)
        head_mask = dropout_mask(mask_key, self.rnn.hidden_size, self.dropout)
        member = jax.random.randint(member_key, (), 0, self.rnn.num_heads)
        done_logit_threshold = jnp.log(self.done_threshold / (1 - self.done_threshold))

        def step(carry, t):
            state, z, alive, total, length = carry
            action = act(controller, z, state[0], self.spec)
            state, heads = self.rnn.step_heads(
                state, z, action_to_input(action, self.spec), head_mask
            )
            out = (pessimistic if self.ensemble == "pessimistic" else select_head)(
                heads, member
            )
            ends = out.done_logit > done_logit_threshold
            reward = jnp.where(ends, self.rnn.terminal_reward, out.reward)
            total = total + jnp.where(alive, reward, 0.0)
            length = length + alive
            alive = alive & ~ends
            z = sample_next_z(out, jax.random.fold_in(noise_key, t), self.temperature)
            return (state, z, alive, total, length), None

        carry = (
            self.rnn.initial_state(),
            self.sample_start(start_key),
            jnp.array(True),
            jnp.array(0.0),
            jnp.array(0),
        )
        (_, _, _, total, length), _ = jax.lax.scan(
            step, carry, jnp.arange(self.horizon)
        )
        return total, length

    def evaluate(
        self,
        population: Float[Array, "p d"],
        key: PRNGKeyArray,
        rollouts: int,
        chunk_size: int = 0,
    ) -> tuple[Float[Array, "p r"], Float[Array, "p r"]]:
        """Returns and lengths of every candidate over ``rollouts`` shared dreams.

        ``chunk_size`` (candidates x rollouts per vmapped batch; 0 = all at once) splits
        the population into sequential chunks with ``lax.map``.
        """
        keys = jax.random.split(key, rollouts)
        per_candidate = jax.vmap(self.rollout, in_axes=(None, 0))

        def candidates(params):
            return jax.vmap(per_candidate, in_axes=(0, None))(params, keys)

        size = population.shape[0]
        per_chunk = max(1, chunk_size // rollouts) if chunk_size else size
        if per_chunk >= size:
            return candidates(population)
        num_chunks = -(-size // per_chunk)
        padding = num_chunks * per_chunk - size
        padded = jnp.concatenate([population, jnp.repeat(population[-1:], padding, 0)])
        chunks = padded.reshape(num_chunks, per_chunk, -1)
        returns, lengths = jax.lax.map(candidates, chunks)
        return (
            returns.reshape(-1, rollouts)[:size],
            lengths.reshape(-1, rollouts)[:size],
        )


def load_dream_starts(
    run_dir: str | os.PathLike,
) -> tuple[np.ndarray, np.ndarray]:
    """(mu, logvar) of the first frame of each latent file under ``run_dir``/latents."""
    folder = Path(run_dir) / "latents"
    if not folder.is_dir():
        raise FileNotFoundError(f"no latent folder {folder}; run process_data.py first")
    paths = list_episodes(folder)
    if not paths:
        raise FileNotFoundError(f"no latent files under {folder}; run process_data.py")
    mus, logvars = [], []
    for path in paths:
        latents = load_latents(path)
        mus.append(latents["mu"][0])
        logvars.append(latents["logvar"][0])
    return np.stack(mus).astype(np.float32), np.stack(logvars).astype(np.float32)


def make_dream(
    rnn: MDNRNN,
    starts: tuple[np.ndarray, np.ndarray],
    template: Controller,
    spec: EnvSpec,
    horizon: int,
    temperature: float,
    dropout: float = 0.0,
    ensemble: str = "sample",
) -> Dream:
    mu, logvar = starts
    return Dream(
        rnn,
        jnp.asarray(mu),
        jnp.asarray(logvar),
        template,
        spec,
        horizon,
        float(temperature),
        float(dropout),
        ensemble,
    )
