"""Model-free PPO from the real environment's 64x64 frames: the baseline a world model
must beat. This module holds its settings, its network, the saved policy's folder and
the registered policy; ``rl/frame_training`` trains it.

The network is a scaled-down Nature CNN (conv 32 8x8/4, conv 64 4x4/2, conv 64 3x3/1,
dense 256) shared by a policy head and a value head, over the uint8 frame that
``preprocess_frame`` makes. Continuous actions: a Gaussian over the head's raw outputs
with a learned state-independent log std, the env's action being ``action_head`` of
the sample; discrete actions: a categorical over the head's logits (``rl/ppo_core``).

A saved policy is a folder: ``ppo_frames.json`` (env id and settings: what rebuilds
the network) and ``ppo_frames.eqx`` (its leaves). Registered policy
(``policies.make_policy``):
  ppo_frames  kwargs path (the folder); deterministic: the mean action, or the argmax
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, PRNGKeyArray

from world_models.checkpoint import (
    CheckpointError,
    read_module_info,
    read_module_leaves,
    save_module_folder,
)
from world_models.data.policies import register_policy
from world_models.envs import EnvSpec, get_spec
from world_models.models.controller import action_head
from world_models.seeds import LEARNER_RUNS

POLICY_INFO_FILENAME = "ppo_frames.json"
POLICY_LEAVES_FILENAME = "ppo_frames.eqx"
HIDDEN = 256
POLICY_HEAD_SCALE = 0.01  # a near-uniform first policy (small initial logits/means)


@dataclass(frozen=True)
class FramePPOSettings:
    num_envs: int = 4
    num_steps: int = 128  # env steps per env between updates
    total_steps: int = 1_000_000  # env steps of the whole run (all envs)
    epochs: int = 4
    minibatches: int = 4
    learning_rate: float = 2.5e-4
    max_grad_norm: float = 0.5
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip: float = 0.2
    entropy_coef: float = 0.01
    value_coef: float = 0.5
    log_std_init: float = -0.5
    # rewards as the learner sees them (returns are logged unscaled): a shared trunk
    # under a value loss of LunarLander's unscaled returns lost its policy's entropy
    reward_scale: float = 1.0
    seed: int = 0  # the network's draw, the JAX key, the block of episode seeds

    def __post_init__(self):
        problems = []
        sizes = ("num_envs", "num_steps", "epochs", "minibatches")
        problems += [f"{name} must be > 0" for name in sizes
                     if getattr(self, name) <= 0]
        if self.minibatches > 0 and (self.num_envs * self.num_steps) % self.minibatches:
            problems.append("num_envs x num_steps must divide into minibatches")
        if self.total_steps < self.num_envs * self.num_steps:
            problems.append("total_steps must hold at least one update "
                            "(num_envs x num_steps)")
        positive = ("learning_rate", "max_grad_norm", "clip", "reward_scale")
        problems += [f"{name} must be > 0" for name in positive
                     if not getattr(self, name) > 0]
        problems += [f"{name} must be in [0, 1]" for name in ("gamma", "gae_lambda")
                     if not 0 <= getattr(self, name) <= 1]
        problems += [f"{name} must be >= 0" for name in ("entropy_coef", "value_coef")
                     if not getattr(self, name) >= 0]
        if not 0 <= self.seed < LEARNER_RUNS:
            problems.append(f"seed must be in [0, {LEARNER_RUNS})")
        if problems:
            raise ValueError(f"FramePPOSettings: {'; '.join(problems)}")

    @property
    def batch(self) -> int:
        return self.num_envs * self.num_steps

    @property
    def updates(self) -> int:
        return -(-self.total_steps // self.batch)


class FrameActorCritic(eqx.Module):
    convs: tuple[eqx.nn.Conv2d, ...]
    dense: eqx.nn.Linear
    policy_head: eqx.nn.Linear
    value_head: eqx.nn.Linear
    log_std: Array

    def __init__(self, spec: EnvSpec, log_std_init: float, *, key: PRNGKeyArray):
        keys = jax.random.split(key, 6)
        self.convs = (
            eqx.nn.Conv2d(3, 32, 8, stride=4, key=keys[0]),
            eqx.nn.Conv2d(32, 64, 4, stride=2, key=keys[1]),
            eqx.nn.Conv2d(64, 64, 3, stride=1, key=keys[2]),
        )
        self.dense = eqx.nn.Linear(64 * 4 * 4, HIDDEN, key=keys[3])
        self.policy_head = eqx.nn.Linear(HIDDEN, spec.action_size, key=keys[4])
        self.value_head = eqx.nn.Linear(HIDDEN, 1, key=keys[5])
        self.log_std = jnp.full(spec.action_size, log_std_init, jnp.float32)

    def __call__(self, frame: Array) -> tuple[Array, Array]:
        """(raw outputs or logits, value) of one uint8 (64, 64, 3) frame."""
        x = jnp.transpose(frame.astype(jnp.float32) / 255.0, (2, 0, 1))
        for conv in self.convs:
            x = jax.nn.relu(conv(x))
        x = jax.nn.relu(self.dense(x.reshape(-1)))
        return self.policy_head(x), self.value_head(x)[0]


def network_shape(spec: EnvSpec, log_std_init: float) -> FrameActorCritic:
    """The network's structure, every leaf a ``jax.ShapeDtypeStruct``."""
    return eqx.filter_eval_shape(FrameActorCritic, spec, log_std_init,
                                 key=jax.random.key(0))


