"""Where dreams start: V's posterior at real frames, with M's state there.

By default the pool holds the first frame of every real episode with the state at zero,
exactly like the acting agent at reset. With ``branch_every`` = k > 0 it also holds
every k-th frame of every episode, with the state M reaches by reading the real episode
up to that frame (teacher forcing on V's posterior means): see ``dream/rollout.py``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from world_models.data.episodes import list_episodes, load_latents
from world_models.envs import EnvSpec
from world_models.models.mdnrnn import MDNRNN, action_to_input


class DreamStarts(NamedTuple):
    """The pool dreams start from: V's posterior at real frames and M's state there
    (``h``, ``c`` None: zero, the state at an episode's first frame)."""

    mu: np.ndarray  # (n, z)
    logvar: np.ndarray
    h: np.ndarray | None = None  # (n, hidden)
    c: np.ndarray | None = None


def load_dream_starts(
    run_dir: str | os.PathLike,
    rnn: MDNRNN | None = None,
    branch_every: int = 0,
    spec: EnvSpec | None = None,
) -> DreamStarts:
    """The start pool of ``run_dir``/latents: each episode's first frame and, with
    ``branch_every`` = k > 0, every k-th frame with M's (``rnn``) state there."""
    folder = Path(run_dir) / "latents"
    if not folder.is_dir():
        raise FileNotFoundError(f"no latent folder {folder}; run process_data.py first")
    paths = list_episodes(folder)
    if not paths:
        raise FileNotFoundError(f"no latent files under {folder}; run process_data.py")
    if branch_every < 0:
        raise ValueError(f"branch_every must be >= 0, got {branch_every}")
    if branch_every and (rnn is None or spec is None):
        raise ValueError("branched starts need M (rnn) and the env spec")
    episodes = [load_latents(path) for path in paths]
    if not branch_every:
        mu = np.stack([latents["mu"][0] for latents in episodes])
        logvar = np.stack([latents["logvar"][0] for latents in episodes])
        return DreamStarts(mu.astype(np.float32), logvar.astype(np.float32))
    return branch_starts(rnn, episodes, branch_every, spec)


def branch_starts(
    rnn: MDNRNN, episodes: list[dict[str, np.ndarray]], every: int, spec: EnvSpec
) -> DreamStarts:
    """Frames 0, k, 2k, ... of every episode (frames with a step after them) with the
    state M reaches reading the episode's means and actions up to that frame."""
    longest = max(latents["actions"].shape[0] for latents in episodes)
    mus, logvars, hs, cs = [], [], [], []
    for latents in episodes:
        steps = latents["actions"].shape[0]
        pad = longest - steps
        mu = np.asarray(latents["mu"], np.float32)
        inputs = np.asarray(action_to_input(latents["actions"], spec))
        # Padding to one length compiles the scan once; states past the end are unused.
        h, c = prefix_states(
            rnn,
            jnp.asarray(np.pad(mu[:steps], ((0, pad), (0, 0)))),
            jnp.asarray(np.pad(inputs, ((0, pad), (0, 0)))),
        )
        frames = np.arange(0, steps, every)
        mus.append(mu[frames])
        logvars.append(np.asarray(latents["logvar"], np.float32)[frames])
        hs.append(np.asarray(h)[frames])
        cs.append(np.asarray(c)[frames])
    return DreamStarts(*map(np.concatenate, (mus, logvars, hs, cs)))


@eqx.filter_jit
def prefix_states(
    rnn: MDNRNN, zs: Float[Array, "t z"], inputs: Float[Array, "t a"]
) -> tuple[Float[Array, "t hidden"], Float[Array, "t hidden"]]:
    """M's state BEFORE each step t (row 0: the initial state)."""

    def advance(state, x):
        return rnn.advance(state, *x), state

    _, (hs, cs) = jax.lax.scan(advance, rnn.initial_state(), (zs, inputs))
    return hs, cs
