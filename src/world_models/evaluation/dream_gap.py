"""Where a controller's dream leaves reality: its dream branched off its own real
episodes.

At frames t = 0, k, 2k, ... of a real episode the controller played, three sums over the
next ``horizon`` steps are set side by side: the rewards reality paid, M's reward
predictions read along the real frames (teacher forcing: M's reward head alone), and
the controller's dream started from that frame's latent and M's state there (M's
dynamics and reward head together). Teacher forcing near reality and the dream far
above it means the dream imagines states reality did not reach (CarRacing: the road
keeps running under a car that is leaving it; ``docs/transfer.md``).
"""

from __future__ import annotations

import equinox as eqx
import jax
import numpy as np
from jaxtyping import Array, PRNGKeyArray

from world_models.dream.evolve import dream_estimate
from world_models.dream.rollout import make_dream
from world_models.dream.starts import DreamStarts, branch_starts
from world_models.envs import EnvSpec
from world_models.models.controller import Controller
from world_models.models.mdnrnn import MDNRNN, action_to_input


@eqx.filter_jit
def _teacher_forced_rewards(rnn: MDNRNN, zs: Array, inputs: Array) -> Array:
    return rnn(zs, inputs)[1].reward


def dream_gap(
    rnn: MDNRNN,
    episodes: list[dict[str, np.ndarray]],
    template: Controller,
    params: Array,
    spec: EnvSpec,
    every: int,
    horizon: int,
    temperature: float,
    rollouts: int,
    key: PRNGKeyArray,
) -> list[dict[str, float]]:
    """One row per (episode, branch frame t) with ``t + horizon`` inside the episode:
    episode, t, real, teacher_forced, dream (mean over ``rollouts`` dreams)."""
    if every <= 0 or horizon <= 0:
        raise ValueError(f"every ({every}) and horizon ({horizon}) must be > 0")
    rows = []
    for index, latents in enumerate(episodes):
        steps = latents["actions"].shape[0]
        inputs = action_to_input(latents["actions"], spec)
        predicted = np.asarray(_teacher_forced_rewards(
            rnn, np.asarray(latents["mu"][:steps], np.float32), inputs
        ))
        starts = branch_starts(rnn, [latents], every, spec)
        for row, t in enumerate(range(0, steps, every)):
            if t + horizon > steps:
                break
            start = DreamStarts(*(field[row : row + 1] for field in starts))
            dream = make_dream(rnn, start, template, spec, horizon, temperature)
            estimate, _ = dream_estimate(
                dream, params, jax.random.fold_in(key, t), rollouts
            )
            rows.append(dict(
                episode=index,
                t=t,
                real=float(latents["rewards"][t : t + horizon].sum()),
                teacher_forced=float(predicted[t : t + horizon].sum()),
                dream=float(estimate),
            ))
    return rows
