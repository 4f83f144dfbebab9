"""Train the controller with PPO inside a run's dream (instead of CMA-ES).

    uv run python scripts/train_ppo.py --run RUN [--updates 100] [--check 8]
    uv run python train_dream.py --run RUN --start-from RUN/ppo   # search on from it

Uses RUN's latest M, start pool, τ and horizon (its dream, as CMA-ES plays it) and its
controller kind as the policy's mean. Runs ``--piece`` updates per compiled call and
checkpoints after each (RUN/ppo/train_ckpt), so a killed run resumes where it stopped
and a finished one can be extended with more ``--updates``; ``--fresh`` starts over.
Writes RUN/ppo/: a search folder whose kept controller is the trained policy's mean,
``metrics.jsonl`` and ``ppo_metrics.json`` (per update: mean return of the dream
episodes that ended, reward per step) and ``curve.png``. Prints the time of the pieces
that compiled apart from the steady dream steps per second. ``--check N`` plays
the policy's mean on N real episodes of round 0's last selection block (the block
``scripts/fit_controller.py`` checks on; no check of a search plays it).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import jax
import numpy as np

from world_models.checkpoint import Checkpointer
from world_models.cli import run_cli
from world_models.dream.evolve import load_dream
from world_models.dream.pieces import run_in_pieces
from world_models.dream.ppo import PPO_DIR, PPOSettings, make_stages, policy_params
from world_models.dream.search import save_start
from world_models.dream.selection import check_start
from world_models.files import write_json
from world_models.logs import METRICS_FILENAME, MetricsLogger, plot_curves, read_metrics
from world_models.run_directory import load_run_config
from world_models.training.rnn import latest_rnn_step

TRAIN_CHECKPOINTS = "train_ckpt"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", required=True, type=Path)
    parser.add_argument("--updates", type=int, default=PPOSettings.updates)
    parser.add_argument("--num-envs", type=int, default=PPOSettings.num_envs)
    parser.add_argument("--num-steps", type=int, default=PPOSettings.num_steps)
    parser.add_argument("--learning-rate", type=float,
                        default=PPOSettings.learning_rate)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--piece", type=int, default=100,
                        help="updates between checkpoints")
    parser.add_argument("--fresh", action="store_true",
                        help="discard RUN/ppo's training checkpoints and start over")
    parser.add_argument("--check", type=int, default=0,
                        help="real episodes to play (at most dream.real_eval_episodes)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    config = load_run_config(args.run)
    dream = load_dream(args.run, config)
    settings = PPOSettings(num_envs=args.num_envs, num_steps=args.num_steps,
                           updates=args.updates, learning_rate=args.learning_rate)
    out = args.run / PPO_DIR
    if args.fresh:
        shutil.rmtree(out / TRAIN_CHECKPOINTS, ignore_errors=True)
    # the update count is left out: a finished run can be extended
    checkpointer = Checkpointer(
        out / TRAIN_CHECKPOINTS, config=dict(
            {k: v for k, v in vars(settings).items() if k != "updates"},
            seed=args.seed, rnn_step=latest_rnn_step(args.run)), keep=1)
    logger = MetricsLogger(out, tensorboard=False)
    logger.truncate_after(checkpointer.latest_step() or 0)

    def log_piece(done: int, metrics: dict) -> None:
        for i, row in enumerate(zip(*(np.asarray(v) for v in metrics.values()))):
            logger.log(done + i + 1, **dict(zip(metrics, row)))

    stages = make_stages(dream, settings)
    try:
        runner, timing = run_in_pieces(
            stages.start, stages.advance, jax.random.key(args.seed), settings.updates,
            args.piece, checkpointer, log_piece, progress=not args.no_progress)
    finally:
        checkpointer.close()
        logger.close()
    per_update = settings.num_envs * settings.num_steps
    print(f"pieces that compiled: {timing['compiling_seconds']:.1f} s; steady "
          f"{per_update / timing['steady_seconds_per_step']:,.0f} dream steps/s "
          "with the updates (nan: no piece ran compiled)")

    flat = np.asarray(policy_params(stages.policy(runner)))
    save_start(out, config, flat)
    rows = read_metrics(out / METRICS_FILENAME)
    write_json(out / "ppo_metrics.json", dict(settings=vars(settings), updates=rows))
    plot_curves(out / METRICS_FILENAME, ["episode_return"], out / "curve.png",
                title=f"{config.env_id}: PPO in the dream")
    returns = [row["episode_return"] for row in rows]
    print(f"dream return per episode: first update {returns[0]:.1f}, "
          f"last {returns[-1]:.1f}; wrote {out}")
    if args.check:
        print(check_start(args.run, config, flat, args.check))


if __name__ == "__main__":
    run_cli(main)