def new_network(spec: EnvSpec, log_std_init: float, seed: int) -> FrameActorCritic:
    """A fresh network, drawn as Equinox draws it (uniform within 1/sqrt(fan in)) but
    by numpy: JAX's initialisers take seconds per layer to compile on a CPU."""
    rng = np.random.default_rng(seed)

    def drawn(layer):
        bound = 1.0 / np.sqrt(np.prod(layer.weight.shape[1:]))
        return jax.tree.map(lambda leaf: jnp.asarray(
            rng.uniform(-bound, bound, leaf.shape).astype(np.float32)), layer)

    shape = network_shape(spec, log_std_init)
    policy_head = drawn(shape.policy_head)
    policy_head = eqx.tree_at(lambda head: head.weight, policy_head,
                              policy_head.weight * POLICY_HEAD_SCALE)
    return eqx.tree_at(
        lambda net: (net.convs, net.dense, net.policy_head, net.value_head,
                     net.log_std),
        shape,
        (tuple(drawn(conv) for conv in shape.convs), drawn(shape.dense), policy_head,
         drawn(shape.value_head),
         jnp.full(spec.action_size, log_std_init, jnp.float32)))


def greedy_action(net: FrameActorCritic, frame: Array, spec: EnvSpec) -> Array:
    """The deterministic action: ``action_head`` of the mean (argmax of the logits)."""
    return action_head(net(frame)[0], spec)


def save_policy(directory: str | os.PathLike, net: FrameActorCritic, env_id: str,
                settings: FramePPOSettings) -> Path:
    info = dict(env_id=env_id, settings=dataclasses.asdict(settings))
    return save_module_folder(directory, net, info, POLICY_LEAVES_FILENAME,
                              POLICY_INFO_FILENAME)


def load_policy(directory: str | os.PathLike, env_id: str
                ) -> tuple[FrameActorCritic, FramePPOSettings]:
    """The network saved in ``directory`` for ``env_id``; CheckpointError if there is
    none, or it is corrupt or plays another env."""
    saved_env, settings = read_module_info(
        directory, POLICY_INFO_FILENAME,
        f"no model-free PPO policy in {directory}: train one with "
        "scripts/train_model_free.py",
        lambda info: (info["env_id"], FramePPOSettings(**info["settings"])))
    if saved_env != env_id:
        raise CheckpointError(
            f"the model-free PPO policy in {directory} plays {saved_env}, not {env_id}")
    template = network_shape(get_spec(env_id), settings.log_std_init)
    net = read_module_leaves(Path(directory) / POLICY_LEAVES_FILENAME, template)
    return net, settings


_greedy = eqx.filter_jit(greedy_action)


class FramePPOPolicy:
    """A trained model-free PPO network playing deterministically."""

    def __init__(self, net: FrameActorCritic, spec: EnvSpec):
        self.net, self.spec = net, spec

    def reset(self, seed: int) -> None:
        pass  # deterministic: the seed only seeds the env

    def act(self, frame: np.ndarray, raw_obs: np.ndarray) -> np.ndarray | int:
        action = np.asarray(_greedy(self.net, jnp.asarray(frame), self.spec))
        return int(action) if self.spec.discrete else action


def make_ppo_frames_policy(env_id: str, path: str) -> FramePPOPolicy:
    net, _ = load_policy(path, env_id)
    return FramePPOPolicy(net, get_spec(env_id))


register_policy("ppo_frames", make_ppo_frames_policy)
