"""Real-environment agent throughput: steps/s of V+M+C acting in CarRacing-v3, in one
run.

    uv run python benchmarks/agent.py [--steps 500 --repeats 5]

Two ways of making one agent step, interleaved in every repeat on the same frames:
  two calls   the step as the agent made it before: a jitted V-encode-and-act call, the
              latent key built eagerly, the action brought to the host, then a jitted
              M step (the reference written out below)
  one call    ``Agent.act`` over ``agent_step``: the whole step in one compiled call
              (the library)
and, for the share of the whole real step they are, CarRacing-v3's own ``env.step`` with
the frame preprocessing, and one in-process episode segment (env + agent). Models are
the quick preset's sizes (paper-sized V and M, linear controller) with random weights:
the cost does not depend on the weights. Compile time (first call) apart from the steady
state (median over repeats). Results go to benchmarks/results/agent.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from world_models.agent import Agent, latent_key
from world_models.config import make_config
from world_models.envs import get_spec, make_env, observed_frame
from world_models.models.controller import act, make_controller
from world_models.models.mdnrnn import action_to_input, rnn_from_config
from world_models.models.vae import ConvVAE, frames_to_float, sample_posterior

RESULTS = Path(__file__).parent / "results" / "agent.json"
ENV_ID = "CarRacing-v3"


@eqx.filter_jit
def _encode_and_act(vae, controller, h, frame, key, spec):
    mu, logvar = vae.encode(frames_to_float(frame))
    z = sample_posterior(mu, logvar, key)
    return z, act(controller, z, h, spec)


@eqx.filter_jit
def _step_m(rnn, state, z, action, spec):
    return rnn.step(state, z, action_to_input(action, spec))


def _two_calls(agent: Agent, frames: np.ndarray) -> None:
    state = agent.rnn.initial_state()
    for t, frame in enumerate(frames):
        z, action = _encode_and_act(
            agent.vae,
            agent.controller,
            state[0],
            jnp.asarray(frame),
            latent_key(0, t),
            agent.spec,
        )
        taken = np.asarray(action)
        state, _ = _step_m(agent.rnn, state, z, jnp.asarray(taken), agent.spec)
    jax.block_until_ready(state)


def _one_call(agent: Agent, frames: np.ndarray) -> None:
    agent.reset(0)
    for frame in frames:
        agent.act(frame)
    jax.block_until_ready(agent.state)


def _env_steps(env, frames: np.ndarray) -> None:
    spec = get_spec(ENV_ID)
    env.reset(seed=0)
    action = np.array([0.0, 0.3, 0.0], np.float32)
    for _ in frames:
        observation, *_ = env.step(action)
        observed_frame(env, observation, spec)


def _episode(agent: Agent, env, frames: np.ndarray) -> None:
    spec = get_spec(ENV_ID)
    observation, _ = env.reset(seed=0)
    agent.reset(0)
    for _ in frames:
        frame = observed_frame(env, observation, spec)
        observation, *_ = env.step(agent.act(frame, observation))


def _timed(function, *args) -> float:
    start = time.perf_counter()
    function(*args)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    config = make_config("quick", env_id=ENV_ID)
    spec = get_spec(ENV_ID)
    agent = Agent(
        ConvVAE(config.vae.z_dim, key=jax.random.key(0)),
        rnn_from_config(config, key=jax.random.key(1)),
        make_controller(config, key=jax.random.key(2)),
        spec,
    )
    frames = np.random.default_rng(0).integers(
        0, 256, (args.steps, 64, 64, 3), dtype=np.uint8
    )
    env = make_env(ENV_ID)
    variants = {
        "two calls (before)": lambda: _two_calls(agent, frames),
        "one call (agent_step)": lambda: _one_call(agent, frames),
        "env.step + preprocessing": lambda: _env_steps(env, frames),
        "episode: env + agent": lambda: _episode(agent, env, frames),
    }
    compile_s = {name: _timed(run) for name, run in variants.items()}  # first call
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, run in variants.items():
            times[name].append(_timed(run))
    env.close()

    base = statistics.median(times["two calls (before)"])
    rows = []
    print(
        f"{'variant':<26} {'first s':>8} {'ms/step':>8} {'steps/s':>9} {'vs before':>9}"
    )
    for name, samples in times.items():
        median = statistics.median(samples)
        row = dict(
            variant=name,
            first_call_s=round(compile_s[name], 3),
            ms_per_step=round(1e3 * median / args.steps, 3),
            steps_per_s=round(args.steps / median, 1),
            speedup_vs_two_calls=round(base / median, 3),
        )
        rows.append(row)
        print(
            f"{name:<26} {row['first_call_s']:>8.2f} {row['ms_per_step']:>8.3f} "
            f"{row['steps_per_s']:>9.1f} {row['speedup_vs_two_calls']:>9.2f}"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            dict(
                date=time.strftime("%Y-%m-%d"),
                machine=platform.processor() or platform.machine(),
                jax=jax.__version__,
                steps=args.steps,
                repeats=args.repeats,
                rows=rows,
            ),
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
