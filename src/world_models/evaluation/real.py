"""Real-env evaluation of any policy over seeded episodes; videos of the world model.

Scores are always a mean ± std over many seeded episodes, written with every seed's
return so a result can be checked and compared with its baselines (brownian, the
heuristics, the zero controller) played on the same seeds.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image, ImageDraw

import world_models.agent  # noqa: F401  registers "agent" and "on_policy"
from world_models.agent import kept_action_noise, latent_key
from world_models.config import apply_overrides
from world_models.data.collection import play_episodes
from world_models.data.play import play_episode
from world_models.data.policies import make_policy
from world_models.dream.search import finalist_params
from world_models.envs import get_spec, step_limit
from world_models.files import write_atomic_text
from world_models.models.mdnrnn import MDNRNN, action_to_input
from world_models.models.mixture import mode_next_z
from world_models.models.vae import (
    ConvVAE,
    decode_latents,
    encode_frames,
    sample_posterior,
)
from world_models.run_directory import load_run_config
from world_models.run_models import load_models
from world_models.seeds import BAND

# policies that read V, M and C (q_agent: its Q-network, RUN/dqn) from the run
MODEL_POLICIES = ("agent", "on_policy", "q_agent")
ZERO_CONTROLLER = "zero"
NOISY_POLICIES = ("agent", ZERO_CONTROLLER)  # --action-noise and --speed-limit: these
VIDEO_SCALE = 4  # 64x64 panels drawn at 256x256


def summarize_returns(episodes: list[dict[str, Any]]) -> dict[str, Any]:
    returns = np.array([episode["return"] for episode in episodes], np.float64)
    return dict(
        episodes=len(episodes),
        mean=float(returns.mean()),
        std=float(returns.std()),
        min=float(returns.min()),
        max=float(returns.max()),
        # episodes the step limit ended, not the game: their returns are partial
        truncated=sum(not episode["terminated"] for episode in episodes),
    )


def policy_setup(
    run_dir: str | os.PathLike,
    policy: str,
    action_noise: float | None = None,
    finalist: int | None = None,
    speed_limit: float | None = None,
) -> tuple[str, dict[str, Any]]:
    """(registered policy, its kwargs) for ``policy`` played with the models of the run.

    ``zero`` is the agent with every controller parameter zero. ``action_noise``
    replaces the noise the agent would act at (the agent and zero only): the kept
    controller's level, or the run's ``dream.action_noise`` for a ``finalist`` (the
    agent with the search's finalist from that generation as its controller).
    ``speed_limit`` replaces the run's ``dream.speed_limit`` (0: no governor).
    """
    for name, value in (("action noise", action_noise), ("speed limit", speed_limit)):
        if value is not None and policy not in NOISY_POLICIES:
            raise ValueError(f"{name} is for the policies {NOISY_POLICIES}, "
                             f"not {policy!r}")
    if action_noise is not None and action_noise < 0:
        raise ValueError(f"action noise must be >= 0, got {action_noise}")
    noise = {} if action_noise is None else dict(noise=float(action_noise))
    governor = {}
    if speed_limit is not None:  # checked as the config checks it
        apply_overrides(load_run_config(run_dir), [f"dream.speed_limit={speed_limit}"])
        governor = dict(speed_limit=float(speed_limit))
    if finalist is not None:
        if policy != "agent":
            raise ValueError(f"a finalist is played by the agent, not {policy!r}")
        params = tuple(np.asarray(finalist_params(run_dir, finalist)).tolist())
        noise = noise or dict(noise=load_run_config(run_dir).dream.action_noise)
        return "agent", dict(run_dir=str(run_dir), params=params, **noise, **governor)
    if policy == "agent":
        noise = noise or dict(noise=kept_action_noise(run_dir))
        return "agent", dict(run_dir=str(run_dir), **noise, **governor)
    if policy == ZERO_CONTROLLER:
        return "agent", dict(run_dir=str(run_dir), controller="zero", **noise,
                             **governor)
    if policy in MODEL_POLICIES:
        return policy, dict(run_dir=str(run_dir))
    return policy, {}


def _suffix(action_noise: float | None, finalist: int | None,
            speed_limit: float | None = None) -> str:
    """What an output's name gains when played by a finalist, at a chosen noise or
    speed limit."""
    return ("" if finalist is None else f"_finalist{finalist}") + (
        "" if action_noise is None else f"_noise{action_noise:g}") + (
        "" if speed_limit is None else f"_limit{speed_limit:g}")


def evaluate_run(
    run_dir: str | os.PathLike,
    name: str | None = None,
    policy: str = "agent",
    episodes: int | None = None,
    seed: int | None = None,
    workers: int | None = None,
    max_steps: int | None = None,
    progress: bool = True,
    action_noise: float | None = None,
    finalist: int | None = None,
    speed_limit: float | None = None,
) -> dict[str, Any]:
    """Play ``policy`` on seeds ``seed``..``seed+episodes-1``; write eval/NAME.json.

    ``policy``: agent, on_policy, zero (the zero controller) or any collection policy.
    ``action_noise``: the agent (or zero) at this Gaussian action noise instead of
    the level it acts at, e.g. to test a level its final check did not offer.
    ``finalist``: the agent with the search's finalist from that generation instead
    of the kept controller (``policy_setup``), to test the final check's choice.
    ``speed_limit``: the agent (or zero) with this speed governor instead of the
    run's. ``name`` defaults to the policy's (``POLICY_finalistG_noiseX_limitL`` with
    those settings, so the run's own test file stays). Unset arguments come from
    the run's eval config.
    """
    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    settings = config.eval
    played = (action_noise, finalist, speed_limit)
    name = policy + _suffix(*played) if name is None else name
    episodes = settings.episodes if episodes is None else episodes
    seed = settings.seed if seed is None else seed
    workers = settings.workers if workers is None else workers
    max_steps = settings.max_steps if max_steps is None else max_steps
    if episodes <= 0:
        raise ValueError(f"episodes must be > 0, got {episodes}")
    if not 0 <= seed <= BAND - episodes:
        raise ValueError(
            f"test seeds must lie in [0, {BAND}): seeds from {BAND} on are the "
            "selection and collection tracks (see seeds.py)"
        )
    registered, kwargs = policy_setup(run_dir, policy, *played)
    limit = step_limit(get_spec(config.env_id), max_steps)
    noise = kwargs.get("noise")
    results = play_episodes(
        config.env_id,
        registered,
        list(range(seed, seed + episodes)),
        workers,
        limit,
        policy_kwargs=kwargs,
        progress=progress,
        backend=config.collect.backend,
        ray_address=config.collect.ray_address,
    )
    report = dict(
        name=name,
        policy=policy,
        env_id=config.env_id,
        max_steps=limit,
        **({} if noise is None else dict(action_noise=noise)),
        **({} if finalist is None else dict(finalist=finalist)),
        **({} if speed_limit is None else dict(speed_limit=speed_limit)),
        **summarize_returns(results),
        results=results,
    )
    out_dir = run_dir / "eval"
    out_dir.mkdir(parents=True, exist_ok=True)
    write_atomic_text(out_dir / f"{name}.json", json.dumps(report, indent=2))
    return report


def format_score(report: dict[str, Any]) -> str:
    return (
        f"{report['name']}: {report['mean']:.1f} ± {report['std']:.1f} over "
        f"{report['episodes']} episodes"
    )


# --------------------------------------------------------------------------- videos


@eqx.filter_jit
def _one_step_predictions(rnn: MDNRNN, zs: jax.Array, actions: jax.Array):
    _, outputs = rnn(zs, actions)
    return jax.vmap(mode_next_z)(outputs), outputs.reward


def world_model_panels(
    vae: ConvVAE, rnn: MDNRNN, episode: dict[str, np.ndarray], seed: int
) -> dict[str, np.ndarray]:
    """Per step t < T: V's reconstruction of o_t and M's prediction of o_t made at t-1.

    z_t is the posterior draw the agent makes (``latent_key(seed, t)``), so for the
    agent M is stepped on exactly what it saw while acting.
    """
    spec = get_spec(str(episode["env_id"]))
    frames = episode["obs"][:-1]
    mu, logvar = encode_frames(vae, frames)
    keys = jax.vmap(lambda t: latent_key(seed, t))(jnp.arange(len(frames)))
    zs = jax.vmap(sample_posterior)(jnp.asarray(mu), jnp.asarray(logvar), keys)
    next_z, predicted_rewards = _one_step_predictions(
        rnn, zs, action_to_input(episode["actions"], spec)
    )
    reconstruction = np.asarray(decode_latents(vae, jnp.asarray(mu)))
    predicted = np.asarray(decode_latents(vae, next_z[:-1]))
    predicted = np.concatenate([np.zeros_like(predicted[:1]), predicted])  # none at t=0
    return dict(
        reconstruction=reconstruction,
        prediction=predicted,
        predicted_rewards=np.asarray(predicted_rewards),
    )


def _panel(image: np.ndarray, label: str) -> Image.Image:
    if image.dtype != np.uint8:
        image = (np.clip(image, 0, 1) * 255).astype(np.uint8)
    size = image.shape[0] * VIDEO_SCALE
    panel = Image.fromarray(image).resize((size, size), Image.Resampling.NEAREST)
    ImageDraw.Draw(panel).text((4, 4), label, fill=(255, 255, 0))
    return panel


def render_frames(
    episode: dict[str, np.ndarray], panels: dict[str, np.ndarray]
) -> list[np.ndarray]:
    """real frame | V reconstruction | M's one-step prediction, with the rewards."""
    out = []
    rewards, predicted = episode["rewards"], panels["predicted_rewards"]
    for t in range(len(rewards)):
        row = [
            _panel(episode["obs"][t], f"real t={t}"),
            _panel(panels["reconstruction"][t], "V reconstruction"),
            _panel(panels["prediction"][t], "M prediction"),
        ]
        canvas = Image.new("RGB", (sum(p.width for p in row), row[0].height + 20))
        for i, panel in enumerate(row):
            canvas.paste(panel, (i * panel.width, 0))
        ImageDraw.Draw(canvas).text(
            (4, row[0].height + 4),
            f"reward {rewards[t]:+.2f}   predicted {predicted[t]:+.2f}   "
            f"return {rewards[: t + 1].sum():.1f}",
            fill=(255, 255, 255),
        )
        out.append(np.asarray(canvas))
    return out


def record_video(
    run_dir: str | os.PathLike,
    seed: int,
    policy: str = "agent",
    max_steps: int | None = None,
    video_format: str = "mp4",
    out_path: str | os.PathLike | None = None,
    fps: int = 30,
    action_noise: float | None = None,
    finalist: int | None = None,
    speed_limit: float | None = None,
) -> Path:
    """Play one seeded episode in this process and write its video (mp4 or gif)."""
    if video_format not in ("mp4", "gif"):
        raise ValueError(f"video_format must be mp4 or gif, not {video_format!r}")
    import imageio.v2 as imageio

    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    played = (action_noise, finalist, speed_limit)
    registered, kwargs = policy_setup(run_dir, policy, *played)
    actor = make_policy(registered, config.env_id, **kwargs)
    max_steps = config.eval.max_steps if max_steps is None else max_steps
    episode = play_episode(
        config.env_id, actor, seed, step_limit(get_spec(config.env_id), max_steps)
    )
    _, vae, rnn = load_models(str(run_dir))
    panels = world_model_panels(vae, rnn, episode, seed)
    out_path = Path(out_path or run_dir / "eval" / (
        f"{policy}{_suffix(*played)}_seed{seed}.{video_format}"))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    frames = render_frames(episode, panels)
    if out_path.suffix == ".gif":
        imageio.mimsave(out_path, frames, duration=1000 / fps, loop=0)
    else:
        imageio.mimsave(out_path, frames, fps=fps, macro_block_size=1)
    return out_path
