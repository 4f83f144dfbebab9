"""Training loop of V over a run directory's episodes: resumable, logged, checked.

State checkpointed every ``vae.checkpoint_every`` steps: model, Adam state, step and
PRNG key. Batches are a pure function of (seed, step), so a resumed run sees the same
batches and random numbers as an uninterrupted one and ends with the same parameters.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import shutil
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from PIL import Image
from tqdm import tqdm

from world_models.checkpoint import Checkpointer
from world_models.config_sections import VAEConfig
from world_models.data.episodes import (
    PROVENANCE_KEYS,
    STEP_KEYS,
    list_episodes,
    load_episode,
    load_latents,
    save_latents,
)
from world_models.data.samplers import FrameBatches, split_by_episode
from world_models.files import write_atomic_text
from world_models.logs import MetricsLogger, plot_curves
from world_models.models.vae import (
    ConvVAE,
    beta_at,
    encode_frames,
    frames_to_float,
    vae_loss,
    vae_terms,
)
from world_models.run_directory import load_run_config
from world_models.training.fit import Schedule, fit

MAX_VAL_FRAMES = 1024
GRID_IMAGES = 8


def initial_state(config: VAEConfig) -> dict[str, Any]:
    """Fresh training state; also the template checkpoints are restored into."""
    model_key, train_key = jax.random.split(jax.random.PRNGKey(config.seed))
    model = ConvVAE(config.z_dim, key=model_key, encoder_norm=config.encoder_norm)
    return {
        "model": model,
        "opt_state": _optimiser(config).init(eqx.filter(model, eqx.is_array)),
        "step": jnp.asarray(0, jnp.int32),
        "key": train_key,
    }


def _optimiser(config: VAEConfig) -> optax.GradientTransformation:
    return optax.adam(config.learning_rate)


def checkpointer(run_dir: str | Path, config: VAEConfig) -> Checkpointer:
    return Checkpointer(Path(run_dir) / "vae" / "ckpt", dataclasses.asdict(config),
                        defaults=dataclasses.asdict(VAEConfig()))


def load_vae(run_dir: str | Path) -> ConvVAE:
    """V of the latest checkpoint in ``run_dir``/vae/ckpt (CheckpointError if none)."""
    config = load_run_config(run_dir).vae
    ckpt = checkpointer(run_dir, config)
    return ckpt.restore(eqx.filter_eval_shape(initial_state, config))["model"]


@functools.lru_cache(maxsize=4)  # one compilation per config within a process
def make_train_step(config: VAEConfig):
    optimiser = _optimiser(config)

    def loss_fn(model, frames, key, step):
        beta = beta_at(step, config.beta, config.beta_anneal_steps)
        loss, parts = vae_loss(
            model,
            frames,
            key,
            beta=beta,
            kl_tolerance=config.kl_tolerance,
            salient_weight=config.salient_weight,
        )
        return loss, (parts["recon"], parts["kl"])

    @eqx.filter_jit
    def train_step(state: dict[str, Any], frames: jax.Array) -> tuple[dict, tuple]:
        key, step_key = jax.random.split(state["key"])
        grad_fn = eqx.filter_value_and_grad(loss_fn, has_aux=True)
        (loss, (recon, kl)), grads = grad_fn(
            state["model"], frames_to_float(frames), step_key, state["step"]
        )
        updates, opt_state = optimiser.update(
            grads, state["opt_state"], eqx.filter(state["model"], eqx.is_array)
        )
        model = eqx.apply_updates(state["model"], updates)
        new_state = {
            "model": model,
            "opt_state": opt_state,
            "step": state["step"] + 1,
            "key": key,
        }
        return new_state, (loss, recon, kl)

    return train_step


@eqx.filter_jit
def _eval_batch(model: ConvVAE, frames: jax.Array, key: jax.Array):
    return vae_terms(model, frames_to_float(frames), key)


def validation_losses(
    model: ConvVAE, frames: np.ndarray, batch_size: int, seed: int
) -> dict:
    """Mean reconstruction error and KL over ``frames`` (last batch padded, cut)."""
    recons, kls = [], []
    key = jax.random.PRNGKey(seed)
    for start in range(0, len(frames), batch_size):
        chunk = frames[start : start + batch_size]
        padded = np.zeros((batch_size,) + frames.shape[1:], np.uint8)
        padded[: len(chunk)] = chunk
        recon, kl = _eval_batch(model, padded, jax.random.fold_in(key, start))
        recons.append(np.asarray(recon)[: len(chunk)])
        kls.append(np.asarray(kl)[: len(chunk)])
    return {
        "recon": float(np.concatenate(recons).mean()),
        "kl": float(np.concatenate(kls).mean()),
    }


def save_reconstruction_grid(model: ConvVAE, frames: np.ndarray, path: Path) -> None:
    """Real frames in the top row, their reconstructions (decode(mu)) below."""
    real = frames_to_float(frames)
    recon = jax.vmap(lambda x: model.decode(model.encode(x)[0]))(real)
    rows = [
        np.concatenate(list(np.asarray(images)), axis=1) for images in (real, recon)
    ]
    grid = (np.clip(np.concatenate(rows, axis=0), 0, 1) * 255).astype(np.uint8)
    Image.fromarray(grid).save(path)


def _validation_frames(paths: list[Path], config: VAEConfig) -> np.ndarray:
    batches = FrameBatches(
        paths, config.batch_size, seed=config.seed + 1, drop_last=False
    )
    frames, total = [], 0
    for batch in batches.epoch(0):
        frames.append(batch)
        total += len(batch)
        if total >= MAX_VAL_FRAMES:
            break
    return np.concatenate(frames)[:MAX_VAL_FRAMES]


def train_vae(
    run_dir: str | Path,
    *,
    fresh: bool = False,
    stop_after: int | None = None,
    total_steps: int | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """Train (or resume) V on ``run_dir``/data; returns the last validation figures.

    Trains to ``total_steps`` (default ``vae.steps``); curriculum rounds pass a larger
    target to continue from the previous round's checkpoint on the grown dataset.
    ``stop_after`` ends the process early after that step, as a kill would (for tests).
    """
    run_dir = Path(run_dir)
    config = load_run_config(run_dir).vae
    end = config.steps if total_steps is None else total_steps
    vae_dir = run_dir / "vae"
    if fresh:
        shutil.rmtree(vae_dir, ignore_errors=True)
    episodes = list_episodes(run_dir / "data")
    if not episodes:
        raise FileNotFoundError(f"no episode files under {run_dir / 'data'}")
    train_paths, val_paths = split_by_episode(
        episodes, config.val_fraction, config.seed
    )
    val_frames = _validation_frames(val_paths or train_paths, config)

    ckpt = checkpointer(run_dir, config)
    state = initial_state(config)
    start = ckpt.latest_step() or 0
    if start:
        state = ckpt.restore(state)
    logger = MetricsLogger(vae_dir)
    logger.truncate_after(start)
    update = make_train_step(config)
    batches = FrameBatches(
        train_paths, config.batch_size, seed=config.seed
    ).stream(start)

    def train_step(state: dict[str, Any], step: int) -> tuple[dict, dict[str, float]]:
        state, (_, recon, kl) = update(state, next(batches))
        return state, {"recon": float(recon), "kl": float(kl)}

    def validate(state: dict[str, Any]) -> dict[str, float]:
        losses = validation_losses(
            state["model"], val_frames, config.batch_size, config.seed
        )
        return {f"val_{name}": value for name, value in losses.items()}

    def plot(state: dict[str, Any], _: dict[str, float]) -> None:
        save_reconstruction_grid(
            state["model"], val_frames[:GRID_IMAGES], vae_dir / "reconstructions.png"
        )
        plot_curves(logger.path, ["train_recon", "val_recon"],
                    vae_dir / "loss_curves.png", title="VAE reconstruction")
        plot_curves(logger.path, ["train_kl", "val_kl"], vae_dir / "kl_curves.png",
                    title="VAE KL")

    try:
        _, last_val = fit(
            state,
            start,
            Schedule(end, config.eval_every, config.checkpoint_every, stop_after),
            train_step=train_step,
            validate=validate,
            save=ckpt.save,
            logger=logger,
            finite=("recon", "kl"),
            log_every_step=False,
            name="VAE",
            progress=progress,
            after_validation=plot,
        )
    finally:
        logger.close()
        ckpt.close()
    return {name.removeprefix("val_"): value for name, value in last_val.items()}


def encode_run(
    run_dir: str | Path, batch_size: int = 256, progress: bool = True
) -> int:
    """Write mu and logvar of every frame of ``run_dir``/data into ``run_dir``/latents.

    The latents folder mirrors data/. Idempotent: a latent file already written by the
    same VAE checkpoint (recorded in latents/manifest.json) is kept; a newer VAE
    re-encodes everything: its targets are deleted before the manifest names the new
    VAE, so a pass killed midway leaves no file of the old VAE for a re-run to keep.
    Returns the number of files written.
    """
    run_dir = Path(run_dir)
    config = load_run_config(run_dir).vae
    ckpt = checkpointer(run_dir, config)
    vae_step = ckpt.latest_step()
    ckpt.close()
    vae = load_vae(run_dir)
    data_dir, latent_dir = run_dir / "data", run_dir / "latents"
    episodes = list_episodes(data_dir)
    manifest_path = latent_dir / "manifest.json"
    same_vae = manifest_path.exists() and (
        json.loads(manifest_path.read_text()).get("vae_step") == vae_step
    )
    targets = [latent_dir / path.relative_to(data_dir) for path in episodes]
    if not same_vae:
        for target in targets:
            target.unlink(missing_ok=True)
        latent_dir.mkdir(parents=True, exist_ok=True)
        write_atomic_text(manifest_path, json.dumps({"vae_step": vae_step}))
    written = 0
    for path, target in tqdm(
        zip(episodes, targets), total=len(episodes), desc="encode", disable=not progress
    ):
        if target.exists() and _readable_latents(target):
            continue
        episode = load_episode(path)
        mu, logvar = encode_frames(vae, episode["obs"], batch_size)
        target.parent.mkdir(parents=True, exist_ok=True)
        save_latents(
            target,
            {
                "mu": mu,
                "logvar": logvar,
                **{key: episode[key] for key in STEP_KEYS + PROVENANCE_KEYS},
            },
        )
        written += 1
    return written


def _readable_latents(path: Path) -> bool:
    try:
        load_latents(path)
    except ValueError:
        return False
    return True
