"""What a controller sees in M's dream: its dreams decoded by V into a picture or video.

Each row is one dream (a start from the run's pool, M sampled at the dream's τ), each
column a frame every ``every`` steps; rows of several temperatures share their keys, so
the same start and noise are seen at each τ. Where the dream and reality part ways
(a road that returns under a car that left it) shows here at a glance. The video plays
the same dreams side by side, one frame per ``every`` steps.
"""

from __future__ import annotations

import os

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from world_models.dream.rollout import Dream
from world_models.models.vae import ConvVAE, decode_latents

GAP = 4  # white pixels between temperature blocks


@eqx.filter_jit
def _trajectories(dream: Dream, params: jax.Array, keys: jax.Array):
    return jax.vmap(dream.trajectory, in_axes=(None, 0))(params, keys)


def dream_frames(
    dream: Dream,
    vae: ConvVAE,
    params: jax.Array,
    key: jax.Array,
    rollouts: int,
    every: int,
) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 image of ``rollouts`` rows, each row's dream return).

    A row shows frames 0, every, 2·every, ... of one dream; frames after the dream
    ended are left black.
    """
    frames, _, returns = _decoded_dreams(dream, vae, params, key, rollouts, every)
    rows = [np.concatenate(list(row), axis=1) for row in frames]
    return np.concatenate(rows, axis=0), returns


def dream_animation(
    dream: Dream,
    vae: ConvVAE,
    params: jax.Array,
    key: jax.Array,
    rollouts: int,
    every: int,
    scale: int = 2,
) -> tuple[list[np.ndarray], np.ndarray]:
    """(the frames of a video of ``rollouts`` dreams side by side, each dream's return).

    Video frame t shows step t·every of every dream, each ``scale`` times enlarged;
    a dream that has ended is black, and the video stops one frame after the last
    dream ends. The same key gives ``dream_frames``' dreams.
    """
    if scale <= 0:
        raise ValueError(f"scale ({scale}) must be > 0")
    frames, alive, returns = _decoded_dreams(dream, vae, params, key, rollouts, every)
    last = np.flatnonzero(alive.any(axis=0)).max()
    frames = frames[:, : last + 2].repeat(scale, axis=2).repeat(scale, axis=3)
    steps = frames.swapaxes(0, 1)  # (steps, rollouts, ...)
    return [np.concatenate(list(step), axis=1) for step in steps], returns


def _decoded_dreams(
    dream: Dream,
    vae: ConvVAE,
    params: jax.Array,
    key: jax.Array,
    rollouts: int,
    every: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """uint8 frames (rollouts, steps, 64, 64, 3), black after a dream ends; whether
    each dream is alive at each shown step; each dream's return."""
    if rollouts <= 0 or every <= 0:
        raise ValueError(f"rollouts ({rollouts}) and every ({every}) must be > 0")
    zs, rewards, alive = _trajectories(dream, params, jax.random.split(key, rollouts))
    shown = np.asarray(alive[:, ::every])
    frames = np.asarray(decode_latents(vae, zs[:, ::every]))
    frames = frames * shown[..., None, None, None]
    returns = np.asarray(jnp.sum(jnp.where(alive, rewards, 0.0), axis=1))
    return (np.clip(frames, 0, 1) * 255).astype(np.uint8), shown, returns


def save_blocks(blocks: list[np.ndarray], path: str | os.PathLike) -> None:
    """Stack images vertically with a white gap and save them as one PNG."""
    width = max(block.shape[1] for block in blocks)
    parts = []
    for index, block in enumerate(blocks):
        if index:
            parts.append(np.full((GAP, width, 3), 255, np.uint8))
        parts.append(np.pad(block, ((0, 0), (0, width - block.shape[1]), (0, 0))))
    Image.fromarray(np.concatenate(parts, axis=0)).save(path)
