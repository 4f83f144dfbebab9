"""Where the world-model error is measured and how M predicts there: seeded windows
of held-out episodes, and M rolled open loop from a window's start (``MDNRNN.step``
fed back its own prediction under the episode's real actions)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import equinox as eqx
import jax
import numpy as np

from world_models.data.episodes import list_episodes
from world_models.data.samplers import split_by_episode
from world_models.models.mixture import mode_next_z, sample_next_z


def choose_windows(
    lengths: Sequence[int], count: int, span: int, first: int, seed: int
) -> list[tuple[int, int]]:
    """``count`` distinct (episode, start) pairs drawn uniformly among all windows with
    ``first <= start`` and ``start + span <= length`` (length = steps T)."""
    windows = [
        (episode, start)
        for episode, length in enumerate(lengths)
        for start in range(first, length - span + 1)
    ]
    if not windows:
        raise ValueError(
            f"no episode is long enough: need {first + span} steps, longest has "
            f"{max(lengths, default=0)}"
        )
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(windows), size=min(count, len(windows)), replace=False)
    return [windows[i] for i in chosen]


def open_loop_latents(
    rnn,
    warm_zs: jax.Array,
    warm_actions: jax.Array,
    z_start: jax.Array,
    actions: jax.Array,
    *,
    key: jax.Array,
    temperature: float | None,
) -> jax.Array:
    """One sequence: warm M on (warm_zs, warm_actions), then predict z_1..z_H from
    z_start under ``actions`` (H, A), feeding back the mode (temperature None) or a
    sample at ``temperature``."""

    def warm(state, inputs):
        state, _ = rnn.step(state, *inputs)
        return state, None

    state, _ = jax.lax.scan(warm, rnn.initial_state(), (warm_zs, warm_actions))

    def predict(carry, inputs):
        state, z = carry
        action, step_key = inputs
        state, out = rnn.step(state, z, action)
        if temperature is None:
            z = mode_next_z(out)
        else:
            z = sample_next_z(out, step_key, temperature)
        return (state, z), z

    keys = jax.random.split(key, actions.shape[0])
    _, zs = jax.lax.scan(predict, (state, z_start), (actions, keys))
    return zs


@eqx.filter_jit
def batched_open_loop(rnn, warm_zs, warm_actions, z_start, actions, keys, temperature):
    """``open_loop_latents`` vmapped over a leading sequence axis."""
    return jax.vmap(
        lambda wz, wa, z, a, k: open_loop_latents(
            rnn, wz, wa, z, a, key=k, temperature=temperature
        )
    )(warm_zs, warm_actions, z_start, actions, keys)


def held_out_paths(run_dir: str | os.PathLike, config, kind: str) -> list[Path]:
    """The held-out episodes of ``run_dir``/``kind`` ("data" or "latents"): M's
    validation split of the latent files (rnn.val_fraction, rnn.seed, as train_rnn uses
    it), mapped to the matching episode files for "data"."""
    run_dir = Path(run_dir)
    latents = run_dir / "latents"
    source = latents if latents.is_dir() else run_dir / kind
    paths = list_episodes(source)
    _, held_out = split_by_episode(paths, config.rnn.val_fraction, config.rnn.seed)
    if not held_out:
        raise ValueError(
            f"{source}: no held-out episodes ({len(paths)} files, rnn.val_fraction="
            f"{config.rnn.val_fraction}); need at least two episodes and a fraction > 0"
        )
    if source.name == kind:
        return held_out
    mapped = [run_dir / kind / path.relative_to(source) for path in held_out]
    missing = [str(path) for path in mapped if not path.is_file()]
    if missing:
        raise FileNotFoundError(
            f"held-out latent files have no episode file: {missing}"
        )
    return mapped


def window_arrays(
    episodes: Sequence[Mapping[str, np.ndarray]],
    windows: Sequence[tuple[int, int]],
    warmup: int,
    horizon: int,
    key: str,
) -> np.ndarray:
    if key == "actions":
        return np.stack(
            [episodes[e][key][s - warmup : s + horizon] for e, s in windows]
        )
    return np.stack(
        [episodes[e][key][s - warmup : s + horizon + 1] for e, s in windows]
    )
