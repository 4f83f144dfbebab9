"""Where a controller's dream leaves reality: its dream branched off real episodes.

    uv run python scripts/dream_gap.py --run RUN --episodes FOLDER
        [--controller best|mean] [--every 50] [--horizon 100] [--rollouts 8]
        [--temperature T] [--out gap.json]

FOLDER holds latent files of real episodes the controller played (e.g. a round's
``latents/roundK/on_policy`` of the kept controller). For each branch frame t it prints
the reward of the next ``horizon`` steps in reality, as M's reward head reads it along
the real frames, and in the controller's dream from that frame (``dream_gap.py``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import numpy as np

from world_models.agent import CONTROLLER_SOURCES, load_controller
from world_models.cli import run_cli
from world_models.data.episodes import list_episodes, load_latents
from world_models.envs import get_spec
from world_models.evaluation.dream_gap import dream_gap
from world_models.models.controller import controller_to_flat
from world_models.run_directory import load_run_config
from world_models.training.rnn import load_rnn


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", required=True, type=Path)
    parser.add_argument("--episodes", required=True, type=Path)
    parser.add_argument("--controller", choices=CONTROLLER_SOURCES, default="best")
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--horizon", type=int, default=100)
    parser.add_argument("--rollouts", type=int, default=8)
    parser.add_argument("--temperature", type=float, default=None,
                        help="the dream's τ (default: the run's dream.temperature)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    config = load_run_config(args.run)
    paths = list_episodes(args.episodes)
    if not paths:
        raise SystemExit(f"no latent files under {args.episodes}")
    controller = load_controller(args.run, args.controller)
    rows = dream_gap(
        load_rnn(args.run), [load_latents(p) for p in paths], controller,
        controller_to_flat(controller), get_spec(config.env_id), args.every,
        args.horizon,
        config.dream.temperature if args.temperature is None else args.temperature,
        args.rollouts, jax.random.key(config.dream.seed),
    )
    print(f"reward of the next {args.horizon} steps, mean over {len(paths)} episodes")
    print("| branch frame | real | M along the real frames | dream | episodes |")
    print("|---|---|---|---|---|")
    for t in sorted({row["t"] for row in rows}):
        at = [row for row in rows if row["t"] == t]
        means = [np.mean([row[k] for row in at])
                 for k in ("real", "teacher_forced", "dream")]
        print(f"| {t} | {means[0]:.1f} | {means[1]:.1f} | {means[2]:.1f} | {len(at)} |")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    run_cli(main)
