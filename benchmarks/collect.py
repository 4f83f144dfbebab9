"""Collection throughput and collection-policy scores on CarRacing-v3.

    uv run python benchmarks/collect.py throughput [--episodes 4 --max-steps 500]
    uv run python benchmarks/collect.py scores [--episodes 10]

throughput: env-steps/s of raw env stepping (brownian policy, no preprocessing, no
saving, one process per worker) against the collection pipeline (the same policy and
seeds, with preprocessing, compression, atomic writes and IPC), for 1 and 2 workers, in
the same run. scores: mean ± std return of each collection policy over seeded
full-length episodes, via data.collection.play_episodes.
Results go to benchmarks/results/collect.json (merged by section).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from world_models.data.collection import collect, play_episodes
from world_models.data.policies import make_policy
from world_models.envs import make_env

ENV_ID = "CarRacing-v3"
RESULTS = Path(__file__).parent / "results" / "collect.json"


def _raw_worker(seeds: list[int], max_steps: int) -> int:
    env, policy, steps = make_env(ENV_ID), make_policy("brownian", ENV_ID), 0
    for seed in seeds:
        observation, _ = env.reset(seed=seed)
        policy.reset(seed)
        for _ in range(max_steps):
            observation, _, terminated, truncated, _ = env.step(
                policy.act(None, observation)
            )
            steps += 1
            if terminated or truncated:
                break
    return steps


def raw_steps_per_s(seeds: list[int], workers: int, max_steps: int) -> float:
    """Raw stepping in ``workers`` spawned processes; process start-up excluded."""
    with mp.get_context("spawn").Pool(workers) as pool:
        pool.map(abs, range(workers))  # start and import before timing
        start = time.perf_counter()
        steps = sum(
            pool.starmap(
                _raw_worker, [(seeds[i::workers], max_steps) for i in range(workers)]
            )
        )
        return steps / (time.perf_counter() - start)


def pipeline_steps_per_s(seeds: list[int], workers: int, max_steps: int) -> float:
    """collect() end to end, including spawning its workers."""
    folder = Path(tempfile.mkdtemp(prefix="bench_collect_"))
    try:
        start = time.perf_counter()
        manifest = collect(
            folder,
            ENV_ID,
            "brownian",
            len(seeds),
            seeds[0],
            workers,
            max_steps,
            progress=False,
        )
        return manifest["total_steps"] / (time.perf_counter() - start)
    finally:
        shutil.rmtree(folder)


def throughput(episodes: int, max_steps: int) -> dict:
    seeds = list(range(episodes))
    rows = []
    for workers in (1, 2):
        raw = raw_steps_per_s(seeds, workers, max_steps)
        pipeline = pipeline_steps_per_s(seeds, workers, max_steps)
        rows.append(
            {
                "workers": workers,
                "raw_steps_per_s": raw,
                "pipeline_steps_per_s": pipeline,
                "overhead_pct": 100 * (raw / pipeline - 1),
            }
        )
    print("| workers | raw env steps/s | pipeline steps/s | overhead |")
    print("|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['workers']} | {row['raw_steps_per_s']:.0f} | "
            f"{row['pipeline_steps_per_s']:.0f} | {row['overhead_pct']:.1f}% |"
        )
    return {"episodes": episodes, "max_steps": max_steps, "rows": rows}


def scores(episodes: int, workers: int) -> dict:
    table = {}
    for name in ("brownian", "recovery", "aggressive"):
        results = play_episodes(
            ENV_ID, name, list(range(episodes)), workers, max_steps=0
        )
        returns = np.array([r["return"] for r in results])
        table[name] = {
            "mean": float(returns.mean()),
            "std": float(returns.std()),
            "returns": returns.round(1).tolist(),
        }
    print("| policy | mean ± std | episodes |")
    print("|---|---|---|")
    for name, row in table.items():
        print(f"| {name} | {row['mean']:.1f} ± {row['std']:.1f} | {episodes} |")
    return {"episodes": episodes, "seeds": f"0..{episodes - 1}", "policies": table}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["throughput", "scores"])
    parser.add_argument("--episodes", type=int, default=None)
    parser.add_argument("--max-steps", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if args.what == "throughput":
        result = throughput(args.episodes or 4, args.max_steps)
    else:
        result = scores(args.episodes or 10, args.workers)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    merged = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    merged[args.what] = {
        **result,
        "machine": platform.platform(),
        "cpus": mp.cpu_count(),
    }
    RESULTS.write_text(json.dumps(merged, indent=1))


if __name__ == "__main__":
    main()
