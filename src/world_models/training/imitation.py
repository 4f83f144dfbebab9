"""A linear controller over [z, h] fitted to recorded actions (ridge regression).

Fitted to the heuristic drivers' episodes it tells what the controller class can do
with no dream at all, and gives the dream search a start that already drives
(docs/transfer.md, row 24). z is V's posterior mean of each frame, h is M's state before
the step with M teacher-forced from the episode's start, as the agent runs it. The
targets are the raw outputs that ``controller.action_head`` maps to the recorded
actions (``controller.raw_targets``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from world_models.config import Config
from world_models.data.episodes import load_latents
from world_models.dream.starts import prefix_states
from world_models.envs import EnvSpec, get_spec
from world_models.models.controller import (
    LinearController,
    make_controller,
    raw_targets,
)
from world_models.models.mdnrnn import MDNRNN, action_to_input


def controller_inputs(
    rnn: MDNRNN, mu: np.ndarray, actions: np.ndarray, spec: EnvSpec
) -> np.ndarray:
    """[z_t, h_t] of every step of one episode (T, Z + H); h_t is M's state before it
    reads (z_t, a_t), h_0 = 0."""
    zs = jnp.asarray(mu[: len(actions)])
    h, _ = prefix_states(rnn, zs, action_to_input(actions, spec))
    return np.concatenate([np.asarray(zs), np.asarray(h)], axis=1)


def fit_linear_controller(
    config: Config,
    rnn: MDNRNN,
    latent_paths: Sequence[str | os.PathLike],
    ridge: float = 1.0,
) -> tuple[LinearController, np.ndarray]:
    """The ridge-regression controller of the episodes in ``latent_paths`` and the R²
    of each raw output on them."""
    if config.dream.controller != "linear":
        raise ValueError(
            f"only a linear controller is fitted, not {config.dream.controller!r}"
        )
    if not latent_paths:
        raise ValueError("no episodes to fit the controller to")
    spec = get_spec(config.env_id)
    inputs, targets = [], []
    for path in latent_paths:
        latents = load_latents(path)
        inputs.append(controller_inputs(rnn, latents["mu"], latents["actions"], spec))
        targets.append(raw_targets(latents["actions"], config.env_id))
    x = np.concatenate(inputs).astype(np.float64)
    y = np.concatenate(targets)
    x1 = np.concatenate([x, np.ones((len(x), 1))], axis=1)
    penalty = ridge * np.eye(x1.shape[1])
    penalty[-1, -1] = 0.0  # the bias is not shrunk
    weights = np.linalg.solve(x1.T @ x1 + penalty, x1.T @ y)
    residual = y - x1 @ weights
    r2 = 1.0 - residual.var(axis=0) / np.maximum(y.var(axis=0), 1e-12)
    template = make_controller(config, key=jax.random.key(0))
    controller = eqx.tree_at(
        lambda c: (c.linear.weight, c.linear.bias),
        template,
        (
            jnp.asarray(weights[:-1].T, jnp.float32),
            jnp.asarray(weights[-1], jnp.float32),
        ),
    )
    return controller, r2
