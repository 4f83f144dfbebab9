"""Collect → VAE → encode → RNN → dream → test, in curriculum rounds, resumable.

    uv run python run_pipeline.py                       # CarRacing-v3, quick preset
    uv run python run_pipeline.py --preset smoke --run runs/smoke
    uv run python run_pipeline.py --rounds 2 --set dream.generations=100
"""

import argparse
import sys

from world_models.config import ConfigError, make_config
from world_models.presets import PRESETS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--env", default="CarRacing-v3")
    parser.add_argument("--preset", default="quick", help=" | ".join(PRESETS))
    parser.add_argument("--run", default=None,
                        help="run directory (default runs/ENV-PRESET)")
    parser.add_argument("--rounds", type=int, default=None, help="curriculum rounds")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config field, e.g. --set vae.steps=500")
    parser.add_argument("--fresh", action="store_true",
                        help="delete the run directory and start over")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    overrides = list(args.set)
    if args.rounds is not None:
        overrides.append(f"pipeline.rounds={args.rounds}")
    try:
        config = make_config(args.preset, args.env, overrides)
    except (ConfigError, ValueError) as error:
        parser.error(str(error))
    run = args.run or f"runs/{args.env.replace('/', '_')}-{args.preset}"

    from world_models.pipeline.run import run_pipeline

    try:
        report = run_pipeline(run, config, fresh=args.fresh,
                              progress=not args.no_progress)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
