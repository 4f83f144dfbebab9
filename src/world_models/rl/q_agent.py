"""A Q-network's policy in the real environment, and the Q-network's folder.

The Q-agent runs V and M exactly as the CMA-ES agent does (``agent.agent_step``: V
encodes the frame, z is drawn with ``latent_key(seed, step)``, h is M's state before
it steps, M steps on the action sent), but its action is the action set's entry at
argmax Q([z, h]), or with probability ε a uniform entry (drawn from the episode's RNG,
as the agent's discrete exploration is).

A Q-network's folder holds ``q_network.eqx`` (its leaves) and ``q_network.json``
(what rebuilds and checks it: env, the sizes of z and h, hidden width, action set,
training settings).

Registered policy (``policies.make_policy``):
  q_agent  kwargs run_dir, q_dir (default RUN/dqn), epsilon (default 0)
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from world_models.agent import Agent, encode_latent
from world_models.checkpoint import (
    CheckpointError,
    read_module_info,
    read_module_leaves,
    save_module_folder,
)
from world_models.config import Config
from world_models.data.policies import register_policy
from world_models.envs import EnvSpec, get_spec
from world_models.models.mdnrnn import MDNRNN
from world_models.models.vae import ConvVAE
from world_models.rl.dqn_core import q_network
from world_models.run_models import load_models

DREAM_Q_DIR = "dqn"  # RUN/dqn: scripts/train_dqn.py's Q-network trained in the dream
Q_NETWORK_FILENAME = "q_network.eqx"
Q_INFO_FILENAME = "q_network.json"


class QPolicy(eqx.Module):
    network: eqx.nn.MLP
    actions: Array  # the env action of each Q-value


def choose_by_q(
    policy: QPolicy, z: Array, h: Array, exploration: Array, spec: EnvSpec
) -> tuple[Array, Array]:
    """``agent_step``'s choice for a Q-network: the index of the best Q-value, or the
    index ``exploration`` forces (-1: none); M steps on that index's env action."""
    index = policy.network(jnp.concatenate([z, h])).argmax()
    index = jnp.where(exploration >= 0, exploration, index).astype(jnp.int32)
    return policy.actions[index], index


@eqx.filter_jit
def _features(vae: ConvVAE, h: Array, frame: Array, seed: Array, step: Array) -> Array:
    return jnp.concatenate([encode_latent(vae, frame, seed, step), h])


class QAgent(Agent):
    """V+M with a Q-network's choice; follows the ``policies.Policy`` protocol.

    After each ``act``, ``last_features`` ([z, h] the Q-network saw) and
    ``last_choice`` (the index into the action set taken) are available to a learner.
    """

    choose = staticmethod(choose_by_q)

    def __init__(
        self,
        vae: ConvVAE,
        rnn: MDNRNN,
        network: eqx.nn.MLP,
        actions: np.ndarray,
        spec: EnvSpec,
        epsilon: float = 0.0,
    ):
        self.actions = np.asarray(actions)
        policy = QPolicy(network, jnp.asarray(self.actions))
        super().__init__(vae, rnn, policy, spec, noise=epsilon)

    @property
    def network(self) -> eqx.nn.MLP:
        return self.controller.network

    @network.setter
    def network(self, network: eqx.nn.MLP) -> None:
        self.controller = QPolicy(network, self.controller.actions)

    def reset(self, seed: int) -> None:
        super().reset(seed)
        self.last_features: np.ndarray | None = None
        self.last_choice: int | None = None

    def _exploration(self) -> np.ndarray:
        explores = self.noise > 0 and self.rng.random() < self.noise
        return np.int32(self.rng.integers(len(self.actions)) if explores else -1)

    def act(
        self, frame: np.ndarray, raw_obs: np.ndarray | None = None
    ) -> np.ndarray | int:
        h = self.state[0]
        action = super().act(frame, raw_obs)
        self.last_features = np.concatenate([self.last_z, np.asarray(h)])
        return action

    def _env_action(self, choice: Array) -> np.ndarray | int:
        self.last_choice = int(choice)
        action = self.actions[self.last_choice]
        return int(action) if self.spec.discrete else action.copy()

    def features(self, frame: np.ndarray) -> np.ndarray:
        """[z, h] of ``frame`` as the next ``act`` would see it, without acting (the
        features of an episode's last frame, which no action follows)."""
        return np.asarray(_features(
            self.vae, self.state[0], jnp.asarray(frame),
            jnp.asarray(self.seed, jnp.uint32),
            jnp.asarray(self.step_index, jnp.uint32)))


