"""Environment registry: action space, frame preprocessing, step limit, reward
threshold.

Every frame the library stores or feeds to V goes through ``preprocess_frame``: one crop
and one resize method (PIL bilinear) for collection, training, the agent and evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata

import gymnasium as gym
import numpy as np
from PIL import Image, ImageFilter

FRAME_SIZE = 64


@dataclass(frozen=True)
class EnvSpec:
    env_id: str
    action_kind: str  # "continuous" or "discrete"
    action_size: int  # continuous: action dimension; discrete: number of actions
    max_steps: int  # the environment's own step limit
    reward_threshold: float | None  # mean return counted as solved
    crop_rows: tuple[int, int] | None = None  # (top, bottom) rows kept before resizing
    # k > 1: a k x k maximum filter before the resize, so that objects of a pixel or two
    # (Pong's ball) still cover a frame pixel after it rather than fading into the field
    grow_objects: int = 1
    frames_from_render: bool = False  # observation is not an image: use env.render()
    make_kwargs: tuple[tuple[str, object], ...] = ()
    heuristic_policies: tuple[str, ...] = ()  # drivers written for this env
    # Continuous actions: "tanh" squashes every output to [-1, 1]; "car" is CarRacing's
    # (steer, gas, brake): steer in [-1, 1], gas and brake in [0, 1].
    action_squash: str = "tanh"
    brownian_drift: tuple[float, ...] | None = None  # per unit time; None: no drift
    # Episode cap of the 2-core and GPU presets where the env's own limit is far
    # longer than they can play (Atari: 27,000); episodes cut there are truncated
    preset_max_steps: int = 0
    # Settings every preset takes in this env, as ``--set`` overrides that the user's
    # own ``--set`` still overrides: what docs/worlds.md measured to work here
    preset_overrides: tuple[str, ...] = ()
    # Atari games that wait for a button to put the ball in play (Breakout's FIRE):
    # the env presses it after reset and after each lost life, so a policy that never
    # presses it still plays (a stalled game would run to the step cap at 0 points)
    serve_action: int | None = None

    def __post_init__(self):
        problems = []
        if self.action_kind not in ("continuous", "discrete"):
            problems.append(f"action_kind {self.action_kind!r}")
        if self.action_squash not in ("tanh", "car"):
            problems.append(f"action_squash {self.action_squash!r}")
        if self.action_squash == "car" and self.action_size != 3:
            problems.append("action_squash 'car' needs (steer, gas, brake)")
        drift = self.brownian_drift
        if drift is not None and len(drift) != self.action_size:
            problems.append(f"brownian_drift {drift} for {self.action_size} actions")
        if self.grow_objects < 1 or self.grow_objects % 2 == 0:
            problems.append(f"grow_objects {self.grow_objects} (an odd size >= 1)")
        if problems:
            raise ValueError(f"EnvSpec {self.env_id}: {'; '.join(problems)}")

    @property
    def discrete(self) -> bool:
        return self.action_kind == "discrete"

    @property
    def action_input_size(self) -> int:
        """Width of the action as fed to M (one-hot for discrete actions)."""
        return self.action_size


# A V for worlds whose game is a few pixels on a flat background (the lander, a ball):
# encoder features normalised per frame, so z depends on the frame at all, and the
# reconstruction weighted toward what moves (docs/worlds.md)
SMALL_OBJECTS_V = ("vae.encoder_norm=instance", "vae.salient_weight=5")

ENVS: dict[str, EnvSpec] = {
    spec.env_id: spec
    for spec in (
        EnvSpec("CarRacing-v3", "continuous", 3, 1000, 900.0, crop_rows=(0, 84),
                heuristic_policies=("recovery", "aggressive", "reckless", "understeer",
                                    "overspeed"),
                action_squash="car", brownian_drift=(0.0, 1.0, -1.0)),
        EnvSpec("LunarLander-v3", "discrete", 4, 1000, 200.0, frames_from_render=True,
                heuristic_policies=("lander",), preset_overrides=SMALL_OBJECTS_V),
        # Atari crops keep the playfield: Pong between its walls, Breakout from below
        # its top wall to the paddle (the scores are in the rewards already)
        EnvSpec("ALE/Pong-v5", "discrete", 6, 27_000, 18.0, crop_rows=(34, 194),
                grow_objects=3, heuristic_policies=("pong_tracker",),
                preset_max_steps=2000, preset_overrides=SMALL_OBJECTS_V),
        EnvSpec("ALE/Breakout-v5", "discrete", 4, 27_000, None, crop_rows=(32, 196),
                grow_objects=3, heuristic_policies=("breakout_tracker",),
                preset_max_steps=2000, preset_overrides=SMALL_OBJECTS_V,
                serve_action=1),
    )
}


class UnknownEnvError(ValueError):
    pass


def get_spec(env_id: str) -> EnvSpec:
    try:
        return ENVS[env_id]
    except KeyError:
        raise UnknownEnvError(
            f"unknown env id {env_id!r}; supported: {', '.join(sorted(ENVS))}"
        ) from None


def make_env(env_id: str) -> gym.Env:
    """A fresh environment producing RGB arrays; seed it with ``reset(seed=...)``."""
    spec = get_spec(env_id)
    _register(env_id)
    kwargs = dict(spec.make_kwargs)
    if spec.frames_from_render:
        kwargs["render_mode"] = "rgb_array"
    env = gym.make(env_id, disable_env_checker=True, **kwargs)
    return env if spec.serve_action is None else ServeWrapper(env, spec.serve_action)


def _atari(env_id: str) -> bool:
    return env_id.startswith("ALE/")


def _register(env_id: str) -> None:
    if _atari(env_id):
        import ale_py

        gym.register_envs(ale_py)


def env_versions(env_id: str) -> dict[str, str]:
    """The installed versions of the packages that play ``env_id``."""
    packages = ("gymnasium", "ale-py") if _atari(env_id) else ("gymnasium",)
    return {name: metadata.version(name) for name in packages}


def env_protocol(env_id: str) -> dict:
    """What decides the episodes an env id plays here: its gymnasium registration
    (ALE v5: sticky actions 0.25 and frameskip 4) and this library's settings for it
    (crop, serve, caps). A run records it in ``environment.json``."""
    spec = get_spec(env_id)
    _register(env_id)
    registered = gym.spec(env_id)
    return dict(
        env_id=env_id,
        registered_kwargs=dict(registered.kwargs),
        registered_max_episode_steps=registered.max_episode_steps,
        make_kwargs=dict(spec.make_kwargs),
        action_kind=spec.action_kind,
        action_size=spec.action_size,
        max_steps=spec.max_steps,
        preset_max_steps=spec.preset_max_steps,
        crop_rows=list(spec.crop_rows) if spec.crop_rows else None,
        grow_objects=spec.grow_objects,
        frames_from_render=spec.frames_from_render,
        serve_action=spec.serve_action,
    )


class ServeWrapper(gym.Wrapper):
    """Presses ``serve_action`` once after reset and after every lost life, within
    the same agent step: its reward and episode end count toward that step."""

    def __init__(self, env: gym.Env, serve_action: int):
        super().__init__(env)
        self.serve_action = serve_action

    def reset(self, **kwargs):
        self.env.reset(**kwargs)
        observation, _, _, _, info = self.env.step(self.serve_action)
        return observation, info

    def step(self, action):
        lives = self.env.unwrapped.ale.lives()
        observation, reward, terminated, truncated, info = self.env.step(action)
        if not (terminated or truncated) and info["lives"] < lives:
            observation, more, terminated, truncated, info = self.env.step(
                self.serve_action
            )
            reward += more
        return observation, reward, terminated, truncated, info


def raw_frame(env: gym.Env, observation: np.ndarray, spec: EnvSpec) -> np.ndarray:
    """The RGB image of the current state, before preprocessing."""
    return env.render() if spec.frames_from_render else observation


def preprocess_frame(frame: np.ndarray, spec: EnvSpec) -> np.ndarray:
    """Crop (if the env has a crop) and resize an RGB frame to 64x64x3 uint8."""
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"expected an RGB frame (H, W, 3), got shape {frame.shape}")
    if spec.crop_rows is not None:
        top, bottom = spec.crop_rows
        frame = frame[top:bottom]
    image = Image.fromarray(np.ascontiguousarray(frame, dtype=np.uint8))
    if spec.grow_objects > 1:
        image = image.filter(ImageFilter.MaxFilter(spec.grow_objects))
    image = image.resize((FRAME_SIZE, FRAME_SIZE), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def observed_frame(env: gym.Env, observation: np.ndarray, spec: EnvSpec) -> np.ndarray:
    """The 64x64x3 frame an agent sees of the env's current state."""
    return preprocess_frame(raw_frame(env, observation, spec), spec)


def step_limit(spec: EnvSpec, max_steps: int) -> int:
    """The effective episode cap: ``max_steps`` if set (> 0), else the env's own
    limit."""
    return min(max_steps, spec.max_steps) if max_steps > 0 else spec.max_steps
