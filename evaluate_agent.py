"""Score a policy in the real env over seeded episodes: ``evaluate_agent.py --run DIR``.

Plays the V+M+C agent (default), the zero controller, or any collection policy on seeds
S..S+N-1 and writes DIR/eval/NAME.json; ``--video`` also records chosen episodes.
"""

import argparse

from world_models.cli import run_cli
from world_models.evaluation.real import (
    ZERO_CONTROLLER,
    evaluate_run,
    format_score,
    record_video,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", required=True, help="run directory")
    parser.add_argument(
        "--episodes", type=int, default=None, help="episodes (default: eval.episodes)"
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="first seed (default: eval.seed)"
    )
    parser.add_argument(
        "--policy",
        default="agent",
        help="agent, on_policy, zero or any collection policy (brownian, ...)",
    )
    parser.add_argument(
        "--zero-controller",
        action="store_true",
        help="the agent with all controller parameters zero",
    )
    parser.add_argument(
        "--action-noise",
        type=float,
        default=None,
        help="the agent at this Gaussian action noise instead of its kept level "
        "(written to eval/agent_noiseX.json)",
    )
    parser.add_argument(
        "--speed-limit",
        type=float,
        default=None,
        help="CarRacing: the agent with its gas cut above this dashboard speed "
        "instead of the run's dream.speed_limit; 0: none (eval/agent_limitL.json)",
    )
    parser.add_argument(
        "--finalist",
        type=int,
        default=None,
        metavar="GENERATION",
        help="the search's finalist from this generation instead of the kept "
        "controller, at --action-noise or the run's dream.action_noise "
        "(eval/agent_finalistG[_noiseX].json)",
    )
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument(
        "--max-steps",
        type=int,
        default=None,
        help="episode cap (default: eval.max_steps; 0: env limit)",
    )
    parser.add_argument(
        "--video",
        action="store_true",
        help="also record real | V reconstruction | M prediction",
    )
    parser.add_argument(
        "--video-seeds",
        type=int,
        nargs="*",
        default=None,
        help="seeds to record (default: the first seed)",
    )
    parser.add_argument("--video-format", choices=("mp4", "gif"), default="mp4")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    policy = ZERO_CONTROLLER if args.zero_controller else args.policy
    report = evaluate_run(
        args.run,
        policy=policy,
        episodes=args.episodes,
        seed=args.seed,
        workers=args.workers,
        max_steps=args.max_steps,
        progress=not args.no_progress,
        action_noise=args.action_noise,
        finalist=args.finalist,
        speed_limit=args.speed_limit,
    )
    print(format_score(report))
    if args.video:
        seeds = args.video_seeds or [report["results"][0]["seed"]]
        for seed in seeds:
            path = record_video(
                args.run, seed, policy, args.max_steps, video_format=args.video_format,
                action_noise=args.action_noise, finalist=args.finalist,
                speed_limit=args.speed_limit,
            )
            print(f"video: {path}")


if __name__ == "__main__":
    run_cli(main)
