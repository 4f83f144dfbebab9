"""World-model prediction error in pixel space (the pixel protocol).

Pixel protocol (comparable with other world models): from seeded start frames of
held-out episodes, encode the start frame, roll M open loop for H steps under the
episode's real actions (``MDNRNN.step`` fed back its own prediction), decode every
predicted z, convert real and predicted frames to 84x84 grayscale and measure the MSE in
0-255 units per horizon. Index 0 is the start frame; its prediction is V's
reconstruction of it. Every run also scores, on the same frames, the copy-last-frame
baseline and V's reconstruction floor.

Latent protocol: ``world_models.evaluation.latent_error``. Comparing result files of
several models: ``world_models.evaluation.compare``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from world_models.data.episodes import load_episode
from world_models.envs import get_spec
from world_models.evaluation.compare import (
    comparison_markdown,
    comparison_rows,
    plot_mse_curves,
)
from world_models.evaluation.open_loop import (
    batched_open_loop,
    choose_windows,
    held_out_paths,
    window_arrays,
)
from world_models.evaluation.prediction_record import (
    copy_last_frame,
    float_to_uint8,
    prediction_record,
    save_record,
    to_gray84,
)
from world_models.files import write_json
from world_models.models.mdnrnn import action_to_input
from world_models.models.vae import decode_latents, encode_frames
from world_models.run_directory import load_run_config
from world_models.training.rnn import load_rnn
from world_models.training.vae import load_vae


def pixel_error(
    vae,
    rnn,
    config,
    episode_paths: Sequence[Path],
    out_dir: str | os.PathLike,
    *,
    num_sequences: int = 10,
    horizon: int = 20,
    warmup: int = 0,
    temperature: float | None = None,
    seed: int = 0,
    plots: bool = True,
) -> dict[str, Any]:
    """The pixel protocol on ``episode_paths``; writes results to ``out_dir``.

    Four predictions of the same real frames, each saved as NAME.pkl/.npz in the shared
    format: model_mode, model_sampled (at ``temperature``, default
    config.dream.temperature), copy_baseline and vae_floor; plus summary.json/.md and
    PNGs. Returns the summary dict.
    """
    if horizon < 1 or num_sequences < 1 or warmup < 0:
        raise ValueError("need horizon >= 1, num_sequences >= 1, warmup >= 0")
    temperature = config.dream.temperature if temperature is None else temperature
    spec = get_spec(config.env_id)
    episodes = [load_episode(path) for path in episode_paths]
    lengths = [len(episode["rewards"]) for episode in episodes]
    windows = choose_windows(lengths, num_sequences, horizon, warmup, seed)
    frames = window_arrays(episodes, windows, warmup, horizon, "obs")
    actions = np.asarray(
        action_to_input(
            window_arrays(episodes, windows, warmup, horizon, "actions"), spec
        )
    )
    count, span = frames.shape[:2]
    flat = frames.reshape(-1, *frames.shape[2:])
    mu, _ = encode_frames(vae, flat, batch_size=min(256, len(flat)))
    mu = jnp.asarray(mu.reshape(count, span, -1))
    rollout_args = (
        rnn,
        mu[:, :warmup],
        actions[:, :warmup],
        mu[:, warmup],
        actions[:, warmup:],
    )
    keys = jax.random.split(jax.random.key(seed), count)
    starts = mu[:, warmup : warmup + 1]
    latents = {
        "model_mode": batched_open_loop(*rollout_args, keys, None),
        "model_sampled": batched_open_loop(*rollout_args, keys, float(temperature)),
    }
    real = to_gray84(frames[:, warmup:])
    predictions = {
        name: to_gray84(
            float_to_uint8(decode_latents(vae, jnp.concatenate([starts, zs], axis=1)))
        )
        for name, zs in latents.items()
    }
    predictions["copy_baseline"] = copy_last_frame(real)
    predictions["vae_floor"] = to_gray84(
        float_to_uint8(decode_latents(vae, mu[:, warmup:]))
    )

    out_dir = Path(out_dir)
    start_indices = [start for _, start in windows]
    records = {}
    for name, predicted in predictions.items():
        records[name] = prediction_record(start_indices, real, predicted)
        save_record(records[name], out_dir / name)
    curves = {
        name: record["mse_per_horizon_pixels"] for name, record in records.items()
    }
    summary = {
        "env_id": config.env_id,
        "horizon": horizon,
        "num_sequences": count,
        "warmup": warmup,
        "temperature": float(temperature),
        "seed": seed,
        "sequences": [
            {"episode": str(episode_paths[e]), "start": s} for e, s in windows
        ],
        "mse_per_horizon_pixels": curves,
        "model_beats_copy_from_horizon": _beats_from(
            curves["model_mode"], curves["copy_baseline"]
        ),
    }
    write_json(out_dir / "summary.json", summary)
    labels = {
        "model_mode": "model (mode)",
        "model_sampled": f"model (sampled, τ={temperature:g})",
        "copy_baseline": "copy last frame",
        "vae_floor": "VAE floor",
    }
    table = comparison_markdown(
        [labels[name] for name in curves],
        comparison_rows(
            [labels[name] for name in curves], [np.asarray(c) for c in curves.values()]
        ),
    )
    (out_dir / "summary.md").write_text(table)
    if plots:
        plot_mse_curves(
            list(labels.values()),
            [np.asarray(c) for c in curves.values()],
            out_dir / "mse_per_horizon.png",
        )
        for index in range(count):
            plot_sequence(
                index,
                real,
                predictions,
                labels,
                windows[index],
                out_dir / f"sequence_{index:02d}.png",
            )
    return summary


def _beats_from(model: Sequence[float], baseline: Sequence[float]) -> int | None:
    """Smallest horizon h >= 1 from which the model's MSE is below the baseline's at
    every later horizon; None if it never is."""
    first = None
    for horizon in range(len(model) - 1, 0, -1):
        if model[horizon] < baseline[horizon]:
            first = horizon
        else:
            break
    return first


def plot_sequence(
    index: int,
    real: np.ndarray,
    predictions: Mapping[str, np.ndarray],
    labels: Mapping[str, str],
    window: tuple[int, int],
    out_png: Path,
    max_columns: int = 11,
) -> None:
    """Real and predicted frames of one sequence, then the MSE per frame of every
    prediction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown_rows = ["model_mode", "model_sampled"]
    columns = np.unique(
        np.linspace(0, real.shape[1] - 1, min(max_columns, real.shape[1]))
        .round()
        .astype(int)
    )
    rows = 1 + len(shown_rows)
    figure = plt.figure(figsize=(1.3 * len(columns), 1.4 * rows + 2.6))
    grid = figure.add_gridspec(rows + 1, len(columns), height_ratios=[1] * rows + [1.8])
    for row, (name, frames) in enumerate(
        [("real", real)] + [(n, predictions[n]) for n in shown_rows]
    ):
        for col, step in enumerate(columns):
            axis = figure.add_subplot(grid[row, col])
            axis.imshow(frames[index, step], cmap="gray", vmin=0, vmax=255)
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(f"t+{step}", fontsize=8)
            if col == 0:
                axis.set_ylabel(labels.get(name, name), fontsize=7)
    axis = figure.add_subplot(grid[rows, :])
    for name, predicted in predictions.items():
        error = ((real[index].astype(np.float64) - predicted[index]) ** 2).mean(
            axis=(1, 2)
        )
        axis.plot(error, marker=".", label=labels.get(name, name))
    axis.set_xlabel("horizon")
    axis.set_ylabel("pixel MSE")
    axis.legend(fontsize=7)
    axis.grid(alpha=0.3)
    figure.suptitle(
        f"sequence {index}: episode {window[0]}, start {window[1]}", fontsize=9
    )
    out_png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_png, dpi=90)
    plt.close(figure)


def run_pixel_error(run_dir: str | os.PathLike, **options: Any) -> dict[str, Any]:
    """Pixel protocol on a run directory's held-out episodes, with its trained V and M;
    results in ``run_dir``/model_error/pixel_hH/."""
    config = load_run_config(run_dir)
    horizon = options.get("horizon", 20)
    out_dir = Path(run_dir) / "model_error" / f"pixel_h{horizon}"
    return pixel_error(
        load_vae(run_dir),
        load_rnn(run_dir),
        config,
        held_out_paths(run_dir, config, "data"),
        out_dir,
        **options,
    )
