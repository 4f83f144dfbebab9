"""One seeded real episode of any policy, played in this process."""

from __future__ import annotations

from typing import Any

import numpy as np

from world_models.data.policies import Policy, get_factory
from world_models.envs import (
    get_spec,
    make_env,
    observed_frame,
    step_limit,
)


def play_episode(
    env_id: str,
    policy: Policy | str,
    seed: int,
    max_steps: int,
    record_frames: bool = True,
    *,
    env: Any = None,
) -> dict[str, Any]:
    """Play one episode: ``env.reset(seed=seed)`` and ``policy.reset(seed)``.

    Returns the episode dict of the data format (``obs`` only if ``record_frames``).
    ``max_steps`` (0: the env's limit) ends the episode as truncated. Pass ``env`` to
    reuse an environment of ``env_id`` across episodes.
    """
    spec = get_spec(env_id)
    if isinstance(policy, str):
        policy_name, policy = policy, get_factory(policy)(env_id)
    else:
        policy_name = type(policy).__name__
    own_env = env is None
    env = make_env(env_id) if own_env else env
    try:
        limit = step_limit(spec, max_steps)
        observation, _ = env.reset(seed=seed)
        policy.reset(seed)
        frame = observed_frame(env, observation, spec)
        frames, actions, rewards, terminated, truncated = [frame], [], [], [], []
        for step in range(limit):
            action = policy.act(frame, observation)
            action = (
                np.int32(action)
                if spec.discrete
                else np.asarray(action, np.float32).reshape(spec.action_size)
            )
            observation, reward, term, trunc, _ = env.step(action)
            frame = observed_frame(env, observation, spec)
            if record_frames:
                frames.append(frame)
            actions.append(action)
            rewards.append(reward)
            terminated.append(term)
            truncated.append((trunc or step == limit - 1) and not term)
            if term or trunc:
                break
    finally:
        if own_env:
            env.close()
    episode = {
        "actions": np.asarray(actions, np.int32 if spec.discrete else np.float32),
        "rewards": np.asarray(rewards, np.float32),
        "terminated": np.asarray(terminated, bool),
        "truncated": np.asarray(truncated, bool),
        "env_id": np.asarray(env_id),
        "policy": np.asarray(policy_name),
        "seed": np.asarray(seed, np.int64),
    }
    if record_frames:
        episode["obs"] = np.stack(frames)
    return episode


def summarize(episode: dict[str, Any]) -> dict[str, Any]:
    return {
        "seed": int(episode["seed"]),
        "return": float(episode["rewards"].sum()),
        "length": int(len(episode["rewards"])),
        "terminated": bool(episode["terminated"][-1]),
    }
