"""The V+M+C agent acting in the real environment, as a collection/evaluation policy.

Each step mirrors one dream step exactly: the frame is encoded by V, z is drawn from V's
posterior (the dream's start latents are posterior draws and M was trained on such
draws, so the controller always sees the same kind of z), the action is C([z, h]) with h
M's hidden state BEFORE stepping, then M steps on (z, action) — the action actually sent
to the env, which differs from C's only when exploration noise is on. The posterior
noise of step t comes from ``latent_key(seed, t)``: an episode replays from its seed.

Registered policies (``policies.make_policy``):
  agent      kwargs run_dir, controller ("best" | "mean" | "zero") or params (flat);
             it acts with the run's ``dream.action_noise`` (0 by default), the kept
             controller at the level its final check chose (``kept_action_noise``);
             on CarRacing with the run's ``dream.speed_limit`` (``Agent``)
  on_policy  the same with exploration ``noise`` instead: Gaussian noise of that std
             on continuous actions (clipped to the head's range), epsilon-random with
             eps=``noise`` on discrete actions.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, PRNGKeyArray

from world_models.data.car_view import GAS, dashboard_speed
from world_models.data.policies import register_policy
from world_models.dream.search import load_search
from world_models.envs import EnvSpec, get_spec
from world_models.export import (
    exported_action_noise,
    is_exported,
    load_exported,
    write_exported,
)
from world_models.models.controller import (
    Controller,
    act,
    controller_from_flat,
    head_bounds,
    make_controller,
    zero_controller,
)
from world_models.models.mdnrnn import MDNRNN, action_to_input
from world_models.models.mixture import MDNOutput
from world_models.models.vae import ConvVAE, frames_to_float, sample_posterior
from world_models.run_directory import load_run_config
from world_models.run_models import load_models

CONTROLLER_SOURCES = ("best", "mean", "zero")


def latent_key(seed: int, step: int | Array) -> PRNGKeyArray:
    """The key of the posterior draw at ``step`` of the episode seeded ``seed``."""
    return jax.random.fold_in(jax.random.key(seed), step)


def encode_latent(vae: ConvVAE, frame: Array, seed: Array, step: Array) -> Array:
    """z of a real frame: V's posterior drawn with ``latent_key(seed, step)``."""
    mu, logvar = vae.encode(frames_to_float(frame))
    return sample_posterior(mu, logvar, latent_key(seed, step))


def explore_controller(
    controller: Controller, z: Array, h: Array, exploration: Array, spec: EnvSpec
) -> tuple[Array, Array]:
    """C's action on [z, h] with ``exploration`` applied (see ``agent_step``), as
    (the action sent to the env, what ``agent_step`` returns of it): both the same."""
    action = act(controller, z, h, spec)
    if spec.discrete:
        taken = jnp.where(exploration >= 0, exploration, action).astype(jnp.int32)
    else:
        low, high = head_bounds(spec)
        taken = jnp.clip(action + exploration, low, high)
    return taken, taken


@eqx.filter_jit
def agent_step(
    vae: ConvVAE,
    rnn: MDNRNN,
    controller: Controller,
    state: tuple[Array, Array],
    frame: Array,
    seed: Array,
    step: Array,
    exploration: Array,
    spec: EnvSpec,
    choose: Callable = explore_controller,
) -> tuple[tuple[Array, Array], Array, Array, MDNOutput]:
    """One real step of V+M+C in one compiled call, the dream step's twin: encode the
    frame, draw z (``latent_key(seed, step)``), act on [z, h], explore, step M on the
    action taken. Returns (M's new state, the choice, z, M's prediction).

    ``exploration`` is drawn on the host so its random stream does not depend on the
    models: for continuous actions a perturbation added before clipping to the head's
    range (zeros: none; -inf holds an action at its lower bound), for discrete ones
    the action forced by epsilon-exploration (-1: none). ``choose(controller, z, h,
    exploration, spec)`` makes the choice and returns (the env action M steps on, the
    choice returned): the controller's own rule by default; a Q-agent's picks from an
    action set (``rl.q_agent``).
    """
    z = encode_latent(vae, frame, seed, step)
    taken, choice = choose(controller, z, state[0], exploration, spec)
    state, output = rnn.step(state, z, action_to_input(taken, spec))
    return state, choice, z, output


