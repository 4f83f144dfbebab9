"""Seeded real episodes of any policy on a worker pool (``worker_pool``, ``ray_pool``).

Collection saves the episodes (atomic files + manifest.json), evaluation only scores
them, and the dream's periodic real checks call ``play_episodes`` too.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from world_models.config import Config
from world_models.config_sections import POOL_BACKENDS, require
from world_models.data.episodes import EpisodeError, load_episode
from world_models.data.play import summarize
from world_models.data.policies import get_factory
from world_models.data.worker_pool import Task, run_tasks
from world_models.envs import get_spec
from world_models.files import TMP_MARKER, write_atomic_text
from world_models.seeds import collection_seeds

MANIFEST = "manifest.json"


def episode_filename(seed: int) -> str:
    return f"ep_{seed:06d}.npz"


class RolloutError(RuntimeError):
    """Some episodes could not be played even after a retry."""


def _tasks(
    env_id: str,
    policy_name: str,
    seeds: Iterable[int],
    max_steps: int,
    policy_kwargs: dict[str, Any] | None,
    paths: Sequence[str | None],
) -> list[Task]:
    factory = get_factory(policy_name)
    kwargs = tuple(sorted((policy_kwargs or {}).items()))
    return [
        Task(env_id, policy_name, factory, kwargs, int(seed), max_steps, path)
        for seed, path in zip(seeds, paths)
    ]


def _run(
    tasks: Sequence[Task], workers: int, on_result: Any, backend: str, address: str
) -> tuple[dict[int, dict[str, Any]], dict[int, str]]:
    """``tasks`` on the pool of ``backend`` (``collect.backend``): local or Ray."""
    if backend == "ray":
        from world_models.data import ray_pool

        return ray_pool.run_tasks(tasks, workers, on_result, address=address)
    require(backend == "local", f"unknown backend {backend!r}; known: {POOL_BACKENDS}")
    return run_tasks(tasks, workers, on_result)


def play_episodes(
    env_id: str,
    policy_name: str,
    seeds: Sequence[int],
    workers: int,
    max_steps: int,
    policy_kwargs: dict[str, Any] | None = None,
    progress: bool = True,
    backend: str = "local",
    ray_address: str = "",
) -> list[dict[str, Any]]:
    """Score ``policy_name`` on ``seeds`` (no frames kept): [{seed, return, length,
    terminated}] in seed order. Raises RolloutError if an episode fails twice.
    ``backend``, ``ray_address``: the pool, as in ``config.collect``."""
    get_spec(env_id)
    tasks = _tasks(
        env_id, policy_name, seeds, max_steps, policy_kwargs, [None] * len(seeds)
    )
    with tqdm(
        total=len(tasks), desc=f"eval {policy_name}", unit="ep", disable=not progress
    ) as bar:
        results, failures = _run(
            tasks, workers, lambda i, r: bar.update(), backend, ray_address
        )
    if failures:
        raise RolloutError(_failure_summary(tasks, failures))
    return [results[i] for i in range(len(tasks))]


def _failure_summary(tasks: Sequence[Task], failures: dict[int, str]) -> str:
    lines = [f"{len(failures)} of {len(tasks)} episodes failed after a retry:"]
    for index, message in sorted(failures.items()):
        last_line = message.strip().splitlines()[-1] if message.strip() else message
        lines.append(f"  seed {tasks[index].seed}: {last_line}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- collection


def _existing_entry(
    path: Path,
    env_id: str,
    policy_name: str,
    seed: int,
    manifest_entry: dict[str, Any] | None,
) -> dict[str, Any] | None:
    """Summary of a valid file already at ``path``, or None if it must be collected."""
    if not path.is_file():
        return None
    stat = path.stat()
    if (
        manifest_entry is not None
        and manifest_entry.get("bytes") == stat.st_size
        and manifest_entry.get("mtime_ns") == stat.st_mtime_ns
    ):
        return manifest_entry
    try:
        episode = load_episode(path)
    except EpisodeError:
        return None  # corrupt: collect it again (the new file replaces it atomically)
    found = (str(episode["env_id"]), str(episode["policy"]), int(episode["seed"]))
    if found != (env_id, policy_name, seed):
        raise EpisodeError(
            f"{path} holds env/policy/seed {found}, expected "
            f"{(env_id, policy_name, seed)}; use another output folder"
        )
    return _entry(path, summarize(episode))


def _entry(path: Path, summary: dict[str, Any]) -> dict[str, Any]:
    stat = path.stat()
    return {
        "file": path.name,
        **summary,
        "bytes": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
    }


def _read_manifest(out_dir: Path) -> dict[str, Any]:
    path = out_dir / MANIFEST
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return {}  # rebuilt from the episode files below


def collect(
    out_dir: str | os.PathLike,
    env_id: str,
    policy_name: str,
    episodes: int,
    seed: int,
    workers: int,
    max_steps: int,
    policy_kwargs: dict[str, Any] | None = None,
    progress: bool = True,
    backend: str = "local",
    ray_address: str = "",
) -> dict[str, Any]:
    """Collect ``episodes`` episodes of ``policy_name`` into ``out_dir``; episode i uses
    seed + i for env.reset and the policy and is saved as ``ep_{seed:06d}.npz``.

    Idempotent: valid files already there are kept, so a re-run writes nothing. Returns
    the manifest (also written atomically to ``out_dir/manifest.json``); raises
    RolloutError, after writing the manifest of what exists, if episodes are missing.
    """
    if episodes <= 0:
        raise ValueError(f"episodes must be > 0, got {episodes}")
    get_spec(env_id)
    get_factory(policy_name)  # unknown names fail before any work
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob(f".*{TMP_MARKER}*"):
        stale.unlink(missing_ok=True)  # left by a killed writer
    old = _read_manifest(out_dir)
    if old and old.get("max_steps") != max_steps:
        raise RolloutError(
            f"{out_dir} was collected with max_steps={old.get('max_steps')},"
            f" not {max_steps}; use another output folder"
        )
    old_entries = {e["file"]: e for e in old.get("episodes", [])}

    seeds = [seed + i for i in range(episodes)]
    entries: dict[int, dict[str, Any]] = {}
    for s in seeds:
        path = out_dir / episode_filename(s)
        entry = _existing_entry(
            path, env_id, policy_name, s, old_entries.get(path.name)
        )
        if entry is not None:
            entries[s] = entry
    todo = [s for s in seeds if s not in entries]
    tasks = _tasks(
        env_id,
        policy_name,
        todo,
        max_steps,
        policy_kwargs,
        [str(out_dir / episode_filename(s)) for s in todo],
    )
    failures: dict[int, str] = {}
    if tasks:
        start, steps = time.perf_counter(), 0
        with tqdm(
            total=len(tasks),
            desc=f"collect {policy_name}",
            unit="ep",
            disable=not progress,
        ) as bar:

            def on_result(index: int, result: dict[str, Any]) -> None:
                nonlocal steps
                steps += result["length"]
                bar.update()
                bar.set_postfix(
                    steps_per_s=f"{steps / (time.perf_counter() - start):.0f}"
                )

            try:
                results, failures = _run(
                    tasks, workers, on_result, backend, ray_address
                )
            except BaseException:
                for stale in out_dir.glob(f".*{TMP_MARKER}*"):
                    stale.unlink(missing_ok=True)  # workers were killed mid-write
                raise
        for index, result in results.items():
            path = out_dir / episode_filename(tasks[index].seed)
            entries[tasks[index].seed] = _entry(path, result)

    manifest = _manifest(
        env_id, policy_name, max_steps, seeds, entries, failures, tasks
    )
    text = json.dumps(manifest, indent=1)
    if (out_dir / MANIFEST).is_file() and (out_dir / MANIFEST).read_text() == text:
        pass  # nothing changed: leave the file (and its mtime) alone
    else:
        write_atomic_text(out_dir / MANIFEST, text)
    if failures:
        raise RolloutError(
            _failure_summary(tasks, failures)
            + f"\nkept {len(entries)} episodes in {out_dir}"
        )
    return manifest


def _manifest(
    env_id: str,
    policy_name: str,
    max_steps: int,
    seeds: list[int],
    entries: dict[int, dict[str, Any]],
    failures: dict[int, str],
    tasks: Sequence[Task],
) -> dict[str, Any]:
    kept = [entries[s] for s in seeds if s in entries]
    returns = [e["return"] for e in kept]
    return {
        "env_id": env_id,
        "policy": policy_name,
        "max_steps": max_steps,
        "seeds": [e["seed"] for e in kept],
        "missing_seeds": sorted(tasks[i].seed for i in failures),
        "episodes": kept,
        "total_episodes": len(kept),
        "total_steps": int(sum(e["length"] for e in kept)),
        "mean_return": float(np.mean(returns)) if returns else None,
        "std_return": float(np.std(returns)) if returns else None,
    }


def round_dir(run_dir: str | os.PathLike, round_index: int, policy_name: str) -> Path:
    return Path(run_dir) / "data" / f"round{round_index}" / policy_name


def collect_round(
    run_dir: str | os.PathLike,
    config: Config,
    round_index: int = 0,
    policies: Sequence[str] | None = None,
    policy_kwargs: dict[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Collect every policy of ``config.collect`` (or ``policies``) for one round into
    ``run_dir/data/roundK/POLICY/``. Returns {policy: manifest}; raises RolloutError
    listing every policy with missing episodes after trying all of them."""
    settings = config.collect
    manifests: dict[str, Any] = {}
    errors: list[str] = []
    for name in policies or settings.policies:
        try:
            manifests[name] = collect(
                round_dir(run_dir, round_index, name),
                config.env_id,
                name,
                settings.episodes_per_policy,
                collection_seeds(config, round_index, name).start,
                settings.workers,
                settings.max_steps,
                policy_kwargs,
                progress=progress,
                backend=settings.backend,
                ray_address=settings.ray_address,
            )
        except RolloutError as error:
            errors.append(f"{name}: {error}")
    if errors:
        raise RolloutError("\n".join(errors))
    return manifests