def save_q_network(
    directory: str | os.PathLike,
    network: eqx.nn.MLP,
    actions: np.ndarray,
    settings: Any,
    config: Config,
) -> Path:
    """Write ``network`` (over [z, h] of ``config``'s V and M) and its action set to
    ``directory``; ``settings``: the training's (a dataclass or a dict)."""
    directory = Path(directory)
    actions = np.asarray(actions)
    obs_size = config.vae.z_dim + config.rnn.hidden_size
    if (network.in_size, network.out_size) != (obs_size, len(actions)):
        raise ValueError(
            f"a Q-network of {network.in_size} inputs and {network.out_size} outputs "
            f"does not fit [z, h] of size {obs_size} and {len(actions)} actions")
    if dataclasses.is_dataclass(settings):
        settings = dataclasses.asdict(settings)
    info = dict(env_id=config.env_id, z_dim=config.vae.z_dim,
                rnn_hidden_size=config.rnn.hidden_size, hidden=network.width_size,
                actions=actions.tolist(), action_dtype=str(actions.dtype),
                settings=settings)
    return save_module_folder(directory, network, info, Q_NETWORK_FILENAME,
                              Q_INFO_FILENAME)


def load_q_network(
    directory: str | os.PathLike, config: Config
) -> tuple[eqx.nn.MLP, np.ndarray, dict[str, Any]]:
    """(network, action set, the folder's json) of a Q-network saved for the V and M
    of ``config``; CheckpointError if it is missing, corrupt or made for others."""
    def parse(info):
        actions = np.asarray(info["actions"], info["action_dtype"])
        sizes = (info["z_dim"], info["rnn_hidden_size"])
        return info, actions, sizes, info["hidden"], info["env_id"]

    info, actions, sizes, hidden, env_id = read_module_info(
        directory, Q_INFO_FILENAME,
        f"no Q-network in {directory}: train one with scripts/train_dqn.py", parse)
    if env_id != config.env_id:
        raise CheckpointError(
            f"the Q-network in {directory} plays {env_id}, not {config.env_id}")
    expected = (config.vae.z_dim, config.rnn.hidden_size)
    if tuple(sizes) != expected:
        raise CheckpointError(
            f"the Q-network in {directory} reads [z, h] of sizes {tuple(sizes)}; this "
            f"run's V and M give {expected}")
    template = q_network(sum(sizes), len(actions), hidden, jax.random.key(0))
    network = read_module_leaves(Path(directory) / Q_NETWORK_FILENAME, template)
    return network, actions, info


def make_q_agent(
    env_id: str,
    run_dir: str,
    q_dir: str | None = None,
    epsilon: float = 0.0,
) -> QAgent:
    """V and M of ``run_dir`` with the Q-network of ``q_dir`` (default RUN/dqn)."""
    run_dir = str(Path(run_dir))
    config, vae, rnn = load_models(run_dir)
    if config.env_id != env_id:
        raise ValueError(f"{run_dir} was trained on {config.env_id}, not {env_id}")
    q_dir = Path(run_dir) / DREAM_Q_DIR if q_dir is None else q_dir
    network, actions, _ = load_q_network(q_dir, config)
    return QAgent(vae, rnn, network, actions, get_spec(env_id), epsilon=epsilon)


register_policy("q_agent", make_q_agent)
