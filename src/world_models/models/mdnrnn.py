"""MDN-RNN (M): an LSTM over [z_t, a_t], a mixture-density head per latent dimension.

Alignment: from (z_t, a_t) and the state h_t, M predicts z_{t+1}, the reward r_t that
step(a_t) returned and terminated_t. ``step`` is the recurrent function of the dream,
the acting agent and the prediction-error tools; ``__call__`` runs it over a sequence;
training runs the same cell over a batch through ``sequences`` (``models/lstm``).

Mixture: K components for EACH latent dimension, with their own logits, means and
log-stds (output width 3*K*Z), then a scalar reward head and a termination logit. The
reward of a terminating step is one learned scalar (``terminal_reward``).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from world_models.config import Config, RNNConfig
from world_models.envs import EnvSpec, get_spec
from world_models.models.lstm import lstm_sequences
from world_models.models.mixture import MDNOutput, sample_next_z, select_head

LSTMState = tuple[Float[Array, " hidden"], Float[Array, " hidden"]]


class MDNRNN(eqx.Module):
    cell: eqx.nn.LSTMCell
    head: eqx.nn.Linear
    # The reward paid on a terminating step (CarRacing's -100 for leaving the
    # playfield), learned apart from the per-step reward head: one rare, huge target
    # inside the squared reward loss drags every prediction near it down.
    terminal_reward: Float[Array, ""]
    z_dim: int = eqx.field(static=True)
    action_size: int = eqx.field(static=True)
    hidden_size: int = eqx.field(static=True)
    num_mixtures: int = eqx.field(static=True)
    num_heads: int = eqx.field(static=True)
    log_std_min: float = eqx.field(static=True)
    log_std_max: float = eqx.field(static=True)

    def __init__(
        self,
        z_dim: int,
        action_size: int,
        hidden_size: int = 256,
        num_mixtures: int = 5,
        *,
        key: PRNGKeyArray,
        log_std_min: float = RNNConfig.log_std_min,
        log_std_max: float = RNNConfig.log_std_max,
        num_heads: int = 1,
    ):
        if min(z_dim, action_size, hidden_size, num_mixtures, num_heads) <= 0:
            raise ValueError(
                f"MDNRNN sizes must be positive: z_dim={z_dim}, action_size="
                f"{action_size}, hidden_size={hidden_size}, num_mixtures={num_mixtures}"
                f", num_heads={num_heads}"
            )
        if not log_std_min < log_std_max:
            raise ValueError(f"log_std_min {log_std_min} must be < {log_std_max}")
        cell_key, head_key = jax.random.split(key)
        self.cell = eqx.nn.LSTMCell(z_dim + action_size, hidden_size, key=cell_key)
        # Per head: 3*K*Z mixture parameters, then the reward and the termination logit.
        self.head = eqx.nn.Linear(
            hidden_size, num_heads * (3 * num_mixtures * z_dim + 2), key=head_key
        )
        self.z_dim = z_dim
        self.action_size = action_size
        self.hidden_size = hidden_size
        self.num_mixtures = num_mixtures
        self.num_heads = num_heads
        self.terminal_reward = jnp.zeros((), jnp.float32)
        self.log_std_min = float(log_std_min)
        self.log_std_max = float(log_std_max)

    def initial_state(self) -> LSTMState:
        zeros = jnp.zeros((self.hidden_size,), jnp.float32)
        return zeros, zeros

    def advance(
        self, state: LSTMState, z: Array, action: Array, batch_major: bool = False
    ) -> LSTMState:
        """The LSTM step alone: the state after reading (z_t, a_t), no prediction.

        ``batch_major``: x·Wᵀ, not eqx.nn.LSTMCell's W·x, so that under vmap XLA's
        CPU backend writes batch-major GEMMs: the dream's (the same returns to the
        bit, 1.2-2.2x faster, docs/benchmarks.md). Training and the acting agent keep
        W·x, which rounds differently there (every recorded run used it).
        """
        x = jnp.concatenate([z, action.astype(z.dtype)])
        if not batch_major:
            return self.cell(x, state)
        (h, c), cell, rows = state, self.cell, (((0,), (1,)), ((), ()))
        lin = _dot(x, cell.weight_ih, rows) + _dot(h, cell.weight_hh, rows)
        i, f, g, o = jnp.split(lin + cell.bias, 4)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jax.nn.tanh(g)
        return jax.nn.sigmoid(o) * jax.nn.tanh(c), c

    def heads(
        self, h: Float[Array, " hidden"], head_mask: Array | None = None
    ) -> MDNOutput:
        """Every head's prediction from h, with a leading (num_heads,) axis."""
        h = h if head_mask is None else h * head_mask
        raw = _dot(self.head.weight, h, (((1,), (0,)), ((), ()))) + self.head.bias
        raw = raw.reshape(self.num_heads, -1)
        mixture = raw[:, :-2].reshape(self.num_heads, 3, self.z_dim, self.num_mixtures)
        log_sigma = jnp.clip(mixture[:, 2], self.log_std_min, self.log_std_max)
        return MDNOutput(
            mixture[:, 0], mixture[:, 1], log_sigma, raw[:, -2], raw[:, -1]
        )

    def step_heads(
        self,
        state: LSTMState,
        z: Float[Array, " z"],
        action: Float[Array, " a"],
        head_mask: Float[Array, " hidden"] | None = None,
        batch_major: bool = False,
    ) -> tuple[LSTMState, MDNOutput]:
        """``step`` with every head's prediction (leading (num_heads,) axis);
        ``batch_major`` as in ``advance``."""
        state = self.advance(state, z, action, batch_major)
        return state, self.heads(state[0], head_mask)

    def step(
        self,
        state: LSTMState,
        z: Float[Array, " z"],
        action: Float[Array, " a"],
        head_mask: Float[Array, " hidden"] | None = None,
        member: int | Array = 0,
    ) -> tuple[LSTMState, MDNOutput]:
        """One step: (h_t, z_t, a_t) -> (h_{t+1}, prediction of z_{t+1}, r_t, done_t).

        ``action`` is the float vector from ``action_to_input`` (one-hot if discrete).
        ``head_mask`` (see ``dropout_mask``) multiplies the h the head reads; the
        returned state is never masked. ``member`` picks one head of an ensemble.
        """
        state, outputs = self.step_heads(state, z, action, head_mask)
        return state, select_head(outputs, member)

    def __call__(
        self,
        zs: Float[Array, "t z"],
        actions: Float[Array, "t a"],
        state: LSTMState | None = None,
        head_mask: Float[Array, " hidden"] | None = None,
        all_heads: bool = False,
    ) -> tuple[LSTMState, MDNOutput]:
        """``step`` over a sequence; outputs carry a leading time axis (then a heads
        axis with ``all_heads``, else head 0's).

        Only the LSTM recurrence is sequential: the head runs once over every step's h.
        """
        if state is None:
            state = self.initial_state()

        def advance(carry, x):
            carry = self.advance(carry, *x)
            return carry, carry[0]

        state, hs = jax.lax.scan(advance, state, (zs, actions))
        outputs = jax.vmap(lambda h: self.heads(h, head_mask))(hs)
        return state, outputs if all_heads else select_head(outputs, 0, axis=1)

    def sequences(
        self,
        zs: Float[Array, "b t z"],
        actions: Float[Array, "b t a"],
        head_masks: Float[Array, "b hidden"],
    ) -> MDNOutput:
        """``__call__`` from the initial state over a batch of sequences, every
        head's outputs (leading batch, time, heads axes), each sequence's head reading
        h through its own mask. For training: the LSTM runs as ``lstm_sequences``,
        whose weight gradients are one GEMM each (batch-major, so its sums round
        differently from ``__call__``'s)."""
        xs = jnp.concatenate([zs, actions.astype(zs.dtype)], axis=-1)
        zeros = jnp.zeros((zs.shape[0], self.hidden_size), zs.dtype)
        hs = lstm_sequences(self.cell, xs, (zeros, zeros))
        over_time = jax.vmap(self.heads, in_axes=(0, None))
        return jax.vmap(over_time)(hs, head_masks)

    def open_loop(
        self,
        zs: Float[Array, "t z"],
        actions: Float[Array, "t a"],
        open_from: int | Array,
        key: PRNGKeyArray,
        temperature: float,
        head_mask: Float[Array, " hidden"] | None = None,
    ) -> MDNOutput:
        """Every head's outputs over the sequence (leading time, heads axes), M reading
        ``zs`` before step ``open_from`` and from there on its own draw of z_t from head
        0's prediction at the step before (at ``temperature``), as in the dream. The
        draws carry no gradient; ``open_from`` >= len(zs) is ``__call__``'s teacher
        forcing."""

        def step(carry, x):
            state, own = carry
            z, action, t = x
            state, heads = self.step_heads(
                state, jnp.where(t >= open_from, own, z), action, head_mask
            )
            own = sample_next_z(
                select_head(heads, 0), jax.random.fold_in(key, t), temperature
            )
            return (state, jax.lax.stop_gradient(own)), heads

        steps = jnp.arange(zs.shape[0])
        _, outputs = jax.lax.scan(
            step, (self.initial_state(), zs[0]), (zs, actions, steps)
        )
        return outputs


