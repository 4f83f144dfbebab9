"""DQN in the real environment, with V and M as fixed feature extractors.

One env is stepped in this process by the Q-agent (``rl.q_agent``): V encodes the
frame, z is drawn, the action is ε-greedy on Q([z, h]), M steps on it. Transitions
([z, h], index, reward, next [z, h], terminated) enter a circular replay buffer of
numpy arrays; from ``warmup`` env steps on, each env step takes one jitted Huber-loss
gradient step (``rl.dqn_core.td_update``, the dream DQN's) on a uniform minibatch,
and the target network is copied every ``target_every`` steps. ε decays linearly over
``epsilon_iterations`` steps. The settings are ``DQNSettings`` with ``iterations``
read as env steps (``num_envs`` is ignored: one env). A time limit does not stop the
bootstrap; only termination does.

Episode k of training seed s plays real seed
``seeds.real_learner_seeds("dqn_real", s)[k]``;
exploration comes from the episode's RNG (the Q-agent's) and minibatch rows from an
RNG seeded by (s, env step). The state at an episode boundary (networks, optimizer,
replay buffer, counters) therefore fixes the rest of the run: it is checkpointed
there, and a killed run resumes from it to the result of an uninterrupted one. A run
asked for more steps than it has continues from its last boundary.

Writes OUT (default RUN/dqn_real): the Q-network (``q_agent.save_q_network``),
``metrics.jsonl`` (per episode, at step = env steps so far: episode_return, the mean
loss, ε, episode_length), ``curve.png``, ``summary.json`` (the real env steps
consumed) and ``ckpt/``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import shutil
import time
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from world_models.checkpoint import Checkpointer
from world_models.dream.dqn import DQNSettings, action_set
from world_models.envs import (
    get_spec,
    make_env,
    observed_frame,
    step_limit,
)
from world_models.files import write_json
from world_models.logs import (
    METRICS_FILENAME,
    MetricsLogger,
    plot_curves,
    read_metrics,
)
from world_models.rl import SUMMARY_FILENAME
from world_models.rl.dqn_core import Transitions, q_network, td_update
from world_models.rl.q_agent import QAgent, save_q_network
from world_models.run_models import load_models
from world_models.seeds import real_learner_seeds

REAL_Q_DIR = "dqn_real"


def epsilon_at(settings: DQNSettings, env_step: int) -> float:
    return float(np.interp(env_step, [0, settings.epsilon_iterations],
                           [settings.epsilon_start, settings.epsilon_end]))


def _fingerprint(*models: Any) -> str:
    """A digest of the models' parameters: a run resumes only on the same V and M."""
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(eqx.filter(models, eqx.is_array)):
        digest.update(np.asarray(leaf).tobytes())
    return digest.hexdigest()[:16]


def _initial_state(settings: DQNSettings, params: Any, obs_size: int,
                   optimizer: optax.GradientTransformation) -> dict:
    size = settings.buffer_size
    replay = Transitions(
        np.zeros((size, obs_size), np.float32), np.zeros(size, np.int32),
        np.zeros(size, np.float32), np.zeros((size, obs_size), np.float32),
        np.zeros(size, np.float32))
    return dict(params=params, target=params, opt_state=optimizer.init(params),
                replay=replay, counters=np.zeros(4, np.int32))


_td_update = eqx.filter_jit(td_update)


@functools.cache
def _adam(learning_rate: float) -> optax.GradientTransformation:
    """One optimizer object per rate: ``_td_update`` compiles once per optimizer."""
    return optax.adam(learning_rate)


class _Learner:
    """The state between episode boundaries: networks, optimizer, replay, counters."""

    def __init__(self, state: dict, static: Any, settings: DQNSettings,
                 optimizer: optax.GradientTransformation, seed: int):
        self.params, self.target = state["params"], state["target"]
        self.opt_state, self.static = state["opt_state"], static
        self.replay = Transitions(*(np.array(x) for x in state["replay"]))
        counters = [int(c) for c in np.asarray(state["counters"])]
        self.env_steps, self.episodes, self.filled, self.cursor = counters
        self.settings, self.optimizer, self.seed = settings, optimizer, seed

    def state(self) -> dict:
        counters = [self.env_steps, self.episodes, self.filled, self.cursor]
        return dict(params=self.params, target=self.target, opt_state=self.opt_state,
                    replay=self.replay, counters=np.array(counters, np.int32))

    @property
    def network(self) -> eqx.nn.MLP:
        return eqx.combine(self.params, self.static)

    def store(self, obs, action, reward, next_obs, done) -> None:
        for column, value in zip(self.replay, (obs, action, reward, next_obs, done),
                                 strict=True):
            column[self.cursor] = value
        self.cursor = (self.cursor + 1) % self.settings.buffer_size
        self.filled = min(self.filled + 1, self.settings.buffer_size)

    def learn(self) -> jax.Array | None:
        """This env step's gradient step (after warmup) and target copy; the loss."""
        s, loss = self.settings, None
        if self.env_steps >= s.warmup and self.filled > 0:
            rng = np.random.default_rng((self.seed, self.env_steps))
            rows = rng.integers(0, self.filled, s.batch_size)
            batch = Transitions(*(column[rows] for column in self.replay))
            self.params, self.opt_state, loss = _td_update(
                self.optimizer, s.gamma, self.params, self.static, self.target,
                self.opt_state, batch)
        if self.env_steps % s.target_every == 0:
            self.target = self.params
        self.env_steps += 1
        return loss


