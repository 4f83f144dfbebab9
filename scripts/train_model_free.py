"""Train the model-free baseline: PPO from the real environment's 64x64 frames, no
world model (``rl/ppo_frames``, ``rl/frame_training``).

    uv run python scripts/train_model_free.py --env CarRacing-v3 --out OUT --steps N
        [--num-envs 4 --num-steps 128 --seed 0 --checkpoint-every 10 ...]

Resumes from OUT's latest checkpoint when OUT holds one written under the same
settings (``--steps`` may differ: a run can be extended), and refuses one written under
others. Writes OUT/: ``checkpoints/``, ``metrics.jsonl``, ``curve.png``, the trained
policy in ``policy/`` (play it as the registered policy ``ppo_frames`` with
``path=OUT/policy``) and ``summary.json`` (``real_steps``: the env steps it learnt
from). Prints the first calls' time (JAX compiling) apart from the steady env steps
per second.

The library is imported inside ``main``: each env's worker is a spawned process that
imports this file again, and needs none of JAX (seconds per worker).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    from world_models.rl.frame_training import train
    from world_models.rl.ppo_frames import FramePPOSettings

    defaults = FramePPOSettings()
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--env", required=True)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--steps", required=True, type=int,
                        help="env steps of the whole run, all envs together")
    parser.add_argument("--num-envs", type=int, default=defaults.num_envs)
    parser.add_argument("--num-steps", type=int, default=defaults.num_steps,
                        help="steps of each env between updates")
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--minibatches", type=int, default=defaults.minibatches)
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument("--entropy-coef", type=float, default=defaults.entropy_coef)
    parser.add_argument("--reward-scale", type=float, default=defaults.reward_scale,
                        help="rewards times this, as the learner sees them")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--checkpoint-every", type=int, default=10,
                        help="updates between checkpoints")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    try:
        settings = FramePPOSettings(
            num_envs=args.num_envs, num_steps=args.num_steps, total_steps=args.steps,
            epochs=args.epochs, minibatches=args.minibatches,
            learning_rate=args.learning_rate, entropy_coef=args.entropy_coef,
            reward_scale=args.reward_scale, seed=args.seed)
    except ValueError as error:
        parser.error(str(error))
    summary = train(args.env, settings, args.out,
                    checkpoint_every=args.checkpoint_every,
                    show_progress=not args.no_progress)
    steady = summary["steady_steps_per_second"]
    print(f"first calls (JAX compiling) {summary['first_calls_seconds']:.1f} s; "
          + (f"steady {steady:,.0f} env steps/s with the updates; " if steady else "")
          + f"{summary['real_steps']:,} real steps in all; wrote {args.out}")


if __name__ == "__main__":
    from world_models.cli import run_cli

    run_cli(main)
