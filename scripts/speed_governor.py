"""A search's finalist on CarRacing with a speed governor: whenever the car's speed
(Box2D's, read from the env: a diagnostic, not an agent that sees only pixels) is above
the limit, its gas is set to 0 and its brake is left as the controller chose. Plays
the final-check block of round 0 (the default) or the test seeds; --limit 0 plays the
finalist ungoverned (docs/transfer.md, twenty-fourth pass).

uv run python scripts/speed_governor.py --run RUN --finalist 5 --noise 0.15 \
    --limit 50 [--seeds block | test] [--episodes N] [--workers 2] [--out FILE]
"""

import argparse
import json
from multiprocessing import get_context

import numpy as np

ENV_ID = "CarRacing-v3"


class Governed:
    """``policy`` with its gas cut whenever ``env``'s car is faster than ``limit``
    (0: never); counts the speed it saw and the steps it governed."""

    def __init__(self, policy, env, limit: float):
        self.policy, self.env, self.limit = policy, env, limit

    def reset(self, seed: int) -> None:
        self.policy.reset(seed)
        self.speeds, self.governed = [], 0

    def act(self, frame: np.ndarray, raw_obs: np.ndarray) -> np.ndarray:
        action = np.array(self.policy.act(frame, raw_obs), np.float32)
        speed = float(np.hypot(*self.env.unwrapped.car.hull.linearVelocity))
        self.speeds.append(speed)
        if self.limit > 0 and speed > self.limit:
            action[1] = 0.0
            self.governed += 1
        return action


def governed_episode(task: tuple[str, int, float, float, int]) -> dict:
    """One seeded episode of the finalist at the noise, governed (limit 0: not)."""
    run, finalist, noise, limit, seed = task
    from world_models.data.play import play_episode, summarize
    from world_models.data.policies import make_policy
    from world_models.envs import make_env
    from world_models.evaluation.real import policy_setup

    name, kwargs = policy_setup(run, "agent", action_noise=noise, finalist=finalist)
    env = make_env(ENV_ID)
    try:
        policy = Governed(make_policy(name, ENV_ID, **kwargs), env, limit)
        episode = play_episode(ENV_ID, policy, seed, 0, record_frames=False, env=env)
    finally:
        env.close()
    return dict(seed=seed, ret=summarize(episode)["return"],
                mean_speed=float(np.mean(policy.speeds)),
                governed_steps=policy.governed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True)
    parser.add_argument("--finalist", type=int, required=True, help="its generation")
    parser.add_argument("--noise", type=float, default=0.0)
    parser.add_argument("--limit", type=float, required=True, help="0: no governor")
    parser.add_argument("--seeds", choices=("block", "test"), default="block")
    parser.add_argument("--episodes", type=int, default=None,
                        help="test seeds only (default: eval.episodes)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=None, help="JSON lines file to append to")
    args = parser.parse_args()
    from world_models.run_directory import load_run_config
    from world_models.seeds import final_check_seeds, test_seeds
    from world_models.stats import summarize

    config = load_run_config(args.run)
    if config.env_id != ENV_ID:
        raise SystemExit(f"{args.run} is a {config.env_id} run; the governor is "
                         f"{ENV_ID}'s")
    seeds = (final_check_seeds(config, 0) if args.seeds == "block"
             else test_seeds(config, args.episodes))
    tasks = [(args.run, args.finalist, args.noise, args.limit, seed) for seed in seeds]
    with get_context("spawn").Pool(args.workers) as pool:
        rows = pool.map(governed_episode, tasks)
    summary = summarize([row["ret"] for row in rows])
    print(f"finalist {args.finalist}, noise {args.noise:g}, limit {args.limit:g}: "
          f"{summary.mean:.1f} ± {summary.std:.1f} (SE {summary.sem:.1f}, "
          f"n={len(rows)}), mean speed "
          f"{np.mean([row['mean_speed'] for row in rows]):.1f}")
    if args.out:
        with open(args.out, "a") as file:
            file.write(json.dumps(dict(vars(args), rows=rows)) + "\n")


if __name__ == "__main__":
    main()