def _dot(a: Array, b: Array, dims) -> Array:
    """``lax.dot_general`` in the operands' lowest precision, summed in float32."""
    low = min(a.dtype, b.dtype, key=lambda dtype: jnp.finfo(dtype).bits)
    a, b = a.astype(low), b.astype(low)
    return jax.lax.dot_general(a, b, dims, preferred_element_type=jnp.float32)


def with_matmul_dtype(rnn: MDNRNN, dtype: str) -> MDNRNN:
    """``rnn`` with its LSTM and head weights stored in ``dtype``: "bfloat16" makes
    the batch-major step's matmuls bfloat16 GEMMs (AMX on recent Xeons, tensor cores
    on GPUs): the dream 1.6-1.9x faster on this CPU, inputs at ~3 significant digits."""
    def weights(m):
        return m.cell.weight_ih, m.cell.weight_hh, m.head.weight

    return eqx.tree_at(weights, rnn, [w.astype(dtype) for w in weights(rnn)])


def dropout_mask(
    key: PRNGKeyArray, hidden_size: int, rate: float
) -> Float[Array, " hidden"]:
    """Inverted-dropout mask over h: each unit kept with probability 1 - rate and then
    scaled by 1 / (1 - rate), so M's expected prediction is unchanged. One mask serves a
    whole sequence (a training window, a dream), making each one a slightly different
    world model rather than noise that averages out within a rollout."""
    if rate == 0:
        return jnp.ones((hidden_size,), jnp.float32)
    keep = jax.random.bernoulli(key, 1.0 - rate, (hidden_size,))
    return keep.astype(jnp.float32) / (1.0 - rate)


def action_to_input(action: Array | np.ndarray | int, spec: EnvSpec) -> Array:
    """The action as M's float input: one-hot for discrete envs, float32 otherwise.

    Accepts leading batch/time axes: (..., A) continuous, (...) integer discrete.
    """
    if spec.discrete:
        return jax.nn.one_hot(jnp.asarray(action), spec.action_size, dtype=jnp.float32)
    action = jnp.asarray(action, jnp.float32)
    if action.shape[-1:] != (spec.action_size,):
        raise ValueError(
            f"{spec.env_id}: expected actions with last axis {spec.action_size}, "
            f"got shape {action.shape}"
        )
    return action


def rnn_from_config(config: Config, *, key: PRNGKeyArray) -> MDNRNN:
    """An untrained MDNRNN sized from the run config (z from V, actions from env)."""
    rnn = config.rnn
    return MDNRNN(
        config.vae.z_dim,
        get_spec(config.env_id).action_input_size,
        rnn.hidden_size,
        rnn.num_mixtures,
        key=key,
        log_std_min=rnn.log_std_min,
        log_std_max=rnn.log_std_max,
        num_heads=rnn.heads,
    )
