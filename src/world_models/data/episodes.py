"""Episode and latent files: atomic writing, validated reading.

Episode file (``.npz``, loadable with ``allow_pickle=False``)::

    obs         uint8    (T+1, 64, 64, 3)  o_0 .. o_T preprocessed, final frame kept
    actions     float32  (T, A) continuous  |  int32 (T,) discrete; a_t taken in o_t
    rewards     float32  (T,)   r_t returned by step(a_t)
    terminated  bool     (T,)   the MDP ended after step t
    truncated   bool     (T,)   time limit / collection cap after step t (not a death)
    env_id, policy  0-d str;  seed  0-d int

A latent file replaces ``obs`` by ``mu`` and ``logvar`` float32 (T+1, Z).
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from world_models.envs import ENVS, FRAME_SIZE
from world_models.files import TMP_MARKER, atomic_open

FRAME_SHAPE = (FRAME_SIZE, FRAME_SIZE, 3)
STEP_KEYS = ("actions", "rewards", "terminated", "truncated")
PROVENANCE_KEYS = ("env_id", "policy", "seed")
EPISODE_KEYS = ("obs", *STEP_KEYS, *PROVENANCE_KEYS)
LATENT_KEYS = ("mu", "logvar", *STEP_KEYS, *PROVENANCE_KEYS)
# zlib level 1: frames of flat colour compress almost as well as at level 6, ~4x faster.
COMPRESS_LEVEL = 1


class EpisodeError(ValueError):
    """An episode or latent file (or dict) is missing, unreadable or inconsistent."""


# --------------------------------------------------------------------------- writing


def _write_npz_atomic(
    path: str | os.PathLike, arrays: Mapping[str, np.ndarray]
) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as handle:
        with zipfile.ZipFile(
            handle, "w", zipfile.ZIP_DEFLATED, compresslevel=COMPRESS_LEVEL
        ) as archive:
            for key, array in arrays.items():
                with archive.open(f"{key}.npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(
                        member, np.asanyarray(array), allow_pickle=False
                    )


def _as_arrays(data: Mapping[str, Any], keys: Sequence[str]) -> dict[str, np.ndarray]:
    arrays = {key: np.asarray(data[key]) for key in keys if key in data}
    for key in ("env_id", "policy"):
        if key in arrays:
            arrays[key] = np.asarray(str(arrays[key]))
    if "seed" in arrays:
        arrays["seed"] = np.asarray(int(arrays["seed"]), dtype=np.int64)
    return arrays


def save_episode(path: str | os.PathLike, episode: Mapping[str, Any]) -> None:
    """Validate ``episode``; write it to ``path`` atomically (temp + os.replace)."""
    arrays = _as_arrays(episode, EPISODE_KEYS)
    validate_episode(arrays, name=str(path))
    _write_npz_atomic(path, arrays)


def save_latents(path: str | os.PathLike, latents: Mapping[str, Any]) -> None:
    """Validate a latent episode (mu, logvar + step arrays) and write it atomically."""
    arrays = _as_arrays(latents, LATENT_KEYS)
    validate_latents(arrays, name=str(path))
    _write_npz_atomic(path, arrays)


# --------------------------------------------------------------------------- reading


def _read_npz(path: str | os.PathLike, keys: Sequence[str]) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise EpisodeError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in keys if key not in archive.files]
            if missing:
                raise EpisodeError(f"{path}: missing keys {missing}")
            return {key: archive[key] for key in keys}
    except EpisodeError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError) as error:
        raise EpisodeError(f"{path}: unreadable or corrupt ({error})") from None


def load_episode(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Load and validate one episode file; raises EpisodeError naming the file."""
    arrays = _read_npz(path, EPISODE_KEYS)
    validate_episode(arrays, name=str(path))
    return arrays


