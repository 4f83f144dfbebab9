"""Fit a linear controller over [z, h] to recorded drivers' actions (ridge regression).

    uv run python scripts/fit_controller.py --run RUN [--policies recovery aggressive]
        [--ridge 1.0] [--check 8]
    uv run python train_dream.py --run RUN --start-from RUN/imitation   # search from it

Uses RUN's V latents and latest M. Writes RUN/imitation/ (a search folder whose kept
controller is the fit) and prints each output's R². ``--check N`` plays it on N real
episodes of round 0's last selection block, which no check of the search plays.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from world_models.cli import run_cli
from world_models.data.episodes import list_episodes
from world_models.dream.search import save_start
from world_models.dream.selection import check_start
from world_models.models.controller import controller_to_flat
from world_models.run_directory import load_run_config
from world_models.training.imitation import fit_linear_controller
from world_models.training.rnn import load_rnn


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", required=True, type=Path)
    parser.add_argument("--policies", nargs="+", default=["recovery", "aggressive"])
    parser.add_argument("--ridge", type=float, default=1.0)
    parser.add_argument("--check", type=int, default=0,
                        help="real episodes to play (at most dream.real_eval_episodes)")
    args = parser.parse_args()
    config = load_run_config(args.run)
    paths = [p for p in list_episodes(args.run / "latents")
             if p.parent.name in args.policies]
    if not paths:
        raise SystemExit(f"no latents of {args.policies} under {args.run / 'latents'}")
    controller, r2 = fit_linear_controller(config, load_rnn(args.run), paths,
                                           args.ridge)
    flat = np.asarray(controller_to_flat(controller))
    folder = save_start(args.run / "imitation", config, flat)
    print(f"fitted to {len(paths)} episodes; R² per output: {np.round(r2, 3).tolist()}")
    print(f"wrote {folder}")
    if args.check:
        print(check_start(args.run, config, flat, args.check))


if __name__ == "__main__":
    run_cli(main)
