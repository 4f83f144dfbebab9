"""Dream throughput: agent-steps/s of the vmapped CMA-ES dream, in one run.

    uv run python benchmarks/dream.py [--horizon 100 --repeats 3 --generation-horizon 0
                                       --torch-python PATH]

Sections (paper-sized M: z 32, LSTM 256, 5 mixtures per dimension; linear controller):
  batch       agent-steps/s of Dream.population_returns over batch sizes
              (candidates x 16 rollouts), plus chunked variants of the largest batch
              (lax.map); M's LSTM in the dream's batch-major layout and in the W·x
              layout it had before (Dream.batch_major), timed in turns, their returns
              compared bit for bit, and with bfloat16 matmuls (dream.matmul_dtype),
              its largest return difference; with --torch-python, the same dream in
              PyTorch eager (torch_reference.py dream, a subprocess) takes a turn too
  generation  wall time of one whole generation (ask, dream, tell under one jit) at the
              quick (64 x 16) and full (256 x 16) settings (--generation-presets), at
              each preset's chunk size and at --generation-chunks
  loop        the same population dreamed by a Python loop over candidates (each a
              jitted vmap over its rollouts) against the one vmapped call: the ratio
Compile time (first call) is reported apart from the steady state (median of repeats,
block_until_ready). Results go to benchmarks/results/dream.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from world_models.config import make_config
from world_models.dream.evolve import run_generations
from world_models.dream.rollout import Dream, make_dream
from world_models.dream.search import initial_search, make_strategy
from world_models.envs import get_spec, step_limit
from world_models.models.controller import controller_to_flat, make_controller
from world_models.models.mdnrnn import rnn_from_config, with_matmul_dtype
from world_models.presets import PRESETS
from torch_reference import measure  # sibling script: benchmarks/ is on sys.path

RESULTS = Path(__file__).parent / "results" / "dream.json"
ROLLOUTS = 16


def _dream(preset: str, horizon: int) -> Dream:
    config = make_config(preset)
    rnn = rnn_from_config(config, key=jax.random.key(0))
    # Keep random dreams alive: the benchmark times full-length scans either way.
    rnn = eqx.tree_at(lambda m: m.head.bias, rnn, rnn.head.bias.at[-1].set(-50.0))
    z = config.vae.z_dim
    starts = (
        np.random.default_rng(0).normal(size=(100, z)).astype(np.float32),
        np.full((100, z), -2.0, np.float32),
    )
    template = make_controller(config, key=jax.random.key(1))
    return make_dream(
        rnn,
        starts,
        template,
        get_spec(config.env_id),
        horizon,
        config.dream.temperature,
    )


def _population(dream: Dream, size: int) -> jax.Array:
    dim = controller_to_flat(dream.template).size
    return 0.1 * jax.random.normal(jax.random.key(2), (size, dim))


def _call_s(fn) -> float:
    """Seconds of one call, block_until_ready."""
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def _time(fn, repeats: int) -> tuple[float, float]:
    """(first call incl. compile, median steady call) in seconds."""
    first = _call_s(fn)
    return first, statistics.median(_call_s(fn) for _ in range(repeats))


@eqx.filter_jit
def _evaluate(dream: Dream, population, key, rollouts: int, chunk_size: int):
    return dream.population_returns(population, key, rollouts, chunk_size)[0]


@eqx.filter_jit
def _one_candidate(dream: Dream, params, key, rollouts: int):
    return dream.population_returns(params[None], key, rollouts)[0]


def bench_batches(
    batches: list[int],
    chunks: list[int],
    horizon: int,
    repeats: int,
    torch_python: str | None = None,
) -> list[dict]:
    """Three versions of the same dream timed in turns at every batch size: the
    dream's batch-major LSTM, the W·x layout it had before (their returns compared
    bit for bit) and bfloat16 matmuls (``dream.matmul_dtype``; the largest return
    difference). With ``torch_python`` the same dream in PyTorch (torch_reference.py
    dream) takes a turn too (unchunked rows)."""
    base, rows = _dream("full", horizon), []
    variants = {
        "now": base,
        "before": dataclasses.replace(base, batch_major=False),
        "bf16": dataclasses.replace(
            base, rnn=with_matmul_dtype(base.rnn, "bfloat16")
        ),
    }
    key = jax.random.key(3)
    sizes = [(b, 0) for b in batches] + [(batches[-1], c) for c in chunks]
    for batch, chunk in sizes:
        population = _population(base, batch // ROLLOUTS)
        calls = {
            name: (lambda d=dream: _evaluate(d, population, key, ROLLOUTS, chunk))
            for name, dream in variants.items()
        }
        first = {name: _call_s(call) for name, call in calls.items()}
        steady = {name: [] for name in calls}
        torch_rates = {0: [], 1: []}  # PyTorch float32, bfloat16 autocast
        for _ in range(repeats):
            for name, call in calls.items():
                steady[name].append(_call_s(call))
            if torch_python and not chunk:
                for autocast, rates in torch_rates.items():
                    rates.append(
                        measure(torch_python, "dream", batch=batch, horizon=horizon,
                                steps=1, autocast=autocast)["rate"]
                    )
        returns = {name: np.asarray(call()) for name, call in calls.items()}
        rate = {m: batch * horizon / statistics.median(t) for m, t in steady.items()}
        rows.append(
            dict(
                batch=batch,
                chunk_size=chunk,
                compile_s=first["now"],
                steady_s=statistics.median(steady["now"]),
                agent_steps_per_s=rate["now"],
                agent_steps_per_s_before=rate["before"],
                speedup=rate["now"] / rate["before"],
                identical_returns=bool(
                    np.array_equal(returns["now"], returns["before"])
                ),
                agent_steps_per_s_bf16=rate["bf16"],
                bf16_speedup=rate["bf16"] / rate["now"],
                bf16_max_return_difference=float(
                    np.abs(returns["bf16"] - returns["now"]).max()
                ),
            )
        )
        torch_text = ""
        if torch_rates[0]:
            torch_rate, torch_bf16 = map(statistics.median, torch_rates.values())
            rows[-1].update(
                torch_agent_steps_per_s=torch_rate,
                ours_over_torch=rate["now"] / torch_rate,
                bf16_over_torch=rate["bf16"] / torch_rate,
                torch_autocast_agent_steps_per_s=torch_bf16,
                bf16_over_torch_autocast=rate["bf16"] / torch_bf16,
            )
            torch_text = f", PyTorch {torch_rate:.0f}, with bfloat16 autocast "
            torch_text += f"{torch_bf16:.0f}"
        print(
            f"batch {batch:6d} chunk {chunk:5d}: {rate['now']:10.0f} agent-steps/s, "
            f"W·x layout {rate['before']:10.0f} ({rows[-1]['speedup']:.2f}x), same "
            f"returns: {rows[-1]['identical_returns']}, bfloat16 {rate['bf16']:10.0f} "
            f"({rows[-1]['bf16_speedup']:.2f}x) (first call {first['now']:.1f} s)"
            + torch_text,
            flush=True,
        )
    return rows


def bench_generations(
    presets: list[str], horizon: int, repeats: int, chunks: list[int]
) -> list[dict]:
    """One generation at each preset's setting, with the preset's chunk size and each
    of ``chunks`` (the results are the same for every chunk size)."""
    rows = []
    for preset, chunk in [
        (p, c)
        for p in presets
        for c in dict.fromkeys([make_config(p).dream.chunk_size, *chunks])
    ]:
        config = make_config(preset, overrides=[f"dream.chunk_size={chunk}"])
        steps = horizon or step_limit(get_spec(config.env_id), config.dream.max_steps)
        dream = _dream(preset, steps)
        mean = jnp.zeros_like(controller_to_flat(dream.template))
        es, es_params = make_strategy(config, mean.size)
        state = initial_search(es, es_params, mean, 0)["es_state"]
        settings = config.dream

        def one_generation():
            return run_generations(
                dream,
                es,
                es_params,
                state,
                jax.random.key(0),
                jnp.asarray(0),
                1,
                settings.rollouts,
                settings.chunk_size,
            )

        compile_s, steady_s = _time(one_generation, repeats)
        batch = settings.population * settings.rollouts
        rows.append(
            dict(
                preset=preset,
                chunk_size=chunk,
                population=settings.population,
                rollouts=settings.rollouts,
                horizon=steps,
                compile_s=compile_s,
                generation_s=steady_s,
                agent_steps_per_s=batch * steps / steady_s,
            )
        )
        print(
            f"{preset} (chunk {chunk}): one generation {settings.population}x"
            f"{settings.rollouts} x {steps} steps: {steady_s:.2f} s (first call "
            f"{compile_s:.1f} s)",
            flush=True,
        )
    return rows


def bench_loop(population: int, horizon: int, repeats: int) -> dict:
    dream = _dream("full", horizon)
    candidates = _population(dream, population)
    key = jax.random.key(4)

    def python_loop():
        return jnp.stack([_one_candidate(dream, c, key, ROLLOUTS) for c in candidates])

    loop_compile, loop_s = _time(python_loop, repeats)
    vmap_compile, vmap_s = _time(
        lambda: _evaluate(dream, candidates, key, ROLLOUTS, 0), repeats
    )
    row = dict(
        population=population,
        rollouts=ROLLOUTS,
        horizon=horizon,
        python_loop_s=loop_s,
        vmapped_s=vmap_s,
        speedup=loop_s / vmap_s,
        python_loop_compile_s=loop_compile,
        vmapped_compile_s=vmap_compile,
    )
    print(
        f"python loop over {population} candidates: {loop_s:.2f} s, vmapped: "
        f"{vmap_s:.2f} s -> {row['speedup']:.1f}x",
        flush=True,
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--horizon",
        type=int,
        default=100,
        help="dream steps for the batch and loop sections",
    )
    parser.add_argument(
        "--generation-horizon",
        type=int,
        default=0,
        help="dream steps of the generation section (0: the preset's)",
    )
    parser.add_argument(
        "--generation-presets", nargs="+", default=["quick", "full"], choices=PRESETS
    )
    parser.add_argument(
        "--batches", type=int, nargs="+", default=[64, 256, 1024, 4096, 16384]
    )
    parser.add_argument("--chunks", type=int, nargs="*", default=[1024, 4096])
    parser.add_argument(
        "--generation-chunks",
        type=int,
        nargs="*",
        default=[0],
        help="chunk sizes timed beside each preset's own",
    )
    parser.add_argument("--loop-population", type=int, default=64)
    parser.add_argument(
        "--torch-python",
        metavar="PATH",
        help="a Python with torch: also time benchmarks/torch_reference.py dream",
    )
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    device = jax.devices()[0]
    print(
        f"device: {device.device_kind} ({jax.default_backend()}), "
        f"{platform.processor() or platform.machine()}"
    )
    results = dict(
        device=device.device_kind,
        backend=jax.default_backend(),
        machine=platform.machine(),
        horizon=args.horizon,
        batch=bench_batches(
            args.batches, args.chunks, args.horizon, args.repeats, args.torch_python
        ),
        loop=bench_loop(args.loop_population, args.horizon, args.repeats),
        generation=bench_generations(
            args.generation_presets,
            args.generation_horizon,
            args.repeats,
            args.generation_chunks,
        ),
    )
    print(
        "\n| batch | chunk | agent-steps/s | W·x layout (before) | ratio | same "
        "returns | bfloat16 | ratio | PyTorch | ours / PyTorch | bfloat16 / PyTorch "
        "| PyTorch bfloat16 autocast | bfloat16 / it | first call (s) |\n"
        + "|---" * 14 + "|"
    )
    for row in results["batch"]:
        torch_rate = row.get("torch_agent_steps_per_s")
        print(
            f"| {row['batch']} | {row['chunk_size'] or '-'} | "
            f"{row['agent_steps_per_s']:,.0f} | {row['agent_steps_per_s_before']:,.0f}"
            f" | {row['speedup']:.2f} | {row['identical_returns']} | "
            f"{row['agent_steps_per_s_bf16']:,.0f} | {row['bf16_speedup']:.2f} | "
            + (f"{torch_rate:,.0f} | {row['ours_over_torch']:.2f} | "
               f"{row['bf16_over_torch']:.2f} | "
               f"{row['torch_autocast_agent_steps_per_s']:,.0f} | "
               f"{row['bf16_over_torch_autocast']:.2f}"
               if torch_rate else "- | - | - | - | -")
            + f" | {row['compile_s']:.1f} |"
        )
    print(
        "\n| setting | chunk | population x rollouts | horizon | generation (s) | "
        "agent-steps/s |\n|---|---|---|---|---|---|"
    )
    for row in results["generation"]:
        print(
            f"| {row['preset']} | {row['chunk_size'] or '-'} | "
            f"{row['population']}x{row['rollouts']} | "
            f"{row['horizon']} | {row['generation_s']:.2f} | "
            f"{row['agent_steps_per_s']:,.0f} |"
        )
    loop = results["loop"]
    print(
        f"\nvmapped population vs Python loop over {loop['population']} candidates: "
        f"{loop['speedup']:.1f}x ({loop['vmapped_s']:.2f} s vs "
        f"{loop['python_loop_s']:.2f} s)"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    name = (
        RESULTS
        if results["backend"] == "cpu"
        else RESULTS.with_name(f"dream_{results['backend']}.json")
    )
    name.write_text(json.dumps(results, indent=2))
    print(f"wrote {name}")


if __name__ == "__main__":
    main()
