"""Training M on latent sequence windows: loss, jitted step, validation, resumable loop.

Inputs and targets: z_t for t = 0..L is drawn once per window from the posterior
N(mu_t, exp(logvar_t)); M reads z_0..z_{L-1} and is scored on the SAME draws z_1..z_L,
as in the paper's code. Targets therefore match the distribution of the inputs M is fed
in the dream, rather than the sharper posterior means.

Exact resumption: the state saved is (model, optimiser state, base key); the key of
step s is fold_in(base key, s) and the window sampler is replayed for s batches, so a
run killed and resumed matches an uninterrupted run step for step.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from world_models.checkpoint import Checkpointer, CheckpointError
from world_models.config import Config, RNNConfig, load_run_config
from world_models.data.episodes import list_episodes
from world_models.data.samplers import SequenceSampler, split_by_episode
from world_models.envs import EnvSpec, get_spec
from world_models.logs import MetricsLogger, plot_curves
from world_models.models.mdnrnn import (
    MDNRNN,
    action_to_input,
    asymmetric_reward_error,
    dropout_mask,
    mdn_log_prob,
    rnn_from_config,
    select_head,
    termination_bce,
)

Batch = dict[str, Any]
_VAL_KEY_SALT = (
    0x5EED  # validation draws of z use one fixed key, comparable across evals
)


class TrainingDivergedError(FloatingPointError):
    """The loss or the gradient became NaN/inf."""


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
    z = mu + jnp.exp(0.5 * logvar) * jax.random.normal(z_key, mu.shape, mu.dtype)
    actions = action_to_input(batch["actions"], spec)
    masks = jax.vmap(dropout_mask, in_axes=(0, None, None))(
        jax.random.split(mask_key, mu.shape[0]), model.hidden_size, dropout
    )
    if not open_loop_fraction:
        _, outputs = jax.vmap(model, in_axes=(0, 0, None, 0, None))(
            z[:, :-1], actions, None, masks, True
        )
        return outputs, z[:, 1:, None]
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
        return eqx.tree_at(lambda m: m.cell, tree, jax.tree.map(jnp.zeros_like, tree.cell))

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


@eqx.filter_jit
def _eval_batch(model: MDNRNN, batch: Batch, key: jax.Array, spec: EnvSpec):
    outputs, targets = predict_batch(model, batch, spec, key)
    outputs, targets = select_head(outputs, 0, axis=2), targets[:, :, 0]
    nll = -mdn_log_prob(outputs, targets).mean(-1)
    reward = jnp.where(batch["terminated"], model.terminal_reward, outputs.reward)
    return nll, reward, jax.nn.sigmoid(outputs.done_logit)


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties averaged); NaN if one class only."""
    labels = labels.astype(bool)
    positives, negatives = labels.sum(), (~labels).sum()
    if positives == 0 or negatives == 0:
        return math.nan
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    first_rank = np.cumsum(counts) - counts + 1
    ranks = (first_rank + (counts - 1) / 2.0)[inverse]
    return float(
        (ranks[labels].sum() - positives * (positives + 1) / 2)
        / (positives * negatives)
    )


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else math.nan


def termination_metrics(
    done_prob: np.ndarray, terminated: np.ndarray, pos_weight: float
) -> dict[str, float]:
    """Weighted BCE (as in training), AUROC, and recall/precision at the dream's
    threshold 0.5; recall is NaN without positives, precision without predicted ones."""
    term = terminated.astype(bool)
    weight = np.where(term, pos_weight, 1.0)
    bce = -np.mean(
        weight
        * (term * np.log(done_prob + 1e-7) + (~term) * np.log(1 - done_prob + 1e-7))
    )
    predicted = done_prob > 0.5
    hits = float((predicted & term).sum())
    return dict(
        val_done_loss=float(bce),
        val_done_auroc=auroc(done_prob, term),
        val_done_recall=_ratio(hits, float(term.sum())),
        val_done_precision=_ratio(hits, float(predicted.sum())),
    )


