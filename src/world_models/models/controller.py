"""Controller C: a linear map (or small MLP) from [z_t, h_t] to an action.

CMA-ES searches over a flat parameter vector; ``controller_to_flat`` and
``controller_from_flat`` convert between that vector and the module. The action head
turns the controller's raw outputs into an action the environment accepts: CarRacing
squashes with tanh and maps to steer in [-1, 1], gas and brake in [0, 1]; discrete envs
take the argmax of the logits.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float

from world_models.config import Config
from world_models.envs import EnvSpec, get_spec

CONTROLLER_KINDS = ("linear", "mlp")


class LinearController(eqx.Module):
    """raw action = W [z, h] + b (the paper's controller, 867 parameters)."""

    linear: eqx.nn.Linear

    def __init__(self, in_size: int, out_size: int, *, key: jax.Array):
        self.linear = eqx.nn.Linear(in_size, out_size, key=key)

    def __call__(self, features: Float[Array, " F"]) -> Float[Array, " A"]:
        return self.linear(features)


class MLPController(eqx.Module):
    """One tanh hidden layer over [z, h]."""

    mlp: eqx.nn.MLP

    def __init__(self, in_size: int, out_size: int, hidden: int, *, key: jax.Array):
        self.mlp = eqx.nn.MLP(
            in_size, out_size, hidden, depth=1, activation=jnp.tanh, key=key
        )

    def __call__(self, features: Float[Array, " F"]) -> Float[Array, " A"]:
        return self.mlp(features)


Controller = LinearController | MLPController


def make_controller(config: Config, *, key: jax.Array) -> Controller:
    """The controller of ``config`` over [z (vae.z_dim), h (rnn.hidden_size)]."""
    spec = get_spec(config.env_id)
    in_size = config.vae.z_dim + config.rnn.hidden_size
    if config.dream.controller == "linear":
        return LinearController(in_size, spec.action_size, key=key)
    if config.dream.controller == "mlp":
        return MLPController(
            in_size, spec.action_size, config.dream.mlp_hidden, key=key
        )
    raise ValueError(
        f"unknown controller kind {config.dream.controller!r}; "
        f"known: {CONTROLLER_KINDS}"
    )


def num_parameters(controller: Controller) -> int:
    return int(controller_to_flat(controller).size)


def controller_to_flat(controller: Controller) -> Float[Array, " D"]:
    flat, _ = ravel_pytree(eqx.filter(controller, eqx.is_array))
    return flat


def controller_from_flat(template: Controller, flat: Float[Array, " D"]) -> Controller:
    """``template`` with its parameters replaced by ``flat`` (fine under jit/vmap)."""
    params, static = eqx.partition(template, eqx.is_array)
    expected, unravel = ravel_pytree(params)
    if flat.shape != expected.shape:
        raise ValueError(
            f"controller expects {expected.size} parameters, "
            f"got an array of shape {flat.shape}"
        )
    return eqx.combine(unravel(flat), static)


def zero_controller(template: Controller) -> Controller:
    """All parameters zero: CarRacing drives straight at half gas, no brake."""
    return controller_from_flat(template, jnp.zeros_like(controller_to_flat(template)))


def action_head(raw: Float[Array, " A"], spec: EnvSpec) -> Array:
    """Raw controller outputs -> the env's action (floats, or int32 if discrete)."""
    if spec.discrete:
        return jnp.argmax(raw).astype(jnp.int32)
    squashed = jnp.tanh(raw)
    if spec.action_squash == "car":
        steer, gas, brake = squashed[0], squashed[1], squashed[2]
        return jnp.stack([steer, (gas + 1.0) / 2.0, jnp.clip(brake, 0.0, 1.0)])
    return squashed


SATURATION = 0.95  # |tanh(raw)| above this is inverted as this, so targets stay finite
BRAKE_OFF_RAW = -0.5  # a CarRacing brake of 0 is any raw output <= 0: ask for this one


def raw_targets(actions: np.ndarray, env_id: str) -> np.ndarray:
    """Raw outputs that ``action_head`` turns into ``actions`` (continuous envs): the
    targets for fitting a controller to recorded actions."""
    spec = get_spec(env_id)
    if spec.discrete:
        raise ValueError(f"{env_id}: a least-squares fit needs continuous actions")
    actions = np.asarray(actions, np.float64)
    if spec.action_squash != "car":
        return np.arctanh(np.clip(actions, -SATURATION, SATURATION))
    steer = np.arctanh(np.clip(actions[:, 0], -SATURATION, SATURATION))
    gas = np.arctanh(np.clip(2 * actions[:, 1] - 1, -SATURATION, SATURATION))
    brake = np.where(
        actions[:, 2] > 0,
        np.arctanh(np.clip(actions[:, 2], 0, SATURATION)),
        BRAKE_OFF_RAW,
    )
    return np.stack([steer, gas, brake], axis=1)


def head_bounds(spec: EnvSpec) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) of the continuous actions ``action_head`` produces."""
    if spec.discrete:
        raise ValueError(f"{spec.env_id} has discrete actions; no bounds")
    low = -np.ones(spec.action_size, np.float32)
    high = np.ones(spec.action_size, np.float32)
    if spec.action_squash == "car":
        low[1:] = 0.0  # gas and brake
    return low, high


def act(
    controller: Controller, z: Float[Array, " Z"], h: Float[Array, " H"], spec: EnvSpec
) -> Array:
    """The action for latent ``z`` and M's hidden state ``h`` (before M steps)."""
    return action_head(controller(jnp.concatenate([z, h])), spec)