def train_real_dqn(
    run_dir: str | os.PathLike,
    settings: DQNSettings,
    actions: np.ndarray | None = None,
    seed: int = 0,
    max_episode_steps: int = 0,
    out_dir: str | os.PathLike | None = None,
    fresh: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train (or resume) to ``settings.iterations`` env steps; returns the summary.

    ``actions``: the action set (default ``dqn.action_set``); ``max_episode_steps``
    caps an episode (0: the env's limit); ``fresh`` discards the saved run.
    """
    run_dir = Path(run_dir)
    out = run_dir / REAL_Q_DIR if out_dir is None else Path(out_dir)
    config, vae, rnn = load_models(str(run_dir))
    spec = get_spec(config.env_id)
    actions = action_set(spec) if actions is None else np.asarray(actions)
    settings = dataclasses.replace(settings, num_envs=1)
    episode_seeds = real_learner_seeds("dqn_real", seed)
    limit = step_limit(spec, max_episode_steps)
    if fresh:
        shutil.rmtree(out / "ckpt", ignore_errors=True)
        (out / METRICS_FILENAME).unlink(missing_ok=True)
    recorded = dict(dataclasses.asdict(settings), iterations=None)  # may grow
    checkpointer = Checkpointer(out / "ckpt", dict(
        recorded, env_id=config.env_id, actions=actions.tolist(), seed=seed,
        max_episode_steps=limit, models=_fingerprint(vae, rnn)), keep=2)
    optimizer = _adam(settings.learning_rate)
    obs_size = config.vae.z_dim + config.rnn.hidden_size
    params, static = eqx.partition(
        q_network(obs_size, len(actions), settings.hidden, jax.random.key(seed)),
        eqx.is_array)
    state = _initial_state(settings, params, obs_size, optimizer)
    if checkpointer.latest_step() is not None:
        state = checkpointer.restore(state)
    learner = _Learner(state, static, settings, optimizer, seed)
    logger = MetricsLogger(out, tensorboard=False)
    logger.truncate_after(learner.env_steps)
    agent = QAgent(vae, rnn, learner.network, actions, spec)
    env = make_env(config.env_id)
    started, played = time.perf_counter(), 0
    bar = tqdm(total=settings.iterations, initial=learner.env_steps, unit="step",
               desc="real DQN", disable=not progress)
    try:
        while learner.env_steps < settings.iterations:
            ended, row = _play_episode(env, agent, learner, episode_seeds, limit, bar)
            played += row["episode_length"]
            if ended:
                learner.episodes += 1
                logger.log(learner.env_steps, **row)
                checkpointer.save(learner.env_steps, learner.state())
    finally:
        bar.close()
        env.close()
        checkpointer.close()
        logger.close()
    seconds = time.perf_counter() - started
    save_q_network(out, learner.network, actions,
                   dict(dataclasses.asdict(settings), seed=seed,
                        max_episode_steps=limit), config)
    plot_curves(out / METRICS_FILENAME, ["episode_return"], out / "curve.png",
                title=f"{config.env_id}: DQN on [z, h] in the real env")
    recent = [row["episode_return"] for row in read_metrics(out / METRICS_FILENAME)]
    summary = dict(env_id=config.env_id, real_steps=learner.env_steps,
                   episodes=learner.episodes, steps_played_now=played,
                   seconds=seconds, steps_per_s=played / max(seconds, 1e-9),
                   recent_return=float(np.mean(recent[-10:])) if recent else None,
                   seed=seed, first_episode_seed=episode_seeds[0])
    write_json(out / SUMMARY_FILENAME, summary)
    return summary


def _play_episode(env, agent: QAgent, learner: _Learner, episode_seeds: range,
                  limit: int, bar: tqdm) -> tuple[bool, dict[str, float]]:
    """One episode from its start, learning every step, until it ends or the run's
    steps are spent: (whether it ended, its metrics row). One that did not end is
    replayed from its start by the next run."""
    settings, seed = learner.settings, episode_seeds[learner.episodes]
    observation, _ = env.reset(seed=seed)
    agent.reset(seed)
    frame = observed_frame(env, observation, agent.spec)
    pending, episode_return, losses, ended, length = None, 0.0, [], False, 0
    while not ended and learner.env_steps < settings.iterations:
        agent.noise = epsilon_at(settings, learner.env_steps)
        action = agent.act(frame)
        obs, choice = agent.last_features, agent.last_choice
        if pending is not None:
            learner.store(*pending, obs, 0.0)
        observation, reward, terminated, truncated, _ = env.step(action)
        frame = observed_frame(env, observation, agent.spec)
        episode_return += float(reward)
        length += 1
        ended = terminated or truncated or length == limit
        if ended:
            learner.store(obs, choice, reward, agent.features(frame), float(terminated))
        pending = (obs, choice, reward)
        loss = learner.learn()
        if loss is not None:
            losses.append(loss)
            agent.network = learner.network
        bar.update()
    loss = float(jnp.mean(jnp.stack(losses))) if losses else float("nan")
    return ended, dict(episode_return=episode_return, loss=loss, epsilon=agent.noise,
                       episode_length=length)