class Agent:
    """V+M+C with optional exploration noise; follows the ``policies.Policy`` protocol.

    ``speed_limit`` > 0 (CarRacing): a governor cuts the gas whenever the dashboard of
    the raw observation shows more; M steps on the action sent, as with the noise.

    After each ``act``, ``last_z`` and ``last_output`` (M's prediction of the next z,
    this step's reward and termination) are available for visualisation."""

    choose = staticmethod(explore_controller)  # agent_step's choice of the action

    def __init__(
        self,
        vae: ConvVAE,
        rnn: MDNRNN,
        controller: Controller,
        spec: EnvSpec,
        noise: float = 0.0,
        speed_limit: float = 0.0,
    ):
        if noise < 0:
            raise ValueError(f"exploration noise must be >= 0, got {noise}")
        if speed_limit and spec.action_squash != "car":
            raise ValueError(f"a speed limit reads CarRacing's dashboard; "
                             f"{spec.env_id} has none")
        self.vae, self.rnn, self.controller, self.spec = vae, rnn, controller, spec
        self.noise, self.speed_limit = float(noise), float(speed_limit)
        self.reset(0)

    def reset(self, seed: int) -> None:
        self.seed = int(seed)
        self.step_index = 0
        self.state = self.rnn.initial_state()
        self.rng = np.random.default_rng(seed)
        self.last_z: np.ndarray | None = None
        self.last_output: MDNOutput | None = None

    def _exploration(self) -> np.ndarray:
        """This step's draw of ``agent_step``'s exploration from the episode's RNG."""
        if self.spec.discrete:
            explores = self.noise > 0 and self.rng.random() < self.noise
            action = self.rng.integers(self.spec.action_size) if explores else -1
            return np.int32(action)
        if self.noise == 0:
            return np.zeros(self.spec.action_size, np.float32)
        draw = self.rng.standard_normal(self.spec.action_size)
        return (self.noise * draw).astype(np.float32)

    def act(
        self, frame: np.ndarray, raw_obs: np.ndarray | None = None
    ) -> np.ndarray | int:
        exploration = self._exploration()
        if self.speed_limit and dashboard_speed(raw_obs) > self.speed_limit:
            exploration[GAS] = -np.inf  # the noise is drawn all the same: paired runs
        self.state, choice, z, self.last_output = agent_step(
            self.vae,
            self.rnn,
            self.controller,
            self.state,
            jnp.asarray(frame),
            jnp.asarray(self.seed, jnp.uint32),
            jnp.asarray(self.step_index, jnp.uint32),
            jnp.asarray(exploration),
            self.spec,
            self.choose,
        )
        self.last_z = np.asarray(z)
        self.step_index += 1
        return self._env_action(choice)

    def _env_action(self, choice: Array) -> np.ndarray | int:
        return int(choice) if self.spec.discrete else np.asarray(choice)


def load_controller(run_dir: str | os.PathLike, source: str = "best") -> Controller:
    """The controller of ``run_dir``: the best by real score, the CMA mean, or zeros."""
    if source not in CONTROLLER_SOURCES:
        raise ValueError(
            f"unknown controller source {source!r}; known: {CONTROLLER_SOURCES}"
        )
    if is_exported(run_dir):
        if source == "mean":
            raise ValueError(f"{run_dir} is an exported agent: it keeps no CMA mean")
        controller = load_exported(run_dir)[3]
        return zero_controller(controller) if source == "zero" else controller
    config = load_run_config(run_dir)
    template = make_controller(config, key=jax.random.key(0))
    if source == "zero":
        return zero_controller(template)
    search = load_search(run_dir, config)
    flat = search["best_params"] if source == "best" else search["es_state"].mean
    return controller_from_flat(template, jnp.asarray(flat))


def kept_action_noise(run_dir: str | os.PathLike) -> float:
    """The action noise the kept controller of ``run_dir`` (a run, or an exported
    agent) acts at: the level its final check chose among ``dream.final_check_noise``,
    else the run's ``dream.action_noise``."""
    if is_exported(run_dir):
        return exported_action_noise(run_dir)
    config = load_run_config(run_dir)
    if not config.dream.final_check_noise:
        return config.dream.action_noise
    stored = float(load_search(run_dir, config)["best_action_noise"])
    # the level as configured: its float32 here would play other episodes than it did
    levels = (config.dream.action_noise, *config.dream.final_check_noise)
    return min(levels, key=lambda level: abs(level - stored))


def export_agent(
    run_dir: str | os.PathLike, out_dir: str | os.PathLike, controller: str = "best"
) -> Path:
    """Write the V, M and ``controller`` of ``run_dir`` to ``out_dir`` (export.py),
    with the noise that controller acts at."""
    _, vae, rnn = load_models(str(Path(run_dir)))
    models = dict(vae=vae, rnn=rnn, controller=load_controller(run_dir, controller))
    noise = (kept_action_noise(run_dir) if controller == "best"
             else load_run_config(run_dir).dream.action_noise)
    return write_exported(run_dir, out_dir, models, controller, noise)


def make_agent(
    env_id: str,
    run_dir: str,
    controller: str = "best",
    params: Sequence[float] | None = None,
    noise: float | None = None,
    speed_limit: float | None = None,
) -> Agent:
    """V and M of ``run_dir`` with the ``controller`` source, or flat ``params``,
    acting with ``noise`` (default: ``kept_action_noise`` for the kept controller, the
    run's ``dream.action_noise`` otherwise) and ``speed_limit`` (default: the run's
    ``dream.speed_limit``).

    ``params`` is a tuple of floats when sent to the worker pool (kwargs are hashed).
    """
    run_dir = str(Path(run_dir))
    config, vae, rnn = load_models(run_dir)
    if config.env_id != env_id:
        raise ValueError(f"{run_dir} was trained on {config.env_id}, not {env_id}")
    if params is not None:
        template = make_controller(config, key=jax.random.key(0))
        policy_controller = controller_from_flat(
            template, jnp.asarray(params, jnp.float32)
        )
    else:
        policy_controller = load_controller(run_dir, controller)
    if noise is None:
        kept = params is None and controller == "best"
        noise = kept_action_noise(run_dir) if kept else config.dream.action_noise
    if speed_limit is None:
        speed_limit = config.dream.speed_limit
    return Agent(vae, rnn, policy_controller, get_spec(env_id), noise=noise,
                 speed_limit=speed_limit)


def make_on_policy(
    env_id: str,
    run_dir: str,
    noise: float = 0.1,
    controller: str = "best",
    params: Sequence[float] | None = None,
) -> Agent:
    return make_agent(env_id, run_dir, controller, params, noise)


register_policy("agent", make_agent)
register_policy("on_policy", make_on_policy)
