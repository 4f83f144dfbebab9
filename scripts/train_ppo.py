"""Train the controller with PPO inside a run's dream (instead of CMA-ES).

    uv run python scripts/train_ppo.py --run RUN [--updates 100] [--check 8]
    uv run python train_dream.py --run RUN --start-from RUN/ppo   # search on from it

Uses RUN's latest M, start pool, τ and horizon (its dream, as CMA-ES plays it) and its
controller kind as the policy's mean. Writes RUN/ppo/: a search folder whose kept
controller is the trained policy's mean, ``ppo_metrics.json`` (per update: mean return
of the dream episodes that ended, reward per step) and ``curve.png``. Prints compile
time apart from the steady dream steps per second. ``--check N`` plays the policy's
mean on N real episodes of round 0's last selection block (the block
``scripts/fit_controller.py`` checks on; no check of a search plays it).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import equinox as eqx
import jax
import numpy as np

from world_models.cli import run_cli
from world_models.dream.evolve import load_dream
from world_models.dream.ppo import PPO_DIR, PPOSettings, make_train, policy_params
from world_models.dream.search import save_start
from world_models.dream.selection import check_start
from world_models.files import write_json
from world_models.logs import plot_curves
from world_models.run_directory import load_run_config


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
    parser.add_argument("--check", type=int, default=0,
                        help="real episodes to play (at most dream.real_eval_episodes)")
    args = parser.parse_args()
    config = load_run_config(args.run)
    dream = load_dream(args.run, config)
    settings = PPOSettings(num_envs=args.num_envs, num_steps=args.num_steps,
                           updates=args.updates, learning_rate=args.learning_rate)
    train = eqx.filter_jit(make_train(dream, settings))
    key = jax.random.key(args.seed)
    start = time.perf_counter()
    compiled = train.lower(key).compile()
    compile_seconds = time.perf_counter() - start
    start = time.perf_counter()
    net, metrics = jax.block_until_ready(compiled(key))
    seconds = time.perf_counter() - start
    steps = settings.updates * settings.num_envs * settings.num_steps
    print(f"compile {compile_seconds:.1f} s; {steps} dream steps in {seconds:.1f} s "
          f"({steps / seconds:,.0f} steps/s with the updates)")

    out = args.run / PPO_DIR
    flat = np.asarray(policy_params(net))
    save_start(out, config, flat)
    rows = [dict(step=i + 1, **{k: float(v[i]) for k, v in metrics.items()})
            for i in range(settings.updates)]
    write_json(out / "ppo_metrics.json", dict(settings=vars(settings), updates=rows))
    metrics_path = out / "metrics.jsonl"
    metrics_path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    plot_curves(metrics_path, ["episode_return"], out / "curve.png",
                title=f"{config.env_id}: PPO in the dream")
    returns = np.asarray(metrics["episode_return"])
    print(f"dream return per episode: first update {returns[0]:.1f}, "
          f"last {returns[-1]:.1f}; wrote {out}")
    if args.check:
        print(check_start(args.run, config, flat, args.check))


if __name__ == "__main__":
    run_cli(main)
