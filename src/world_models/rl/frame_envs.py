"""Real environments for the model-free baseline: ``num_envs`` of one env id stepped
together (a gymnasium vector env), each observing the library's 64x64 frame
(``envs.observed_frame``), each episode seeded from the run's block of the
seed plan's model-free band (``seeds.real_learner_seeds``).

A finished episode is restarted at once on the next seed of the block, so an env runs
across PPO updates. ``EpisodeBook`` records of each env's current episode its seed, its
steps, its return and every action taken; a checkpoint holds that book, and resuming
replays each unfinished episode (reset on its seed, the same actions) up to where it
was: the env is where it was, as the uninterrupted run has it. Box2D and the envs' own
random streams are deterministic given the seed and actions; a replay that does not
reproduce the recorded return is refused.

No JAX here: the vector env's worker processes import this module.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from world_models.envs import (
    FRAME_SIZE,
    get_spec,
    make_env,
    observed_frame,
)
from world_models.seeds import real_learner_seeds


class FrameObservation(gym.Wrapper):
    """``env_id`` observing 64x64x3 uint8 frames. A reset replays ``replay_actions``
    (set beforehand, then cleared) after seeding, and reports their return in its info
    as ``replayed_return``."""

    def __init__(self, env_id: str):
        super().__init__(make_env(env_id))
        self.env_spec = get_spec(env_id)
        self.observation_space = gym.spaces.Box(
            0, 255, (FRAME_SIZE, FRAME_SIZE, 3), np.uint8)
        self.replay_actions: np.ndarray | None = None

    def frame(self, observation: np.ndarray) -> np.ndarray:
        return observed_frame(self.env, observation, self.env_spec)

    def reset(self, *, seed=None, options=None):
        observation, info = self.env.reset(seed=seed)
        frame = self.frame(observation)
        actions, self.replay_actions = self.replay_actions, None
        if actions is None:
            return frame, info
        replayed = np.float32(0.0)
        for action in actions:  # rendering too: LunarLander's frames age as drawn
            frame, reward, terminated, truncated, info = self.step(action)
            replayed = np.float32(replayed + np.float32(reward))
            if terminated or truncated:
                raise RuntimeError(f"seed {seed}: the replayed episode ended early")
        return frame, dict(info, replayed_return=replayed)

    def step(self, action):
        observation, reward, terminated, truncated, info = self.env.step(action)
        return self.frame(observation), reward, terminated, truncated, info


class _FrameEnvFactory:
    """A picklable env factory for spawned workers (a lambda is not)."""

    def __init__(self, env_id: str):
        self.env_id = env_id

    def __call__(self) -> FrameObservation:
        return FrameObservation(self.env_id)


def make_vector_env(env_id: str, num_envs: int) -> gym.vector.VectorEnv:
    """Worker processes for several envs (spawned: the parent runs JAX, which must not
    be forked; so a script that calls this needs the ``__main__`` guard); one env is
    stepped in this process. Resets are ours (autoreset off): a finished episode's last
    frame is seen before the env restarts."""
    factories = [_FrameEnvFactory(env_id)] * num_envs
    mode = gym.vector.AutoresetMode.DISABLED
    if num_envs == 1:
        return gym.vector.SyncVectorEnv(factories, autoreset_mode=mode)
    return gym.vector.AsyncVectorEnv(factories, context="spawn", autoreset_mode=mode)


class EpisodeBook:
    """Each env's current episode (seed, steps, return, actions, current frame) and
    the number of episodes started: the state of the envs that a checkpoint holds."""

    def __init__(self, env_id: str, num_envs: int, training_seed: int):
        spec = get_spec(env_id)
        self.spec, self.seeds = spec, real_learner_seeds("ppo_frames", training_seed)
        shape = (num_envs, spec.max_steps) + (() if spec.discrete
                                               else (spec.action_size,))
        self.state = dict(
            started=np.asarray(num_envs, np.int32),
            seed=np.asarray(self.seeds[:num_envs], np.int32),
            step=np.zeros(num_envs, np.int32),
            episode_return=np.zeros(num_envs, np.float32),
            actions=np.zeros(shape, np.int32 if spec.discrete else np.float32),
            frame=np.zeros((num_envs, FRAME_SIZE, FRAME_SIZE, 3), np.uint8),
        )

    def load(self, state: dict[str, Any]) -> None:
        self.state = {k: np.array(v, dtype=self.state[k].dtype)
                      for k, v in state.items()}

    def replays(self) -> list[np.ndarray]:
        return [actions[:steps] for actions, steps in
                zip(self.state["actions"], self.state["step"])]

    def record(self, actions: np.ndarray, rewards: np.ndarray) -> np.ndarray:
        """Count one step of every env; returns the mask of envs at the step limit."""
        book, envs = self.state, np.arange(len(rewards))
        book["actions"][envs, book["step"]] = actions
        book["step"] += 1
        book["episode_return"] += rewards.astype(np.float32)
        return book["step"] >= self.spec.max_steps

    def restart(self, done: np.ndarray) -> tuple[list[float], list[int]]:
        """Start the next episodes of the ``done`` envs: (the finished returns, the
        seed of every env, new ones where done)."""
        book = self.state
        finished = [float(r) for r in book["episode_return"][done]]
        for env in np.flatnonzero(done):
            if book["started"] >= len(self.seeds):
                raise RuntimeError("the run used up its block of model-free seeds")
            book["seed"][env] = self.seeds[int(book["started"])]
            book["started"] += 1
        book["step"][done] = 0
        book["episode_return"][done] = 0.0
        return finished, [int(s) for s in book["seed"]]


class FrameEnvs:
    """The envs of a model-free run and their ``EpisodeBook``."""

    def __init__(self, env_id: str, num_envs: int, training_seed: int):
        self.book = EpisodeBook(env_id, num_envs, training_seed)
        self.envs = make_vector_env(env_id, num_envs)

    def start(self) -> np.ndarray:
        """Every env at its book's place (a fresh book: new episodes); the frames."""
        book = self.book.state
        replaying = bool(book["step"].any())
        if replaying:
            self.envs.set_attr("replay_actions", self.book.replays())
        frames, info = self.envs.reset(seed=[int(s) for s in book["seed"]])
        if replaying and not (
                np.array_equal(info["replayed_return"], book["episode_return"])
                and np.array_equal(frames, book["frame"])):
            raise RuntimeError(
                "replaying the checkpoint's episodes did not reproduce their returns "
                "and frames: the environment is not deterministic")
        book["frame"][:] = frames
        return frames

    def step(self, actions: np.ndarray):
        """``(frames, rewards, terminated, truncated, last_frames, finished returns)``:
        ``last_frames`` are the frames the step produced, ``frames`` those the next
        step starts from (a new episode's first where one ended)."""
        last_frames, rewards, terminated, truncated, _ = self.envs.step(actions)
        rewards = rewards.astype(np.float32)
        truncated = (truncated | self.book.record(actions, rewards)) & ~terminated
        done = terminated | truncated
        frames, finished = last_frames, []
        if done.any():
            finished, seeds = self.book.restart(done)
            frames, _ = self.envs.reset(
                seed=seeds, options={"reset_mask": np.asarray(done, bool)})
        self.book.state["frame"][:] = frames
        return frames, rewards, terminated, truncated, last_frames, finished

    def close(self) -> None:
        self.envs.close()
