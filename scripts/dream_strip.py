"""A run's controller in M's dream, decoded by V: one row per dream, one block per τ.

    uv run python scripts/dream_strip.py --run RUN [--controller best|mean]
        [--temperature 1.0 0.5] [--rollouts 4] [--every 20] [--out RUN/dream/strip.png]
        [--video RUN/dream/dream.gif [--video-every 2]]

Rows of different temperatures share their keys (same start, same noise). --video
also writes the first τ's dreams side by side as an animated GIF.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax

from world_models.agent import CONTROLLER_SOURCES
from world_models.cli import run_cli
from world_models.dream.evolve import load_dream
from world_models.evaluation.dream_view import (
    dream_animation,
    dream_frames,
    save_blocks,
)
from world_models.models.controller import controller_to_flat
from world_models.run_directory import load_run_config
from world_models.training.vae import load_vae


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", required=True, type=Path)
    parser.add_argument("--controller", choices=CONTROLLER_SOURCES, default="best")
    parser.add_argument(
        "--temperature", type=float, nargs="+", default=None,
        help="τ of each block (default: the run's dream.temperature)",
    )
    parser.add_argument("--rollouts", type=int, default=4)
    parser.add_argument("--every", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--video", type=Path, default=None, help="GIF path")
    parser.add_argument("--video-every", type=int, default=2, help="dream steps/frame")
    args = parser.parse_args()
    from world_models.agent import load_controller

    config = load_run_config(args.run)
    params = controller_to_flat(load_controller(args.run, args.controller))
    vae = load_vae(args.run)
    temperatures = args.temperature or [config.dream.temperature]
    dreams = [load_dream(args.run, config, temperature) for temperature in temperatures]
    blocks = []
    for temperature, dream in zip(temperatures, dreams):
        image, returns = dream_frames(
            dream, vae, params, jax.random.key(args.seed), args.rollouts, args.every
        )
        blocks.append(image)
        print(f"τ = {temperature}: dream returns "
              + ", ".join(f"{r:.1f}" for r in returns))
    out = args.out or args.run / "dream" / "strip.png"
    save_blocks(blocks, out)
    print(f"wrote {out}")
    if args.video:
        import imageio.v2 as imageio

        frames, _ = dream_animation(
            dreams[0], vae, params, jax.random.key(args.seed), args.rollouts,
            args.video_every,
        )
        imageio.mimsave(args.video, frames, duration=1000 / 25, loop=0)
        print(f"wrote {args.video} ({len(frames)} frames, τ = {temperatures[0]})")

if __name__ == "__main__":
    run_cli(main)
