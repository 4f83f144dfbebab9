"""Collection drivers against sticky random: each policy's return over seeded real
episodes, capped, with the number the cap ended (docs/worlds.md, Atari).

uv run python scripts/driver_scores.py --env ALE/Pong-v5 --driver pong_tracker
    [--episodes 20] [--max-steps 2000] [--out FILE]
"""

import argparse
import json

import numpy as np

from world_models.data.play import play_episode
from world_models.data.policies import make_policy
from world_models.stats import summarize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", required=True)
    parser.add_argument("--driver", required=True)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--max-steps", type=int, default=2000)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    players = {
        "sticky random": ("brownian", {}),
        f"{args.driver}, epsilon 0": (args.driver, dict(epsilon=0.0)),
        f"{args.driver}, epsilon 0.1": (args.driver, dict(epsilon=0.1)),
    }
    rows = {}
    for label, (name, kwargs) in players.items():
        episodes = [
            play_episode(args.env, make_policy(name, args.env, **kwargs), seed,
                         args.max_steps, record_frames=False)
            for seed in range(args.episodes)
        ]
        summary = summarize([float(e["rewards"].sum()) for e in episodes])
        rows[label] = dict(
            mean=summary.mean, std=summary.std, se=summary.sem,
            mean_length=float(np.mean([len(e["rewards"]) for e in episodes])),
            cut=int(sum(e["truncated"][-1] for e in episodes)),
        )
        print(f"{label:32s} {summary.mean:8.2f} ± {summary.std:6.2f} (SE "
              f"{summary.sem:.2f})  length {rows[label]['mean_length']:7.1f}  "
              f"cut {rows[label]['cut']}/{args.episodes}", flush=True)
    if args.out:
        record = dict(env_id=args.env, seeds=[0, args.episodes - 1],
                      max_steps=args.max_steps, results=rows)
        with open(args.out, "w") as f:
            json.dump(record, f, indent=2)


if __name__ == "__main__":
    main()
