"""Every controller trained on a run, and the baselines, on the same test seeds.

    uv run python compare_controllers.py --run RUN [--episodes 100] [--seed 10000]
        [--model-free DIR ...]

Finds what RUN holds: the CMA-ES agent (RUN/dream), PPO in the dream (RUN/ppo,
scripts/train_ppo.py), DQN in the dream (RUN/dqn) and in reality on V+M features
(RUN/dqn_real, scripts/train_dqn.py); adds model-free PPO runs from frames
(scripts/train_model_free.py) given by --model-free, then the zero controller and the
random policy. Prints one table (mean ± std, standard error, paired difference to the
first, real env steps and dream steps each consumed) and writes RUN/eval/compare.md,
compare.json and every contender's per-seed returns (replayed only when changed;
``--reuse NAME=EVAL_JSON`` takes an earlier evaluation of the same controller on the
same seeds once ``--verify`` of them replay to the same returns).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from world_models.cli import run_cli
from world_models.evaluation.contenders import (
    baseline_contenders,
    model_free_contender,
    run_contenders,
)
from world_models.evaluation.controller_comparison import compare_controllers
from world_models.run_directory import load_run_config


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, type=Path)
    parser.add_argument("--episodes", type=int, default=None,
                        help="test episodes (default: the run's eval.episodes)")
    parser.add_argument("--seed", type=int, default=None,
                        help="first test seed (default: the run's eval.seed)")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--max-steps", type=int, default=None,
                        help="episode cap (default: eval.max_steps; 0: env limit)")
    parser.add_argument("--model-free", type=Path, nargs="*", default=[],
                        help="folders of scripts/train_model_free.py runs")
    parser.add_argument("--no-baselines", action="store_true")
    parser.add_argument(
        "--reuse", nargs="*", default=[], metavar="NAME=EVAL_JSON",
        help="take an earlier evaluation of contender NAME on the same seeds "
             "(e.g. RUN/eval/round0_agent.json) once --verify of its seeds replay")
    parser.add_argument("--verify", type=int, default=3)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    if any("=" not in item for item in args.reuse):
        raise ValueError(f"--reuse takes NAME=EVAL_JSON items, got {args.reuse}")
    evaluations = dict(item.rsplit("=", 1) for item in args.reuse)
    config = load_run_config(args.run)
    settings = config.eval
    episodes = settings.episodes if args.episodes is None else args.episodes
    if episodes <= 0:
        raise ValueError(f"--episodes must be > 0, got {episodes}")
    first = settings.seed if args.seed is None else args.seed
    contenders = run_contenders(args.run, config)
    contenders += [model_free_contender(folder) for folder in args.model_free]
    if not args.no_baselines:
        contenders += baseline_contenders(args.run)
    _, table = compare_controllers(
        args.run, contenders, range(first, first + episodes),
        settings.workers if args.workers is None else args.workers,
        settings.max_steps if args.max_steps is None else args.max_steps,
        progress=not args.no_progress, evaluations=evaluations, verify=args.verify)
    print(table, end="")
    print(f"wrote {args.run / 'eval' / 'compare.md'}")


if __name__ == "__main__":
    run_cli(main)
