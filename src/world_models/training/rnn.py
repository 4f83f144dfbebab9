"""Training M on latent sequence windows: the resumable loop and loading M (its loss
is in ``rnn_loss``, its validation in ``rnn_validation``).

Exact resumption: the state saved is (model, optimiser state, base key); the key of
step s is fold_in(base key, s) and the window sampler is replayed for s batches, so a
run killed and resumed matches an uninterrupted run step for step.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from world_models.checkpoint import Checkpointer, CheckpointError
from world_models.config import Config
from world_models.data.episodes import list_episodes
from world_models.data.samplers import SequenceSampler, split_by_episode
from world_models.envs import get_spec
from world_models.logs import MetricsLogger, plot_curves
from world_models.models.mdnrnn import (
    MDNRNN,
    rnn_from_config,
)
from world_models.run_directory import load_run_config
from world_models.training.fit import Schedule, as_floats, fit
from world_models.training.rnn_loss import (
    make_optimizer,
    make_train_step,
    terminal_reward,
)
from world_models.training.rnn_validation import validation_metrics

_VAL_KEY_SALT = (
    0x5EED  # validation draws of z use one fixed key, comparable across evals
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
    # The seed is not compared: a run that trained several M candidates continues
    # from the chosen one, trained under its own seed (pipeline/candidates.py).
    return Checkpointer(run_dir / "rnn" / "ckpt", rnn_checkpoint_config(config),
                        defaults=rnn_checkpoint_config(Config()), ignore=("seed",))


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
        frozen: make_train_step(optimizer, rnn, spec, frozen)
        for frozen in (False, True)
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

    def train_step(state: dict[str, Any], step: int) -> tuple[dict, dict[str, float]]:
        frozen = lstm_frozen_after is not None and step > lstm_frozen_after
        model, opt_state, metrics = train_steps[frozen](
            state["model"], state["opt_state"], train_sampler.sample(step),
            jax.random.fold_in(base_key, step),
        )
        return dict(state, model=model, opt_state=opt_state), as_floats(metrics)

    def validate(state: dict[str, Any]) -> dict[str, float]:
        return validation_metrics(
            state["model"], val_sampler, spec, val_key, rnn, reward_mean
        )

    target = rnn.steps if total_steps is None else total_steps
    try:
        state, val_metrics = fit(
            dict(model=model, opt_state=opt_state, key=base_key),
            start,
            Schedule(target, rnn.eval_every, rnn.checkpoint_every, stop_after),
            train_step=train_step,
            validate=validate if val_sampler is not None else None,
            save=checkpointer.save,
            logger=logger,
            finite=("loss", "grad_norm"),
            log_every_step=True,
            name="rnn",
            progress=progress,
        )
        if not val_metrics and val_sampler is not None:  # a finished training re-run
            val_metrics = validate(state)
    finally:
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
