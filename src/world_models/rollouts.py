"""The one worker pool that plays seeded real episodes for any policy.

Collection saves the episodes (atomic files + manifest.json), evaluation only scores
them, and the dream's periodic real checks call ``evaluate`` too. Workers are started
with the ``spawn`` context (never fork after JAX is initialised). Each worker owns one
task at a time, so when a worker process dies the pool knows which episode it was
playing, retries it once on a fresh worker and keeps every other result.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from world_models.config import Config
from world_models.data import EpisodeError, load_episode, save_episode
from world_models.envs import (
    get_spec,
    make_env,
    preprocess_frame,
    raw_frame,
    step_limit,
)
from world_models.files import TMP_MARKER, write_atomic_text
from world_models.policies import Policy, PolicyFactory, get_factory
from world_models.seeds import collection_seeds

MANIFEST = "manifest.json"


def episode_filename(seed: int) -> str:
    return f"ep_{seed:06d}.npz"


class RolloutError(RuntimeError):
    """Some episodes could not be played even after a retry."""


def play_episode(
    env_id: str,
    policy: Policy | str,
    seed: int,
    max_steps: int,
    record_frames: bool = True,
    *,
    env: Any = None,
) -> dict[str, Any]:
    """Play one episode: ``env.reset(seed=seed)`` and ``policy.reset(seed)``.

    Returns the episode dict of the data format (``obs`` only if ``record_frames``).
    ``max_steps`` (0: the env's limit) ends the episode as truncated. Pass ``env`` to
    reuse an environment of ``env_id`` across episodes.
    """
    spec = get_spec(env_id)
    if isinstance(policy, str):
        policy_name, policy = policy, get_factory(policy)(env_id)
    else:
        policy_name = type(policy).__name__
    own_env = env is None
    env = make_env(env_id) if own_env else env
    try:
        limit = step_limit(spec, max_steps)
        observation, _ = env.reset(seed=seed)
        policy.reset(seed)
        frame = preprocess_frame(raw_frame(env, observation, spec), spec)
        frames, actions, rewards, terminated, truncated = [frame], [], [], [], []
        for step in range(limit):
            action = policy.act(frame, observation)
            action = (
                np.int32(action)
                if spec.discrete
                else np.asarray(action, np.float32).reshape(spec.action_size)
            )
            observation, reward, term, trunc, _ = env.step(action)
            frame = preprocess_frame(raw_frame(env, observation, spec), spec)
            if record_frames:
                frames.append(frame)
            actions.append(action)
            rewards.append(reward)
            terminated.append(term)
            truncated.append((trunc or step == limit - 1) and not term)
            if term or trunc:
                break
    finally:
        if own_env:
            env.close()
    episode = {
        "actions": np.asarray(actions, np.int32 if spec.discrete else np.float32),
        "rewards": np.asarray(rewards, np.float32),
        "terminated": np.asarray(terminated, bool),
        "truncated": np.asarray(truncated, bool),
        "env_id": np.asarray(env_id),
        "policy": np.asarray(policy_name),
        "seed": np.asarray(seed, np.int64),
    }
    if record_frames:
        episode["obs"] = np.stack(frames)
    return episode


def summarize(episode: dict[str, Any]) -> dict[str, Any]:
    return {
        "seed": int(episode["seed"]),
        "return": float(episode["rewards"].sum()),
        "length": int(len(episode["rewards"])),
        "terminated": bool(episode["terminated"][-1]),
    }


# --------------------------------------------------------------------------- the pool


@dataclass(frozen=True)
class Task:
    """One episode for a worker: play it and save it to ``path`` (or just score it)."""

    env_id: str
    policy_name: str
    factory: PolicyFactory
    policy_kwargs: tuple[tuple[str, Any], ...]
    seed: int
    max_steps: int
    path: str | None


def _run_task(task: Task, cache: dict[Any, Any]) -> dict[str, Any]:
    env_key = ("env", task.env_id)
    if env_key not in cache:
        cache[env_key] = make_env(task.env_id)
    policy_key = ("policy", task.factory, task.env_id, task.policy_kwargs)
    if policy_key not in cache:
        cache[policy_key] = task.factory(task.env_id, **dict(task.policy_kwargs))
    episode = play_episode(
        task.env_id,
        cache[policy_key],
        task.seed,
        task.max_steps,
        record_frames=task.path is not None,
        env=cache[env_key],
    )
    episode["policy"] = np.asarray(task.policy_name)
    if task.path is not None:
        save_episode(task.path, episode)
    return summarize(episode)


def _worker_main(connection: Connection) -> None:
    # Ctrl-C is handled by the parent, which terminates the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cache: dict[Any, Any] = {}
    while True:
        task = connection.recv()
        if task is None:
            return
        try:
            connection.send(("ok", _run_task(task, cache)))
        except Exception:  # the parent decides whether to retry
            cache.clear()  # an env that raised may be in a broken state
            connection.send(("error", traceback.format_exc(limit=4)))


class _Worker:
    def __init__(self, context: mp.context.BaseContext):
        self.connection, child = context.Pipe()
        self.process = context.Process(target=_worker_main, args=(child,), daemon=True)
        self.process.start()
        child.close()
        self.task_index: int | None = None

    def stop(self) -> None:
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join()
        self.connection.close()


def run_tasks(
    tasks: Sequence[Task],
    workers: int,
    on_result: Callable[[int, dict[str, Any]], None] | None = None,
    retries: int = 1,
) -> tuple[dict[int, dict[str, Any]], dict[int, str]]:
    """Play ``tasks`` on ``workers`` spawned processes.

    Returns (results by task index, last error by task index for tasks that failed
    ``retries + 1`` times). A task whose env raises or whose worker dies is retried.
    """
    context = mp.get_context("spawn")
    pending = list(range(len(tasks)))[::-1]
    attempts = {index: 0 for index in pending}
    results: dict[int, dict[str, Any]] = {}
    failures: dict[int, str] = {}
    pool = [_Worker(context) for _ in range(max(1, min(workers, len(tasks))))]

    def fail(index: int, message: str) -> None:
        attempts[index] += 1
        if attempts[index] > retries:
            failures[index] = message
        else:
            pending.append(index)

    try:
        while pending or any(w.task_index is not None for w in pool):
            for worker in pool:
                if worker.task_index is None and pending:
                    worker.task_index = pending.pop()
                    worker.connection.send(tasks[worker.task_index])
            busy = [w for w in pool if w.task_index is not None]
            ready = wait(
                [w.connection for w in busy] + [w.process.sentinel for w in busy]
            )
            for position, worker in enumerate(pool):
                if worker.task_index is None:
                    continue
                index = worker.task_index
                if worker.connection in ready or worker.connection.poll():
                    try:
                        status, payload = worker.connection.recv()
                    except (EOFError, OSError):
                        status, payload = "died", "worker process died"
                elif worker.process.sentinel in ready:
                    status, payload = "died", "worker process died"
                else:
                    continue
                worker.task_index = None
                if status == "ok":
                    results[index] = payload
                    if on_result is not None:
                        on_result(index, payload)
                    continue
                if status == "died" or not worker.process.is_alive():
                    code = worker.process.exitcode
                    fail(index, f"{payload} (exit code {code})")
                    worker.stop()
                    pool[position] = _Worker(context)
                else:
                    fail(index, payload)
    finally:
        for worker in pool:
            if worker.task_index is None and worker.process.is_alive():
                try:
                    worker.connection.send(None)
                except (BrokenPipeError, OSError):
                    pass
            else:
                worker.process.terminate()
        for worker in pool:
            worker.stop()
    return results, failures


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


def evaluate(
    env_id: str,
    policy_name: str,
    seeds: Sequence[int],
    workers: int,
    max_steps: int,
    policy_kwargs: dict[str, Any] | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Score ``policy_name`` on ``seeds`` (no frames kept): [{seed, return, length,
    terminated}] in seed order. Raises RolloutError if an episode fails twice."""
    get_spec(env_id)
    tasks = _tasks(
        env_id, policy_name, seeds, max_steps, policy_kwargs, [None] * len(seeds)
    )
    with tqdm(
        total=len(tasks), desc=f"eval {policy_name}", unit="ep", disable=not progress
    ) as bar:
        results, failures = run_tasks(tasks, workers, lambda i, r: bar.update())
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
                results, failures = run_tasks(tasks, workers, on_result)
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
            )
        except RolloutError as error:
            errors.append(f"{name}: {error}")
    if errors:
        raise RolloutError("\n".join(errors))
    return manifests
