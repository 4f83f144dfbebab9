"""M's loss and its jitted training step.

Inputs and targets: z_t for t = 0..L is drawn once per window from the posterior
N(mu_t, exp(logvar_t)); M reads z_0..z_{L-1} and is scored on the SAME draws z_1..z_L,
as in the paper's code. Targets therefore match the distribution of the inputs M is fed
in the dream, rather than the sharper posterior means.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array

from world_models.config_sections import RNNConfig
from world_models.envs import EnvSpec
from world_models.models.mdnrnn import MDNRNN, action_to_input, dropout_mask
from world_models.models.mixture import mdn_log_prob
from world_models.models.vae import sample_posterior

Batch = dict[str, Any]


def asymmetric_reward_error(
    predicted: Array, target: Array, optimism_weight: float
) -> Array:
    """Squared error weighted ``optimism_weight`` where predicted > target, 1 below."""
    error = predicted - target
    weight = jnp.where(error > 0, optimism_weight, 1.0)
    return weight * error**2


def termination_bce(done_logit: Array, terminated: Array) -> Array:
    """Binary cross-entropy of the termination logit, elementwise."""
    target = terminated.astype(done_logit.dtype)
    return (
        jax.nn.softplus(done_logit) - target * done_logit
    )  # = -t log σ(x) - (1-t) log(1-σ(x))


def make_optimizer(rnn: RNNConfig) -> optax.GradientTransformation:
    return optax.chain(
        optax.clip_by_global_norm(rnn.grad_clip), optax.adam(rnn.learning_rate)
    )


def _masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
    return (values * mask).sum() / jnp.maximum(mask.sum(), 1.0)


def predict_batch(
    model: MDNRNN,
    batch: Batch,
    spec: EnvSpec,
    key: jax.Array,
    dropout: float = 0.0,
    open_loop_fraction: float = 0.0,
    open_loop_temperature: float = 1.0,
):
    """Sample z from the posterior and run M over every window of the batch, each
    window with its own head dropout mask (as each dream has its own). A fraction
    ``open_loop_fraction`` of the windows (each a coin flip) is read open loop from a
    uniform step 1..L-1 on (``MDNRNN.open_loop``).

    Returns (outputs with leading (B, L, heads), z targets (B, L, 1, Z)).
    """
    z_key, mask_key = jax.random.split(key)
    mu, logvar = batch["mu"], batch["logvar"]
    z = sample_posterior(mu, logvar, z_key)
    actions = action_to_input(batch["actions"], spec)
    masks = jax.vmap(dropout_mask, in_axes=(0, None, None))(
        jax.random.split(mask_key, mu.shape[0]), model.hidden_size, dropout
    )
    if not open_loop_fraction:
        return model.sequences(z[:, :-1], actions, masks), z[:, 1:, None]
    windows, length = actions.shape[:2]
    coin_key, start_key, draw_key = jax.random.split(jax.random.fold_in(key, 2), 3)
    opens = jax.random.bernoulli(coin_key, open_loop_fraction, (windows,))
    starts = jax.random.randint(start_key, (windows,), 1, max(length, 2))
    open_from = jnp.where(opens, starts, length)
    outputs = jax.vmap(model.open_loop, in_axes=(0, 0, 0, 0, None, 0))(
        z[:, :-1], actions, open_from, jax.random.split(draw_key, windows),
        open_loop_temperature, masks,
    )
    return outputs, z[:, 1:, None]


def sequence_loss(
    model: MDNRNN, batch: Batch, key: jax.Array, rnn: RNNConfig, spec: EnvSpec
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Total loss = NLL + reward_weight * reward loss + done_weight * termination BCE.

    The NLL is per latent dimension (mean over Z and real steps), as in the paper. The
    BCE weighs terminated steps ``done_pos_weight`` times a non-terminal one. With
    several heads, each weighs the windows by its own Exp(1) draw (a Bayesian
    bootstrap), so the heads disagree where the data leaves M unsure.
    """
    outputs, targets = predict_batch(
        model, batch, spec, key, rnn.dropout, rnn.open_loop_fraction,
        rnn.open_loop_temperature,
    )
    mask = batch["mask"][..., None]  # (B, L, 1): broadcast over the heads
    if model.num_heads > 1:
        weights = jax.random.exponential(
            jax.random.fold_in(key, 1), (mask.shape[0], 1, model.num_heads)
        )
        mask = mask * weights
    rewards = batch["reward_targets"][..., None]
    terminated = batch["terminated"][..., None]
    nll = _masked_mean(-mdn_log_prob(outputs, targets).mean(-1), mask)
    # Per-step rewards on the steps that go on; terminal_reward is set from the data.
    reward = _masked_mean(
        asymmetric_reward_error(outputs.reward, rewards, rnn.optimism_weight),
        mask * ~terminated,
    )
    step_weight = jnp.where(terminated, rnn.done_pos_weight, 1.0)
    done = _masked_mean(
        step_weight * termination_bce(outputs.done_logit, terminated), mask
    )
    total = nll + rnn.reward_weight * reward + rnn.done_weight * done
    return total, dict(loss=total, nll=nll, reward_loss=reward, done_loss=done)


def terminal_reward(rewards: np.ndarray, optimism_weight: float) -> float:
    """The constant minimising the asymmetric reward loss over terminating steps'
    ``rewards`` (an expectile: over-prediction weighs ``optimism_weight``); 0 if none.

    Set from the data, not learned by gradient steps: Adam moves one scalar by about
    the learning rate per step, far too slowly to reach CarRacing's -100.
    """
    rewards = np.asarray(rewards, np.float64)
    if rewards.size == 0:
        return 0.0
    value = float(rewards.mean())
    for _ in range(100):  # fixed point of the weighted mean; converges in a few steps
        weights = np.where(value > rewards, optimism_weight, 1.0)
        new = float((weights * rewards).sum() / weights.sum())
        if new == value:
            break
        value = new
    return value


def make_train_step(
    optimizer: optax.GradientTransformation,
    rnn: RNNConfig,
    spec: EnvSpec,
    frozen_lstm: bool = False,
):
    """One jitted loss+grad+update: (model, opt_state, batch, key) -> same + metrics.

    ``frozen_lstm``: only the heads learn; the LSTM (so the h a controller reads) keeps
    its weights exactly (its gradients and updates are zero, so clipping and Adam see
    the heads alone).
    """

    def without_lstm(tree):
        zeros = jax.tree.map(jnp.zeros_like, tree.cell)
        return eqx.tree_at(lambda m: m.cell, tree, zeros)

    @eqx.filter_jit
    def train_step(model: MDNRNN, opt_state, batch: Batch, key: jax.Array):
        grads, metrics = eqx.filter_grad(sequence_loss, has_aux=True)(
            model, batch, key, rnn, spec
        )
        if frozen_lstm:
            grads = without_lstm(grads)
        updates, opt_state = optimizer.update(
            grads, opt_state, eqx.filter(model, eqx.is_array)
        )
        if frozen_lstm:
            updates = without_lstm(updates)
        model = eqx.apply_updates(model, updates)
        return model, opt_state, dict(metrics, grad_norm=optax.tree.norm(grads))

    return train_step
