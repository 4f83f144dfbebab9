"""Recorded open-loop predictions in the format other world-model tools read.

Real and predicted frames as 84x84 grayscale uint8 (N, H+1, 84, 84), their MSE per
horizon in 0-255 units, start indices and sizes; written as STEM.pkl (exactly
``PICKLE_KEYS``) and STEM.npz (the same arrays). Also the copy-last-frame baseline.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from world_models.files import atomic_open

GRAY_SIZE = 84  # the protocol's frame size, shared with other world-model papers
PICKLE_KEYS = (
    "start_indices",
    "all_real_frames",
    "all_predicted_frames",
    "mse_per_horizon_pixels",
    "sequence_length",
    "num_sequences",
)


def to_gray84(frames: np.ndarray) -> np.ndarray:
    """RGB uint8 frames (..., H, W, 3) -> grayscale uint8 (..., 84, 84) via PIL."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim < 3 or frames.shape[-1] != 3:
        raise ValueError(
            f"expected uint8 RGB frames (..., H, W, 3), got "
            f"{frames.dtype} {frames.shape}"
        )
    flat = frames.reshape(-1, *frames.shape[-3:])
    gray = np.stack(
        [
            np.asarray(
                Image.fromarray(frame)
                .convert("L")
                .resize((GRAY_SIZE, GRAY_SIZE), Image.Resampling.BILINEAR)
            )
            for frame in flat
        ]
    )
    return gray.reshape(*frames.shape[:-3], GRAY_SIZE, GRAY_SIZE)


def mse_per_horizon(real: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """MSE per horizon index over sequences and pixels: (N, H+1, ...) x2 -> (H+1,)."""
    if real.shape != predicted.shape or real.ndim < 2:
        raise ValueError(f"real {real.shape} and predicted {predicted.shape} differ")
    error = (real.astype(np.float64) - predicted.astype(np.float64)) ** 2
    return error.reshape(*real.shape[:2], -1).mean(axis=(0, 2))


def copy_last_frame(real: np.ndarray) -> np.ndarray:
    """The baseline prediction: every frame of a sequence equals its start frame."""
    return np.repeat(real[:, :1], real.shape[1], axis=1)


def float_to_uint8(frames: np.ndarray | jax.Array) -> np.ndarray:
    """Decoder output in [0, 1] -> uint8 pixels (rounded)."""
    return np.asarray(jnp.round(jnp.clip(frames, 0.0, 1.0) * 255.0)).astype(np.uint8)


def prediction_record(
    start_indices: Sequence[int], real_gray: np.ndarray, predicted_gray: np.ndarray
) -> dict[str, Any]:
    """The result dict other tools read; ``sequence_length`` is H (open-loop steps)."""
    num, frames = real_gray.shape[:2]
    if predicted_gray.shape != real_gray.shape or real_gray.shape[2:] != (
        GRAY_SIZE,
        GRAY_SIZE,
    ):
        raise ValueError(
            f"expected (N, H+1, {GRAY_SIZE}, {GRAY_SIZE}) frames, got "
            f"{real_gray.shape} and {predicted_gray.shape}"
        )
    if len(start_indices) != num:
        raise ValueError(f"{len(start_indices)} start indices for {num} sequences")
    return {
        "start_indices": [int(index) for index in start_indices],
        "all_real_frames": real_gray.astype(np.uint8),
        "all_predicted_frames": predicted_gray.astype(np.uint8),
        "mse_per_horizon_pixels": [
            float(v) for v in mse_per_horizon(real_gray, predicted_gray)
        ],
        "sequence_length": int(frames - 1),
        "num_sequences": int(num),
    }


def save_record(record: Mapping[str, Any], stem: Path) -> None:
    """Write ``record`` as STEM.pkl (exact keys) and STEM.npz (same data)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    for suffix, write in ((".pkl", _write_pickle), (".npz", _write_npz)):
        path = stem.with_suffix(suffix)
        with atomic_open(path, "wb") as handle:
            write(handle, record)


def _write_pickle(handle, record: Mapping[str, Any]) -> None:
    pickle.dump({key: record[key] for key in PICKLE_KEYS}, handle, protocol=4)


def _write_npz(handle, record: Mapping[str, Any]) -> None:
    np.savez_compressed(handle, **{key: np.asarray(record[key]) for key in PICKLE_KEYS})
