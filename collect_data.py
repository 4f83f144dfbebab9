"""Collect real episodes with a pool of worker processes.

    uv run python collect_data.py --env CarRacing-v3 --policy brownian --episodes 8 \\
        --workers 2 --max-steps 200 --seed 0 --out DIR
    uv run python collect_data.py --run runs/NAME [--preset quick] [--policy recovery]
    uv run python collect_data.py ... --backend ray [--ray-address HEAD:6379]

With --run, settings come from runs/NAME/config.json (created from --preset and the
flags if absent) and episodes go to runs/NAME/data/roundK/POLICY/.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from world_models.config import ConfigError, make_config
from world_models.config_sections import POOL_BACKENDS
from world_models.data.collection import RolloutError, collect, collect_round
from world_models.data.policies import policy_names
from world_models.run_directory import init_run, load_run_config


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--out", type=Path, help="folder for the episode files")
    target.add_argument("--run", type=Path, help="run directory (uses its config.json)")
    parser.add_argument("--env", default=None, help="env id (default CarRacing-v3)")
    parser.add_argument(
        "--policy",
        default=None,
        help=f"one of {policy_names()}; with --run, default: "
        "all policies of the config",
    )
    parser.add_argument("--episodes", type=int, default=None)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument(
        "--max-steps",
        type=int,
        default=None,
        help="episode cap, ends as truncated (0: the env's limit)",
    )
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--backend",
        choices=POOL_BACKENDS,
        default=None,
        help="who plays the episodes: local processes (default) or Ray actors",
    )
    parser.add_argument(
        "--ray-address",
        default=None,
        help="with --backend ray: HEAD:6379 joins that cluster "
        "(default: RAY_ADDRESS, else a local Ray)",
    )
    parser.add_argument(
        "--preset", default="quick", help="preset for a new --run config"
    )
    parser.add_argument("--round", type=int, default=0, help="curriculum round (--run)")
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def _overrides(args: argparse.Namespace) -> list[str]:
    fields = {
        "episodes_per_policy": args.episodes,
        "workers": args.workers,
        "max_steps": args.max_steps,
        "seed": args.seed,
        "backend": args.backend,
        "ray_address": args.ray_address,
    }
    overrides = [f"collect.{k}={v}" for k, v in fields.items() if v is not None]
    if args.env is not None:
        overrides.append(f"env_id={args.env}")
    return overrides


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.run is not None:
            if (args.run / "config.json").is_file():
                config = load_run_config(args.run, _overrides(args))
            else:
                base = make_config(
                    args.preset, args.env or "CarRacing-v3", _overrides(args)
                )
                config = init_run(args.run, base)
            policies = [args.policy] if args.policy else None
            collect_round(args.run, config, args.round, policies)
        else:
            defaults = replace(
                make_config("quick").collect,
                backend=args.backend or "local",
                ray_address=args.ray_address or "",
            )  # checks the two
            manifest = collect(
                args.out,
                args.env or "CarRacing-v3",
                args.policy or "brownian",
                args.episodes
                if args.episodes is not None
                else defaults.episodes_per_policy,
                args.seed if args.seed is not None else defaults.seed,
                args.workers if args.workers is not None else defaults.workers,
                args.max_steps if args.max_steps is not None else defaults.max_steps,
                progress=not args.no_progress,
                backend=defaults.backend,
                ray_address=defaults.ray_address,
            )
            print(
                f"{manifest['total_episodes']} episodes,"
                f" {manifest['total_steps']} steps,"
                f" return {manifest['mean_return']:.1f} ± {manifest['std_return']:.1f}"
                f" in {args.out}"
            )
    except (RolloutError, ConfigError, ValueError, FileNotFoundError) as error:
        print(f"collect_data: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
