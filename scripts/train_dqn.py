"""Train a DQN controller over [z, h]: inside a run's dream, or in the real env with the
run's V and M as fixed feature extractors.

    uv run python scripts/train_dqn.py --run RUN [--iterations 2000] [--check 8]
    uv run python scripts/train_dqn.py --run RUN --real --steps 20000 [--check 8]
    uv run python evaluate_agent.py --run RUN --policy q_agent   # RUN/dqn, test seeds

In the dream (``dream.dqn``): RUN's latest M, start pool, τ and horizon, as CMA-ES
plays them; ``num_envs`` dreams step in lockstep for ``iterations`` steps each. Prints
compile time apart from the steady dream steps per second and writes RUN/dqn/.

With ``--real`` (``rl.dqn_features``): one real env, ``--steps`` env steps, ε decaying
over ``--epsilon-steps`` (default half the steps); checkpointed at episode boundaries,
so running it again resumes (or, with more steps, continues); ``--fresh`` starts
over. Writes RUN/dqn_real/.

Either folder holds the Q-network (the ``q_agent`` policy's ``q_dir``),
``metrics.jsonl``, ``curve.png`` and ``summary.json``. The action set is CarRacing's
``CAR_ACTIONS`` or a discrete env's indices. ``--check N`` plays the greedy Q-agent
on N real episodes of round 0's last selection block (the block ``train_ppo.py
--check`` plays; no check of a search plays it).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import equinox as eqx
import jax
import numpy as np

from world_models.cli import run_cli
from world_models.config import Config
from world_models.data.collection import play_episodes
from world_models.dream.dqn import DQNSettings, action_set, make_train
from world_models.dream.evolve import load_dream
from world_models.dream.selection import check_line
from world_models.envs import get_spec, step_limit
from world_models.files import write_json
from world_models.logs import METRICS_FILENAME, plot_curves
from world_models.rl import SUMMARY_FILENAME
from world_models.rl.dqn_features import REAL_Q_DIR, train_real_dqn
from world_models.rl.q_agent import DREAM_Q_DIR, save_q_network
from world_models.run_directory import load_run_config
from world_models.seeds import fit_check_seeds


def train_in_dream(run: Path, config: Config, settings: DQNSettings, seed: int) -> Path:
    dream = load_dream(run, config)
    actions = action_set(dream.spec)
    train = eqx.filter_jit(make_train(dream, settings, actions))
    key = jax.random.key(seed)
    start = time.perf_counter()
    compiled = train.lower(key).compile()
    compile_seconds = time.perf_counter() - start
    start = time.perf_counter()
    network, metrics = jax.block_until_ready(compiled(key))
    seconds = time.perf_counter() - start
    steps = settings.iterations * settings.num_envs
    print(f"compile {compile_seconds:.1f} s; {steps} dream steps in {seconds:.1f} s "
          f"({steps / seconds:,.0f} steps/s with the updates)")

    out = run / DREAM_Q_DIR
    save_q_network(out, network, actions, settings, config)
    metrics = {name: np.asarray(values) for name, values in metrics.items()}
    rows = [dict(step=i + 1, **{name: float(values[i]) for name, values in
                                metrics.items() if math.isfinite(values[i])})
            for i in range(settings.iterations)]  # no return where no episode ended
    metrics_path = out / METRICS_FILENAME
    metrics_path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    plot_curves(metrics_path, ["episode_return"], out / "curve.png",
                title=f"{config.env_id}: DQN in the dream")
    write_json(out / SUMMARY_FILENAME, dict(
        env_id=config.env_id, dream_steps=steps, compile_s=compile_seconds,
        seconds=seconds, steps_per_s=steps / seconds, seed=seed,
        settings=vars(settings)))
    returns = metrics["episode_return"][np.isfinite(metrics["episode_return"])]
    if returns.size:
        print(f"dream return per episode: first {returns[0]:.1f}, "
              f"last {returns[-1]:.1f}; wrote {out}")
    return out


def check(run: Path, config: Config, q_dir: Path, episodes: int) -> str:
    seeds = fit_check_seeds(episodes)
    results = play_episodes(
        config.env_id, "q_agent", list(seeds), config.eval.workers,
        step_limit(get_spec(config.env_id), config.eval.max_steps),
        policy_kwargs=dict(run_dir=str(run), q_dir=str(q_dir)),
        backend=config.collect.backend, ray_address=config.collect.ray_address)
    return check_line(results)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    defaults = DQNSettings()
    parser.add_argument("--run", required=True, type=Path)
    parser.add_argument("--iterations", type=int, default=defaults.iterations,
                        help="dream: steps of each dream env")
    parser.add_argument("--num-envs", type=int, default=defaults.num_envs,
                        help="dream: envs in lockstep")
    parser.add_argument("--real", action="store_true",
                        help="train in the real env on V's and M's features")
    parser.add_argument("--steps", type=int, default=20_000, help="real: env steps")
    parser.add_argument("--max-episode-steps", type=int, default=0,
                        help="real: episode cap (0: the env's limit)")
    parser.add_argument("--fresh", action="store_true",
                        help="real: discard a saved run and start over")
    parser.add_argument("--epsilon-steps", type=int, default=None,
                        help=f"ε decay length (dream: {defaults.epsilon_iterations} "
                             "iterations; real: half the steps)")
    parser.add_argument("--warmup", type=int, default=defaults.warmup)
    parser.add_argument("--buffer-size", type=int, default=defaults.buffer_size)
    parser.add_argument("--target-every", type=int, default=defaults.target_every)
    parser.add_argument("--learning-rate", type=float,
                        default=defaults.learning_rate)
    parser.add_argument("--hidden", type=int, default=defaults.hidden)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--check", type=int, default=0,
                        help="real episodes the trained Q-agent plays afterwards")
    args = parser.parse_args()
    config = load_run_config(args.run)
    epsilon_steps = args.epsilon_steps or (
        max(1, args.steps // 2) if args.real else defaults.epsilon_iterations)
    settings = DQNSettings(
        num_envs=1 if args.real else args.num_envs,
        iterations=args.steps if args.real else args.iterations,
        buffer_size=args.buffer_size, warmup=args.warmup,
        learning_rate=args.learning_rate, epsilon_iterations=epsilon_steps,
        target_every=args.target_every, hidden=args.hidden)
    if args.real:
        summary = train_real_dqn(args.run, settings, seed=args.seed,
                                 max_episode_steps=args.max_episode_steps,
                                 fresh=args.fresh)
        out = args.run / REAL_Q_DIR
        print(f"{summary['real_steps']} real env steps ({summary['episodes']} "
              f"episodes; {summary['steps_played_now']} played now at "
              f"{summary['steps_per_s']:.1f} steps/s); wrote {out}")
    else:
        out = train_in_dream(args.run, config, settings, args.seed)
    if args.check:
        print(check(args.run, config, out, args.check))


if __name__ == "__main__":
    run_cli(main)
