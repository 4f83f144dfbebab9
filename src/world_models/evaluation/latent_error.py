"""World-model prediction error in latent space (the latent protocol).

Latent protocol: the MSE between M's open-loop latents and the encoded actual latents
over a short horizon, in batches of test sub-sequences.

Pixel protocol: ``world_models.evaluation.pixel_error``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from world_models.data.episodes import load_latents
from world_models.envs import get_spec
from world_models.evaluation.open_loop import (
    batched_open_loop,
    choose_windows,
    held_out_paths,
)
from world_models.files import write_json
from world_models.models.mdnrnn import action_to_input
from world_models.run_directory import load_run_config
from world_models.training.rnn import load_rnn

# ------------------------------------------------------------ latent stats


def latent_error_statistics(per_batch: np.ndarray) -> dict[str, Any]:
    """Summary of per-batch latent MSE (B, H): per-timestep mean/std and the batch
    averages' mean, std, min and max."""
    per_batch = np.asarray(per_batch, dtype=np.float64)
    if per_batch.ndim != 2 or per_batch.shape[0] == 0:
        raise ValueError(f"expected per-batch MSE (B, H), got {per_batch.shape}")
    batch_means = per_batch.mean(axis=1)
    return {
        "mse_per_timestep": per_batch.mean(axis=0).tolist(),
        "std_per_timestep": per_batch.std(axis=0).tolist(),
        "mse_average": float(batch_means.mean()),
        "mse_std": float(batch_means.std()),
        "mse_min": float(batch_means.min()),
        "mse_max": float(batch_means.max()),
        "num_batches": int(per_batch.shape[0]),
        "horizon": int(per_batch.shape[1]),
    }


def latent_batch_mse(
    rnn,
    mus: Sequence[np.ndarray],
    action_inputs: Sequence[np.ndarray],
    windows: Sequence[tuple[int, int]],
    horizon: int,
    warmup: int,
    key: jax.Array,
    temperature: float | None,
) -> np.ndarray:
    """MSE per timestep (H,) for one batch of windows (episode, start): M's open-loop
    latents from mu[start] against the encoded mu[start+1 .. start+H]."""

    def gather(arrays, offset, length):
        return np.stack(
            [arrays[e][s + offset : s + offset + length] for e, s in windows]
        )

    warm_zs = gather(mus, -warmup, warmup)
    warm_actions = gather(action_inputs, -warmup, warmup)
    z_start = gather(mus, 0, 1)[:, 0]
    actions = gather(action_inputs, 0, horizon)
    targets = gather(mus, 1, horizon)
    keys = jax.random.split(key, len(windows))
    predicted = batched_open_loop(
        rnn, warm_zs, warm_actions, z_start, actions, keys, temperature
    )
    return np.asarray(jnp.mean((predicted - targets) ** 2, axis=(0, 2)))


# ------------------------------------------------------------ protocol


def latent_error(
    rnn,
    config,
    latent_paths: Sequence[Path],
    *,
    horizon: int = 3,
    batch_size: int = 256,
    max_batches: int = 100,
    warmup: int = 0,
    temperature: float | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Latent consistency error: M's open-loop latents (mode, or sampled at
    ``temperature``) against the encoded actual latents mu, over test windows."""
    if horizon < 1 or batch_size < 1 or max_batches < 1 or warmup < 0:
        raise ValueError("need horizon, batch_size, max_batches >= 1 and warmup >= 0")
    spec = get_spec(config.env_id)
    episodes = [load_latents(path) for path in latent_paths]
    mus = [episode["mu"] for episode in episodes]
    action_inputs = [np.asarray(action_to_input(e["actions"], spec)) for e in episodes]
    lengths = [len(episode["rewards"]) for episode in episodes]
    total = sum(max(0, length - horizon - warmup + 1) for length in lengths)
    windows = choose_windows(lengths, total, horizon, warmup, seed)  # all, shuffled
    num_batches = min(max_batches, max(1, len(windows) // batch_size))
    key = jax.random.key(seed)
    per_batch = []
    for index in tqdm(range(num_batches), desc="latent error", leave=False):
        batch = windows[index * batch_size : (index + 1) * batch_size]
        per_batch.append(
            latent_batch_mse(
                rnn,
                mus,
                action_inputs,
                batch,
                horizon,
                warmup,
                jax.random.fold_in(key, index),
                temperature,
            )
        )
    stats = latent_error_statistics(np.stack(per_batch))
    stats.update(
        num_episodes=len(episodes),
        batch_size=min(batch_size, len(windows)),
        num_windows=len(windows),
        warmup=warmup,
        prediction="mode" if temperature is None else f"sampled, τ={temperature:g}",
        seed=seed,
    )
    return stats


def latent_error_text(stats: Mapping[str, Any]) -> str:
    """Human-readable report of ``latent_error``'s statistics."""
    lines = [
        f"latent consistency error, horizon {stats['horizon']} ({stats['prediction']})",
        "MSE per timestep: "
        + ", ".join(
            f"t+{i + 1}: {m:.4f} ± {s:.4f}"
            for i, (m, s) in enumerate(
                zip(stats["mse_per_timestep"], stats["std_per_timestep"])
            )
        ),
        f"average {stats['mse_average']:.4f}  std across batches {stats['mse_std']:.4f}"
        f"  min {stats['mse_min']:.4f}  max {stats['mse_max']:.4f}",
        f"{stats['num_batches']} batches of {stats['batch_size']} windows, "
        f"{stats['num_episodes']} episodes ({stats['num_windows']} windows), "
        f"warmup {stats['warmup']}, seed {stats['seed']}",
    ]
    return "\n".join(lines) + "\n"


def run_latent_error(run_dir: str | os.PathLike, **options: Any) -> dict[str, Any]:
    """Latent protocol on a run directory's held-out latent files with its trained M;
    writes ``run_dir``/model_error/latent_hH.{json,txt} and returns the statistics."""
    config = load_run_config(run_dir)
    stats = latent_error(
        load_rnn(run_dir), config, held_out_paths(run_dir, config, "latents"), **options
    )
    stem = Path(run_dir) / "model_error" / f"latent_h{stats['horizon']}"
    write_json(stem.with_suffix(".json"), stats)
    stem.with_suffix(".txt").write_text(latent_error_text(stats))
    return stats
