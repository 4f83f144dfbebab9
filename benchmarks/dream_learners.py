"""Dream steps per second of each learner in the dream: CMA-ES, PPO, DQN, in one run.

    uv run python benchmarks/dream_learners.py [--horizon 400 --repeats 3]

The quick preset's M (z 32, LSTM 256, random weights kept alive) and linear controller.
CMA-ES: one generation of 64 candidates x 16 rollouts x horizon steps (ask, dream,
tell). PPO: 64 dreams x 64 steps per update, 4 epochs x 4 minibatches, ``--ppo-updates``
updates. DQN: 64 dreams, one gradient step of 64 transitions per dream step,
``--dqn-iterations`` iterations (CarRacing's five actions). Each learner's dream steps
(agents x steps, updates included in the time) per second of steady state (median of
``--repeats`` calls, block_until_ready), its first call (compile) apart. Results go to
benchmarks/results/dream_learners.json.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
from dream import _dream, _time

from world_models.config import make_config
from world_models.dream import dqn, ppo
from world_models.dream.evolve import run_generations
from world_models.dream.search import initial_search, make_strategy
from world_models.models.controller import controller_to_flat

RESULTS = Path(__file__).parent / "results" / "dream_learners.json"


def bench(horizon: int, repeats: int, ppo_updates: int, dqn_iterations: int) -> list:
    config = make_config("quick")
    dream = _dream("quick", horizon)
    settings = config.dream
    mean = jnp.zeros_like(controller_to_flat(dream.template))
    es, es_params = make_strategy(config, mean.size)
    es_state = initial_search(es, es_params, mean, 0)["es_state"]

    def cma_generation():
        return run_generations(dream, es, es_params, es_state, jax.random.key(0),
                               jnp.asarray(0), 1, settings.rollouts,
                               settings.chunk_size)

    ppo_settings = ppo.PPOSettings(num_envs=64, num_steps=64, updates=ppo_updates)
    ppo_train = eqx.filter_jit(ppo.make_train(dream, ppo_settings))
    dqn_settings = dqn.DQNSettings(num_envs=64, iterations=dqn_iterations, warmup=0)
    dqn_train = eqx.filter_jit(dqn.make_train(dream, dqn_settings, dqn.CAR_ACTIONS))
    learners = [
        ("CMA-ES generation", cma_generation,
         settings.population * settings.rollouts * horizon),
        ("PPO", lambda: ppo_train(jax.random.key(0)), 64 * 64 * ppo_updates),
        ("DQN", lambda: dqn_train(jax.random.key(0)), 64 * dqn_iterations),
    ]
    rows = []
    for name, call, steps in learners:
        compile_s, steady_s = _time(call, repeats)
        rows.append(dict(learner=name, dream_steps=steps, compile_s=compile_s,
                         steady_s=steady_s, steps_per_s=steps / steady_s))
        print(f"{name:18s} {steps:9d} dream steps: {steady_s:7.2f} s, "
              f"{steps / steady_s:10.0f} steps/s (first call {compile_s:.1f} s)",
              flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--horizon", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ppo-updates", type=int, default=20)
    parser.add_argument("--dqn-iterations", type=int, default=500)
    args = parser.parse_args()
    rows = bench(args.horizon, args.repeats, args.ppo_updates, args.dqn_iterations)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(dict(
        machine=platform.processor() or platform.machine(), cpus=jax.device_count(),
        backend=jax.default_backend(), args=vars(args), rows=rows), indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