def load_latents(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Load and validate one latent file; raises EpisodeError naming the file."""
    arrays = _read_npz(path, LATENT_KEYS)
    validate_latents(arrays, name=str(path))
    return arrays


def episode_length(path: str | os.PathLike) -> int:
    """Number of steps T of an episode or latent file, reading only its rewards."""
    return int(_read_npz(path, ("rewards",))["rewards"].shape[0])


def list_episodes(folder: str | os.PathLike) -> list[Path]:
    """All ``.npz`` files below ``folder`` (recursive, sorted), temp files skipped."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"episode folder {folder} does not exist")
    return sorted(
        path
        for path in folder.rglob("*.npz")
        if not path.name.startswith(".") and TMP_MARKER not in path.name
    )


# --------------------------------------------------------------------------- validation


def _check(condition: bool, name: str, message: str) -> None:
    if not condition:
        raise EpisodeError(f"{name}: {message}")


def _describe(array: np.ndarray) -> str:
    return f"{array.dtype} {array.shape}"


def _validate_steps(arrays: Mapping[str, np.ndarray], name: str) -> int:
    """Check the per-step arrays and provenance; return the episode length T."""
    for key in (*STEP_KEYS, *PROVENANCE_KEYS):
        _check(key in arrays, name, f"missing key {key!r}")
    rewards = arrays["rewards"]
    _check(
        rewards.dtype == np.float32 and rewards.ndim == 1,
        name,
        f"rewards must be float32 (T,), got {_describe(rewards)}",
    )
    length = rewards.shape[0]
    _check(length >= 1, name, "episode has no steps")
    _check(bool(np.isfinite(rewards).all()), name, "rewards contain NaN or inf")
    for key in ("terminated", "truncated"):
        flags = arrays[key]
        _check(
            flags.dtype == np.bool_ and flags.shape == (length,),
            name,
            f"{key} must be bool ({length},), got {_describe(flags)}",
        )
    done = arrays["terminated"] | arrays["truncated"]
    _check(not done[:-1].any(), name, "terminated/truncated set before the last step")
    _check(bool(done[-1]), name, "last step is neither terminated nor truncated")

    actions = arrays["actions"]
    if actions.dtype == np.int32:
        _check(
            actions.shape == (length,),
            name,
            f"discrete actions must be int32 ({length},), got {_describe(actions)}",
        )
    else:
        _check(
            actions.dtype == np.float32
            and actions.ndim == 2
            and actions.shape[0] == length,
            name,
            f"actions must be float32 ({length}, A) or int32 ({length},), "
            f"got {_describe(actions)}",
        )
        _check(bool(np.isfinite(actions).all()), name, "actions contain NaN or inf")

    for key in ("env_id", "policy"):
        value = arrays[key]
        _check(
            value.shape == () and value.dtype.kind == "U",
            name,
            f"{key} must be a 0-d string, got {_describe(value)}",
        )
    seed = arrays["seed"]
    _check(
        seed.shape == () and seed.dtype.kind in "iu",
        name,
        f"seed must be a 0-d integer, got {_describe(seed)}",
    )

    spec = ENVS.get(str(arrays["env_id"]))
    if spec is not None:
        if spec.discrete:
            _check(
                actions.dtype == np.int32, name, f"{spec.env_id} actions are discrete"
            )
            _check(
                bool(((actions >= 0) & (actions < spec.action_size)).all()),
                name,
                f"discrete actions outside [0, {spec.action_size})",
            )
        else:
            _check(
                actions.ndim == 2 and actions.shape[1] == spec.action_size,
                name,
                f"{spec.env_id} actions must be (T, {spec.action_size}), got "
                f"{_describe(actions)}",
            )
    return length


def validate_episode(arrays: Mapping[str, np.ndarray], name: str = "episode") -> None:
    """Raise EpisodeError (naming ``name``) unless ``arrays`` is a valid episode."""
    length = _validate_steps(arrays, name)
    _check("obs" in arrays, name, "missing key 'obs'")
    obs = arrays["obs"]
    _check(
        obs.dtype == np.uint8 and obs.shape == (length + 1, *FRAME_SHAPE),
        name,
        f"obs must be uint8 {(length + 1, *FRAME_SHAPE)}, got {_describe(obs)}",
    )


def validate_latents(arrays: Mapping[str, np.ndarray], name: str = "latents") -> None:
    """Raise EpisodeError (naming ``name``) unless ``arrays`` is a valid latent file."""
    length = _validate_steps(arrays, name)
    for key in ("mu", "logvar"):
        _check(key in arrays, name, f"missing key {key!r}")
        value = arrays[key]
        _check(
            value.dtype == np.float32
            and value.ndim == 2
            and value.shape[0] == length + 1,
            name,
            f"{key} must be float32 ({length + 1}, Z), got {_describe(value)}",
        )
        _check(bool(np.isfinite(value).all()), name, f"{key} contains NaN or inf")
    _check(
        arrays["mu"].shape == arrays["logvar"].shape,
        name,
        "mu and logvar shapes differ",
    )