def return_calibration(predicted: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Per-episode predicted vs actual returns: means, Pearson r, ratio of the means."""
    pred_mean, true_mean = float(predicted.mean()), float(true.mean())
    corr = math.nan
    if len(true) >= 2 and predicted.std() > 0 and true.std() > 0:
        corr = float(np.corrcoef(predicted, true)[0, 1])
    return dict(
        val_return_pred_mean=pred_mean,
        val_return_true_mean=true_mean,
        val_return_corr=corr,
        val_return_ratio=_ratio(pred_mean, true_mean),
    )


def validation_metrics(
    model: MDNRNN,
    sampler: SequenceSampler,
    spec: EnvSpec,
    key: jax.Array,
    rnn: RNNConfig,
    train_reward_mean: float,
) -> dict[str, float]:
    """Validation metrics over every step of the held-out episodes.

    Per-step reward metrics compare the head with what it learns (``reward_targets``);
    returns are M's teacher-forced reward predictions summed over each episode's real
    steps (windows restart from h = 0 every seq_len steps) against the actual returns.
    """
    nlls, rewards_pred, rewards, done_prob, terminated = [], [], [], [], []
    returns_pred = np.zeros(len(sampler.episodes))
    returns_true = np.zeros(len(sampler.episodes))
    for batch in sampler.epoch_batches():
        episode = batch.pop("episode")
        rows = len(batch["mask"])
        # Pad to the full batch so one compiled shape serves every batch.
        padded = {
            k: np.concatenate(
                [v, np.zeros((sampler.batch_size - rows, *v.shape[1:]), v.dtype)]
            )
            for k, v in batch.items()
        }
        nll, reward, done = jax.device_get(_eval_batch(model, padded, key, spec))
        real = batch["mask"] > 0
        nlls.append(nll[:rows][real])
        rewards_pred.append(reward[:rows][real])
        done_prob.append(done[:rows][real])
        rewards.append(batch["reward_targets"][real])
        terminated.append(batch["terminated"][real])
        np.add.at(returns_pred, episode, (reward[:rows] * batch["mask"]).sum(1))
        np.add.at(returns_true, episode, (batch["rewards"] * batch["mask"]).sum(1))
    nll, pred, true = map(np.concatenate, (nlls, rewards_pred, rewards))
    done, term = np.concatenate(done_prob), np.concatenate(terminated)
    error = pred - true
    mean_mse = float(np.mean((true - train_reward_mean) ** 2))
    reward_mse = float(np.mean(error**2))
    return dict(
        val_nll=float(nll.mean()),
        val_reward_loss=float(
            np.mean(np.where(error > 0, rnn.optimism_weight, 1.0) * error**2)
        ),
        val_reward_bias=float(error.mean()),
        val_reward_mse=reward_mse,
        val_reward_mse_mean_predictor=mean_mse,
        val_reward_mse_ratio=reward_mse / mean_mse if mean_mse > 0 else math.nan,
        **termination_metrics(done, term, rnn.done_pos_weight),
        **return_calibration(returns_pred, returns_true),
    )


def _train_state(config: Config, key: jax.Array) -> dict[str, Any]:
    model_key, train_key = jax.random.split(key)
    model = rnn_from_config(config, key=model_key)
    opt_state = make_optimizer(config.rnn).init(eqx.filter(model, eqx.is_array))
    return dict(model=model, opt_state=opt_state, key=train_key)


def rnn_checkpoint_config(config: Config) -> dict:
    """The config dict stored with (and checked against) M's checkpoints."""
    return dict(
        config.to_dict()["rnn"],
        z_dim=config.vae.z_dim,
        action_size=get_spec(config.env_id).action_input_size,
        env_id=config.env_id,
    )



def _checkpointer(run_dir: Path, config: Config) -> Checkpointer:
    return Checkpointer(run_dir / "rnn" / "ckpt", rnn_checkpoint_config(config),
                        defaults=rnn_checkpoint_config(Config()))


def latest_rnn_step(run_dir: str | Path) -> int | None:
    """Training step of the latest M checkpoint (None before M is trained)."""
    run_dir = Path(run_dir)
    return _checkpointer(run_dir, load_run_config(run_dir)).latest_step()


def load_rnn(run_dir: str | Path, step: int | None = None) -> MDNRNN:
    """M of the checkpoint at ``step`` (default: the latest) in ``run_dir``/rnn/ckpt
    (CheckpointError if none)."""
    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    directory = run_dir / "rnn" / "ckpt"
    checkpointer = _checkpointer(run_dir, config) if directory.is_dir() else None
    if checkpointer is None or checkpointer.latest_step() is None:
        raise CheckpointError(
            f"no RNN checkpoint in {directory}; run train_rnn.py --run {run_dir} first"
        )
    template = eqx.filter_eval_shape(_train_state, config, jax.random.PRNGKey(0))
    return checkpointer.restore(template, step)["model"]


def _split_latents(run_dir: Path, config: Config) -> tuple[list[Path], list[Path]]:
    folder = run_dir / "latents"
    paths = list_episodes(folder) if folder.is_dir() else []
    if not paths:
        raise FileNotFoundError(
            f"no latent files under {folder}; run process_data.py --run {run_dir} first"
        )
    return split_by_episode(paths, config.rnn.val_fraction, config.rnn.seed)


def _check_finite(step: int, metrics: dict[str, float], last_checkpoint: int | None):
    bad = [name for name in ("loss", "grad_norm") if not math.isfinite(metrics[name])]
    if bad:
        raise TrainingDivergedError(
            f"RNN training diverged at step {step}: {', '.join(bad)} is not finite "
            f"({ {k: metrics[k] for k in bad} }); last good checkpoint: step "
            f"{last_checkpoint}. Lower rnn.learning_rate or check the latents."
        )


def train_rnn(
    run_dir: str | Path,
    fresh: bool = False,
    stop_after: int | None = None,
    total_steps: int | None = None,
    progress: bool = True,
    lstm_frozen_after: int | None = None,
) -> dict[str, float]:
    """Train M on ``run_dir``/latents, resuming from ``run_dir``/rnn/ckpt.

    Trains to ``total_steps`` (default ``rnn.steps``); curriculum rounds pass a larger
    target to continue from the previous round's checkpoint on the grown dataset.
    Updates after step ``lstm_frozen_after`` train the heads only (the LSTM stays).
    ``fresh`` deletes ``run_dir``/rnn first. ``stop_after`` returns after that step
    without a final checkpoint, as if the process had been killed (tests, benchmarks).
    Returns the last validation metrics (empty without validation episodes).
    """
    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    rnn, spec = config.rnn, get_spec(config.env_id)
    out_dir = run_dir / "rnn"
    if fresh and out_dir.exists():
        shutil.rmtree(out_dir)
    train_paths, val_paths = _split_latents(run_dir, config)
    train_sampler = SequenceSampler(
        train_paths, rnn.seq_len, rnn.batch_size, rnn.seed, rnn.reward_window
    )
    val_sampler = (
        SequenceSampler(
            val_paths, rnn.seq_len, rnn.batch_size, rnn.seed, rnn.reward_window
        )
        if val_paths
        else None
    )
    if train_sampler.z_dim != config.vae.z_dim:
        raise ValueError(
            f"latents in {run_dir / 'latents'} have z_dim "
            f"{train_sampler.z_dim}, config says {config.vae.z_dim}"
        )
    reward_mean = float(
        np.concatenate([e["reward_targets"] for e in train_sampler.episodes]).mean()
    )

    checkpointer = _checkpointer(run_dir, config)
    state = _train_state(config, jax.random.PRNGKey(rnn.seed))
    start = checkpointer.latest_step() or 0
    if start:
        state = checkpointer.restore(state, start)
    logger = MetricsLogger(out_dir)
    logger.truncate_after(start)

    optimizer = make_optimizer(rnn)
    train_steps = {
        frozen: make_train_step(optimizer, rnn, spec, frozen) for frozen in (False, True)
    }
    model, opt_state, base_key = state["model"], state["opt_state"], state["key"]
    terminal_rewards = np.concatenate(
        [e["rewards"][e["terminated"]] for e in train_sampler.episodes]
    )
    model = eqx.tree_at(
        lambda m: m.terminal_reward,
        model,
        jnp.float32(terminal_reward(terminal_rewards, rnn.optimism_weight)),
    )
    val_key = jax.random.fold_in(base_key, _VAL_KEY_SALT)
    last_checkpoint, val_metrics = (start or None), {}
    target = rnn.steps if total_steps is None else total_steps
    end = target if stop_after is None else min(stop_after, target)
    for step in tqdm(
        range(start + 1, end + 1),
        desc="rnn",
        initial=start,
        total=target,
        disable=not progress,
    ):
        frozen = lstm_frozen_after is not None and step > lstm_frozen_after
        model, opt_state, metrics = train_steps[frozen](
            model, opt_state, train_sampler.sample(step), jax.random.fold_in(base_key, step)
        )
        metrics = {k: float(v) for k, v in metrics.items()}
        _check_finite(step, metrics, last_checkpoint)
        row = {f"train_{k}": v for k, v in metrics.items()}
        if val_sampler is not None and (
            step % rnn.eval_every == 0 or step == target
        ):
            val_metrics = validation_metrics(
                model, val_sampler, spec, val_key, rnn, reward_mean
            )
            row.update(val_metrics)
        logger.log(step, **row)
        if step % rnn.checkpoint_every == 0 or step == target:
            checkpointer.save(
                step, dict(model=model, opt_state=opt_state, key=base_key)
            )
            last_checkpoint = step
    if (
        not val_metrics and val_sampler is not None
    ):  # e.g. re-run of a finished training
        val_metrics = validation_metrics(
            model, val_sampler, spec, val_key, rnn, reward_mean
        )
    logger.close()
    checkpointer.close()
    _plot(out_dir)
    return val_metrics


def _plot(out_dir: Path) -> None:
    metrics = out_dir / "metrics.jsonl"
    plot_curves(
        metrics, ["train_nll", "val_nll"], out_dir / "nll.png", "MDN NLL per dim"
    )
    plot_curves(
        metrics,
        [
            "train_reward_loss",
            "val_reward_loss",
            "val_reward_mse",
            "val_reward_mse_mean_predictor",
        ],
        out_dir / "reward.png",
        "reward loss",
    )
    plot_curves(
        metrics,
        [
            "train_done_loss",
            "val_done_loss",
            "val_done_auroc",
            "val_done_recall",
            "val_done_precision",
        ],
        out_dir / "done.png",
        "termination",
    )
