"""The worker pool's two backends, local processes and Ray actors, on the same episodes.

    uv sync --extra ray
    uv run python benchmarks/pool.py [--episodes 8 --max-steps 200 --workers 2]
    uv run python benchmarks/pool.py --address HEAD:6379   # Ray on a running cluster

Each backend collects the same seeded CarRacing-v3 episodes of one policy into a
temporary folder with data.collection.collect: workers started, episodes played,
compressed and written atomically (by the workers locally, by the driver with Ray),
manifest. The wall time includes starting the workers (processes or actors), not
``ray.init`` (reported apart: a run pays it once). Overhead per episode: (wall - local
wall) / episodes. Results go to benchmarks/results/pool.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

from world_models.data.collection import collect
from world_models.data.ray_pool import connect, import_ray

ENV_ID = "CarRacing-v3"
RESULTS = Path(__file__).parent / "results" / "pool.json"


def timed_collect(backend: str, args: argparse.Namespace) -> dict:
    folder = Path(tempfile.mkdtemp(prefix=f"bench_pool_{backend}_"))
    try:
        start = time.perf_counter()
        manifest = collect(
            folder,
            ENV_ID,
            args.policy,
            args.episodes,
            args.seed,
            args.workers,
            args.max_steps,
            progress=False,
            backend=backend,
            ray_address=args.address,
        )
        wall = time.perf_counter() - start
    finally:
        shutil.rmtree(folder)
    steps = manifest["total_steps"]
    return {
        "backend": backend,
        "episodes": manifest["total_episodes"],
        "steps": steps,
        "wall_s": wall,
        "steps_per_s": steps / wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--max-steps", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--policy", default="brownian")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--address", default="", help="a Ray cluster (default: a local Ray)"
    )
    args = parser.parse_args()
    ray = import_ray()
    load_before = os.getloadavg()
    local = timed_collect("local", args)
    start = time.perf_counter()
    if args.address:
        connect(args.address)
    else:
        ray.init(num_cpus=args.workers, include_dashboard=False)
    init_s = time.perf_counter() - start
    remote = timed_collect("ray", args)
    ray.shutdown()
    rows = [local, remote]
    for row in rows:
        row["overhead_per_episode_s"] = (row["wall_s"] - local["wall_s"]) / max(
            1, row["episodes"]
        )
    print(f"ray.init: {init_s:.1f} s (not in the wall times)")
    print("| backend | episodes | wall s | steps/s | overhead per episode vs local |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['backend']} | {row['episodes']} | {row['wall_s']:.1f} | "
            f"{row['steps_per_s']:.0f} | {row['overhead_per_episode_s']:+.2f} s |"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "env_id": ENV_ID,
        "policy": args.policy,
        "episodes": args.episodes,
        "max_steps": args.max_steps,
        "workers": args.workers,
        "ray_address": args.address or "local",
        "ray_version": ray.__version__,
        "ray_init_s": init_s,
        "rows": rows,
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in load_before],
    }
    RESULTS.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
