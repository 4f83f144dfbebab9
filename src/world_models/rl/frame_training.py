"""Training of the model-free PPO from real frames (``rl/ppo_frames``).

Each update plays ``num_steps`` vector steps of ``num_envs`` real envs
(``rl/frame_envs``), one jitted call per vector step to act, then updates the network
in one jitted call per rollout (GAE, then ``epochs`` x ``minibatches`` clipped-surrogate
steps: ``rl/ppo_core``, as PPO in the dream does). Envs run across updates: a finished
episode restarts at once on the next seed of the run's model-free block.

Truncation (the env's step limit: CarRacing's 1000 steps) is not an ending the agent
could see coming, so it is bootstrapped: the step's reward gains gamma x V(the frame it
reached) and the trajectory ends there. Termination ends with no bootstrap.

Resume is exact: a checkpoint at an update boundary holds the network, the optimizer,
the key, the update index and every env's episode book (seed, steps, return, actions);
resuming replays the unfinished episodes to where they were, so a resumed run ends
with the same parameters as an uninterrupted one. ``total_steps`` is not compared on
resume: a finished run can be extended.

``out_dir`` receives ``checkpoints/``, ``metrics.jsonl`` (a row per update, its step
the env steps so far: mean return of the episodes that ended, losses, env steps per
second, seconds of rollout and of update), ``curve.png`` (return against env steps),
the trained policy in ``policy/`` and ``summary.json`` (``real_steps``: the env steps
learnt from; a resume's replays are not counted).
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import numpy as np
from tqdm import tqdm

from world_models.checkpoint import Checkpointer
from world_models.envs import EnvSpec, get_spec
from world_models.files import write_json
from world_models.logs import MetricsLogger, plot_curves
from world_models.rl import SUMMARY_FILENAME
from world_models.rl.frame_envs import EpisodeBook, FrameEnvs
from world_models.rl.ppo_core import (
    Transition,
    advantages_of,
    make_optimizer,
    sample_action,
    update_epochs,
)
from world_models.rl.ppo_frames import (
    FrameActorCritic,
    FramePPOSettings,
    new_network,
    save_policy,
)

CHECKPOINT_DIRNAME = "checkpoints"
POLICY_DIRNAME = "policy"


@eqx.filter_jit
def _act(net: FrameActorCritic, frames, key, spec: EnvSpec):
    keys = jax.random.split(key, frames.shape[0])
    return jax.vmap(lambda frame, k: sample_action(net, frame, k, spec))(frames, keys)


@eqx.filter_jit
def _values(net: FrameActorCritic, frames):
    return jax.vmap(lambda frame: net(frame)[1])(frames)


@eqx.filter_jit
def _update(net, opt_state, key, trajectory: Transition, next_frames,
            settings: FramePPOSettings, discrete: bool):
    """``next_frames``: the frames the trajectory reached, that GAE bootstraps from."""
    params, static = eqx.partition(net, eqx.is_array)
    advantages, targets = advantages_of(trajectory, _values(net, next_frames), settings)
    params, opt_state, parts = update_epochs(
        params, static, opt_state, key, trajectory, advantages, targets, settings,
        discrete, unroll=True)
    return eqx.combine(params, static), opt_state, parts


def initial_state(env_id: str, settings: FramePPOSettings) -> dict[str, Any]:
    """The state a run starts from, and the template its checkpoints restore onto."""
    key = jax.random.key(settings.seed)
    net = new_network(get_spec(env_id), settings.log_std_init, settings.seed)
    opt_state = make_optimizer(settings).init(eqx.filter(net, eqx.is_array))
    book = EpisodeBook(env_id, settings.num_envs, settings.seed).state
    return dict(net=net, opt_state=opt_state, key=key,
                update=np.asarray(0, np.int32), book=book)


def checkpointer_for(out_dir: str | os.PathLike, env_id: str,
                     settings: FramePPOSettings) -> Checkpointer:
    """Checkpoints of ``out_dir``; CheckpointError if written under other settings."""
    config = dict(env_id=env_id, **dataclasses.asdict(settings))
    return Checkpointer(Path(out_dir) / CHECKPOINT_DIRNAME, config,
                        ignore=("total_steps",), defaults=dict(reward_scale=1.0))


def _rollout(envs: FrameEnvs, net, frames, key, settings: FramePPOSettings,
             spec: EnvSpec, progress):
    """One update's trajectory: ``(trajectory, the frames it reached, returns of the
    episodes that ended, seconds of the first acting call)``."""
    steps, finished, first_act = [], [], 0.0
    for t in range(settings.num_steps):
        start = time.perf_counter()
        action, raw, value, log_prob = jax.device_get(
            _act(net, frames, jax.random.fold_in(key, t), spec))
        first_act = first_act or time.perf_counter() - start
        next_frames, rewards, terminated, truncated, last_frames, ended = envs.step(
            np.asarray(action))
        rewards = rewards * settings.reward_scale  # the critic's units
        if truncated.any():
            bootstrap = np.asarray(_values(net, last_frames))
            rewards = rewards + np.where(truncated, settings.gamma * bootstrap, 0.0)
        done = (terminated | truncated).astype(np.float32)
        steps.append(Transition(frames, raw, log_prob, value,
                                rewards.astype(np.float32), done))
        finished += ended
        frames = next_frames
        progress.update(settings.num_envs)
    trajectory = jax.tree.map(lambda *xs: np.stack(xs), *steps)
    return trajectory, frames, finished, first_act


def train(env_id: str, settings: FramePPOSettings, out_dir: str | os.PathLike, *,
          checkpoint_every: int = 10, show_progress: bool = True,
          tensorboard: bool = True) -> dict[str, Any]:
    """Train (resuming from ``out_dir``'s latest checkpoint) to ``settings.updates``;
    returns the run's summary, also written to ``out_dir/summary.json``."""
    if checkpoint_every <= 0:
        raise ValueError(f"checkpoint_every must be > 0, got {checkpoint_every}")
    out_dir, spec = Path(out_dir), get_spec(env_id)
    checkpointer = checkpointer_for(out_dir, env_id, settings)
    state = initial_state(env_id, settings)
    resumed = checkpointer.latest_step() is not None
    if resumed:
        state = checkpointer.restore(state)
    # Restored arrays are committed to a device: so are fresh ones, lest the jitted
    # calls compile again for the other kind.
    state = jax.device_put(state, jax.devices()[0])
    first = int(state["update"])
    net, opt_state, key = state["net"], state["opt_state"], state["key"]
    logger = MetricsLogger(out_dir, tensorboard=tensorboard)
    logger.truncate_after(first * settings.batch)  # the log's steps are env steps
    envs = FrameEnvs(env_id, settings.num_envs, settings.seed)
    envs.book.load(state["book"])
    progress = tqdm(total=settings.updates * settings.batch, unit="step",
                    initial=first * settings.batch, disable=not show_progress)
    first_calls, steady_seconds, steady_steps = 0.0, 0.0, 0
    # What the compiled update depends on: an extended run reuses its compilation.
    algorithm = dataclasses.replace(settings, total_steps=settings.batch, seed=0)
    try:
        frames = envs.start()
        for update in range(first, settings.updates):
            start = time.perf_counter()
            key, rollout_key, update_key = jax.random.split(key, 3)
            trajectory, frames, finished, first_act = _rollout(
                envs, net, frames, rollout_key, settings, spec, progress)
            update_start = time.perf_counter()
            net, opt_state, parts = _update(net, opt_state, update_key, trajectory,
                                            frames, algorithm, spec.discrete)
            parts = jax.device_get(parts)
            end = time.perf_counter()
            if update == first:  # the jitted calls compile on their first use
                first_calls = first_act + end - update_start
            if update > first or settings.updates - first == 1:
                steady_seconds += end - start
                steady_steps += settings.batch
            row = dict(update=update + 1, episodes=len(finished),
                       steps_per_second=settings.batch / (end - start),
                       rollout_seconds=update_start - start,
                       update_seconds=end - update_start,
                       **{k: float(v) for k, v in parts.items()})
            if finished:
                row["episode_return"] = float(np.mean(finished))
            logger.log((update + 1) * settings.batch, **row)
            if (update + 1) % checkpoint_every == 0 or update + 1 == settings.updates:
                state = dict(net=net, opt_state=opt_state, key=key,
                             update=np.asarray(update + 1, np.int32),
                             book=envs.book.state)
                checkpointer.save(update + 1, state)
    finally:
        progress.close()
        envs.close()
        logger.close()
        checkpointer.close()
    save_policy(out_dir / POLICY_DIRNAME, net, env_id, settings)
    plot_curves(logger.path, ["episode_return"], out_dir / "curve.png",
                title=f"{env_id}: model-free PPO from frames (x: env steps)")
    updates_done = max(first, settings.updates)
    summary = dict(
        env_id=env_id, settings=dataclasses.asdict(settings), updates=updates_done,
        real_steps=updates_done * settings.batch,
        episodes_started=int(envs.book.state["started"]),
        resumed_at_update=first if resumed else None,
        first_calls_seconds=first_calls,
        steady_steps_per_second=(steady_steps / steady_seconds if steady_seconds
                                 else None))
    write_json(out_dir / SUMMARY_FILENAME, summary)
    return summary
