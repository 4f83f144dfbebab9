"""The dream: controllers act inside M's imagination, with no environment in the loop.

``Dream.rollout`` is one candidate's episode, a pure function of (controller
parameters, key): a start is drawn from the pool — a latent from V's posterior at a
frame of a real episode, with M's state at that frame — then M is stepped with
temperature τ and its predicted rewards are summed up to the horizon or until its
termination head fires. ``Dream.population_returns`` vmaps that over rollouts and
candidates.

Starts (``dream/starts.py``): by default the first frame of every real episode with
the state at zero, exactly like the acting agent at reset. With ``branch_every`` = k > 0
the pool also holds every k-th frame of every episode, with the state M reaches by
reading the real episode up to that frame (teacher forcing on V's posterior means).
Dreams branched off real data this way, with a short horizon, keep M close to the
states it was trained on: its errors have few steps to compound, and a controller
cannot drive the dream far into states no real episode visited before the dream ends
(the short model rollouts from real states of model-based RL).

Termination: the dream ends at the first step whose termination probability
sigmoid(done_logit) exceeds ``done_threshold`` (0.5, the paper's Doom rule). That step
pays M's ``terminal_reward`` (the real env also pays a reward on its terminating step,
CarRacing's -100 for leaving the playfield); nothing after it counts. A threshold
rather than a Bernoulli draw keeps a badly calibrated, uniformly small termination
probability from killing dreams at random.

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

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from world_models.dream.devices import device_count, split_candidates
from world_models.dream.starts import DreamStarts
from world_models.envs import EnvSpec
from world_models.models.controller import (
    Controller,
    act,
    controller_from_flat,
    head_bounds,
)
from world_models.models.mdnrnn import (
    MDNRNN,
    action_to_input,
    dropout_mask,
    with_matmul_dtype,
)
from world_models.models.mixture import pessimistic, sample_next_z, select_head

ACTION_NOISE_STREAM = 4  # folded into a rollout's key: apart from its 4 split keys


class DreamState(NamedTuple):
    """A dream episode's state: M's (h, c), the z the controller sees, the steps taken,
    and what the episode drew at reset (dropout mask, ensemble member)."""

    rnn_state: tuple[Array, Array]
    z: Float[Array, " z"]
    t: Array
    head_mask: Array
    member: Array


def _observe(state: DreamState) -> Float[Array, " obs"]:
    return jnp.concatenate([state.z, state.rnn_state[0]])


class Dream(eqx.Module):
    """M's dream with its start-state pool and a controller template.

    As an environment (gymnax-style, pure): ``reset(key) -> (obs, state)``,
    ``step(key, state, action) -> (obs, state, reward, done)`` and ``step_auto_reset``
    for batched learners; the observation is [z, h], what the controller reads.
    ``rollout`` plays a flat controller through the same ``reset`` and ``step``."""

    rnn: MDNRNN
    start_mu: Float[Array, "n z"]
    start_logvar: Float[Array, "n z"]
    start_h: Float[Array, "n hidden"]
    start_c: Float[Array, "n hidden"]
    template: Controller  # structure of the controller; its values are never used
    spec: EnvSpec = eqx.field(static=True)
    horizon: int = eqx.field(static=True)
    temperature: float = eqx.field(static=True)
    dropout: float = eqx.field(static=True, default=0.0)
    ensemble: str = eqx.field(static=True, default="sample")
    done_threshold: float = eqx.field(static=True, default=0.5)
    action_noise: float = eqx.field(static=True, default=0.0)  # the controller's σ
    # M's LSTM as batch-major GEMMs under vmap (``MDNRNN.advance``); False is the
    # layout the dream had before, kept for benchmarks/dream.py's side-by-side run.
    batch_major: bool = eqx.field(static=True, default=True)

    def __check_init__(self):
        if self.start_mu.ndim != 2 or self.start_mu.shape != self.start_logvar.shape:
            raise ValueError(
                f"start_mu/start_logvar must both be (N, Z); got {self.start_mu.shape} "
                f"and {self.start_logvar.shape}"
            )
        if self.start_h.shape != (self.start_mu.shape[0], self.rnn.hidden_size) or (
            self.start_c.shape != self.start_h.shape
        ):
            raise ValueError(
                f"start states must be ({self.start_mu.shape[0]}, "
                f"{self.rnn.hidden_size}); got {self.start_h.shape} and "
                f"{self.start_c.shape}"
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
        if not 0 <= self.action_noise < 1:
            raise ValueError(f"action noise must be in [0, 1), got {self.action_noise}")

    def sample_start(
        self, key: PRNGKeyArray
    ) -> tuple[tuple[Array, Array], Float[Array, " z"]]:
        """M's state and z_0 ~ N(mu, exp(logvar)) at a uniformly chosen start."""
        index_key, noise_key = jax.random.split(key)
        index = jax.random.randint(index_key, (), 0, self.start_mu.shape[0])
        noise = jax.random.normal(noise_key, (self.start_mu.shape[1],))
        z = self.start_mu[index] + jnp.exp(0.5 * self.start_logvar[index]) * noise
        return (self.start_h[index], self.start_c[index]), z

    def rollout(
        self, params: Float[Array, " d"], key: PRNGKeyArray
    ) -> tuple[Float[Array, ""], Float[Array, ""]]:
        """(dream return, steps lived) of the controller with flat ``params``."""
        (total, length), _ = self._play(params, key, record=False)
        return total, length

    def trajectory(
        self, params: Float[Array, " d"], key: PRNGKeyArray
    ) -> tuple[Float[Array, "t z"], Float[Array, " t"], Float[Array, " t"]]:
        """The latents z_0 .. z_{T-1} the controller saw in the dream ``rollout`` plays
        with the same key, each step's reward and whether the dream was still alive."""
        _, (zs, rewards, alive) = self._play(params, key, record=True)
        return zs, rewards, alive

    def reset(self, key: PRNGKeyArray) -> tuple[Float[Array, " obs"], DreamState]:
        """A dream episode begins: observation [z, h] and the state, from ``key``
        (the start, the dropout mask and the ensemble member are drawn here)."""
        # the second key is the rollout's noise key (``_play``): the same split as
        # before the dream was an environment, so its returns are unchanged
        start_key, _, mask_key, member_key = jax.random.split(key, 4)
        rnn_state, z = self.sample_start(start_key)
        state = DreamState(
            rnn_state,
            z,
            jnp.array(0),
            dropout_mask(mask_key, self.rnn.hidden_size, self.dropout),
            jax.random.randint(member_key, (), 0, self.rnn.num_heads),
        )
        return _observe(state), state

    def step(
        self, key: PRNGKeyArray, state: DreamState, action: Array
    ) -> tuple[Float[Array, " obs"], DreamState, Float[Array, ""], Array]:
        """One step of M under ``action``: (observation, state, reward, done). ``key``
        draws the next z. Done: M's termination fired (that step pays M's terminal
        reward) or the horizon is reached."""
        inputs = action_to_input(action, self.spec)
        rnn_state, heads = self.rnn.step_heads(
            state.rnn_state, state.z, inputs, state.head_mask, self.batch_major
        )
        out = (pessimistic if self.ensemble == "pessimistic" else select_head)(
            heads, state.member
        )
        threshold = jnp.log(self.done_threshold / (1 - self.done_threshold))
        terminated = out.done_logit > threshold
        reward = jnp.where(terminated, self.rnn.terminal_reward, out.reward)
        z = sample_next_z(out, key, self.temperature)
        state = state._replace(rnn_state=rnn_state, z=z, t=state.t + 1)
        return _observe(state), state, reward, terminated | (state.t >= self.horizon)

    def step_auto_reset(
        self, key: PRNGKeyArray, state: DreamState, action: Array
    ) -> tuple[Float[Array, " obs"], DreamState, Float[Array, ""], Array]:
        """``step``, and where it ends the episode, the observation and state of a new
        one (reset from ``key``): the reward and done are the ended episode's."""
        step_key, reset_key = jax.random.split(key)
        obs, state, reward, done = self.step(step_key, state, action)
        reset_obs, reset_state = self.reset(reset_key)
        state = jax.tree.map(lambda a, b: jnp.where(done, a, b), reset_state, state)
        return jnp.where(done, reset_obs, obs), state, reward, done

    def explore(self, action: Array, key: PRNGKeyArray) -> Array:
        """``action`` as the controller plays it with ``action_noise`` (the agent's
        ``explore_controller`` rule): Gaussian and clipped, or epsilon-random."""
        if not self.action_noise:
            return action
        if self.spec.discrete:
            pick_key, action_key = jax.random.split(key)
            random_action = jax.random.randint(action_key, (), 0, self.spec.action_size)
            explores = jax.random.uniform(pick_key) < self.action_noise
            return jnp.where(explores, random_action, action).astype(action.dtype)
        low, high = head_bounds(self.spec)
        draw = jax.random.normal(key, action.shape)
        return jnp.clip(action + self.action_noise * draw, low, high)

    def _play(self, params: Array, key: PRNGKeyArray, record: bool):
        controller = controller_from_flat(self.template, params)
        noise_key = jax.random.split(key, 4)[1]
        action_key = jax.random.fold_in(key, ACTION_NOISE_STREAM)

        def step(carry, t):
            state, alive, total, length = carry
            action = self.explore(
                act(controller, state.z, state.rnn_state[0], self.spec),
                jax.random.fold_in(action_key, t),
            )
            _, next_state, reward, done = self.step(
                jax.random.fold_in(noise_key, t), state, action
            )
            record_step = (state.z, reward, alive) if record else None
            total = total + jnp.where(alive, reward, 0.0)
            length = length + alive
            return (next_state, alive & ~done, total, length), record_step

        _, state = self.reset(key)
        carry = (state, jnp.array(True), jnp.array(0.0), jnp.array(0))
        (_, _, total, length), steps = jax.lax.scan(
            step, carry, jnp.arange(self.horizon)
        )
        return (total, length), steps

    def population_returns(
        self,
        population: Float[Array, "p d"],
        key: PRNGKeyArray,
        rollouts: int,
        chunk_size: int = 0,
    ) -> tuple[Float[Array, "p r"], Float[Array, "p r"]]:
        """Returns and lengths of every candidate over ``rollouts`` shared dreams.

        ``chunk_size`` (candidates x rollouts per vmapped batch; 0 = all at once) splits
        the population into sequential chunks with ``lax.map``. With several devices
        each chunk is split over them (``dream/devices.py``), padded to a multiple of
        their number by repeating the last candidate; the padding is cut off.
        """
        keys = jax.random.split(key, rollouts)
        per_candidate = jax.vmap(self.rollout, in_axes=(None, 0))

        def candidates(params):
            params = split_candidates(params)
            return jax.vmap(per_candidate, in_axes=(0, None))(params, keys)

        size = population.shape[0]
        per_chunk = max(1, chunk_size // rollouts) if chunk_size else size
        devices = device_count()
        per_chunk = -(-min(per_chunk, size) // devices) * devices
        if per_chunk == size:
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


def make_dream(
    rnn: MDNRNN,
    starts: DreamStarts | tuple[np.ndarray, np.ndarray],
    template: Controller,
    spec: EnvSpec,
    horizon: int,
    temperature: float,
    dropout: float = 0.0,
    ensemble: str = "sample",
    matmul_dtype: str = "float32",
    action_noise: float = 0.0,
) -> Dream:
    """The dream of ``rnn`` from ``starts``; ``matmul_dtype`` "bfloat16" stores M's
    weights for bfloat16 matmuls (``mdnrnn.with_matmul_dtype``)."""
    starts = DreamStarts(*starts)
    zeros = np.zeros((starts.mu.shape[0], rnn.hidden_size), np.float32)
    return Dream(
        with_matmul_dtype(rnn, matmul_dtype),
        jnp.asarray(starts.mu),
        jnp.asarray(starts.logvar),
        jnp.asarray(zeros if starts.h is None else starts.h),
        jnp.asarray(zeros if starts.c is None else starts.c),
        template,
        spec,
        horizon,
        float(temperature),
        float(dropout),
        ensemble,
        action_noise=float(action_noise),
    )
