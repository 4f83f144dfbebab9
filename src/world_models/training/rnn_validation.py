"""M's validation over every step of the held-out episodes: the mixture's NLL, the
reward head against what it learns, termination (AUROC, recall, precision) and each
episode's predicted against its actual return."""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from world_models.config import RNNConfig
from world_models.data.samplers import SequenceSampler
from world_models.envs import EnvSpec
from world_models.models.mdnrnn import MDNRNN
from world_models.models.mixture import mdn_log_prob, select_head
from world_models.training.rnn_loss import Batch, predict_batch


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
