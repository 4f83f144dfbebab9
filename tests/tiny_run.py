"""A smoke-sized run directory with real V and M checkpoints (integration tests)."""

import sys
from pathlib import Path

import numpy as np

from world_models.config import make_config
from world_models.data.episodes import save_latents
from world_models.run_directory import init_run
from world_models.training.rnn import train_rnn
from world_models.training.vae import checkpointer, initial_state

ROOT = Path(__file__).resolve().parents[1]

TINY_OVERRIDES = (
    "dream.population=6",
    "dream.rollouts=2",
    "dream.generations=2",
    "dream.max_steps=8",
    "dream.real_eval_every=2",
    "dream.real_eval_episodes=1",
    "eval.episodes=2",
    "eval.max_steps=10",
    "eval.workers=1",
    "rnn.steps=4",
    "rnn.eval_every=2",
    "rnn.checkpoint_every=2",
    "rnn.seq_len=8",
)


def make_tiny_run(
    run_dir: Path, episodes: int = 4, steps: int = 12, overrides: tuple = ()
) -> Path:
    """Untrained V (saved as train_vae.py does), random latents, M trained a bit."""
    config = init_run(
        run_dir, make_config("smoke", overrides=TINY_OVERRIDES + tuple(overrides))
    )
    vae_state = initial_state(config.vae)
    saver = checkpointer(run_dir, config.vae)
    saver.save(0, vae_state)
    saver.close()
    rng = np.random.default_rng(0)
    z = config.vae.z_dim
    for seed in range(episodes):
        save_latents(
            run_dir / "latents" / "round0" / "brownian" / f"ep_{seed:06d}.npz",
            dict(
                mu=rng.normal(size=(steps + 1, z)).astype(np.float32),
                logvar=np.full((steps + 1, z), -3.0, np.float32),
                actions=rng.uniform(0, 1, (steps, 3)).astype(np.float32),
                rewards=rng.normal(size=steps).astype(np.float32),
                terminated=np.zeros(steps, bool),
                truncated=np.arange(steps) == steps - 1,
                env_id="CarRacing-v3",
                policy="brownian",
                seed=seed,
            ),
        )
    train_rnn(run_dir, progress=False)
    return run_dir


def smoke_pipeline_command(run_dir: Path, *extra: str) -> list[str]:
    """``run_pipeline.py --preset smoke`` on run_dir, as a user types it."""
    return [sys.executable, str(ROOT / "run_pipeline.py"), "--preset", "smoke",
            "--run", str(run_dir), "--no-progress", *extra]
