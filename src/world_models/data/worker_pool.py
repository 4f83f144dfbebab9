"""The one worker pool that plays seeded real episodes for any policy.

Workers are started with the ``spawn`` context (never fork after JAX is initialised).
Each worker owns one task at a time, so when a worker process dies the pool knows which
episode it was playing, retries it once on a fresh worker and keeps every other result.
Each worker keeps its env and policies between tasks. Workers compute on the CPU: on a
GPU machine, 16 processes stepping one agent each would contend for the device (and
each would reserve most of its memory) for models that take microseconds a step.
``ray_pool`` plays the same tasks on Ray actors instead (``collect.backend=ray``).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

import numpy as np

from world_models.data.episodes import save_episode
from world_models.data.play import play_episode, summarize
from world_models.data.policies import PolicyFactory
from world_models.envs import make_env


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


def play_task(task: Task, cache: dict[Any, Any]) -> dict[str, Any]:
    """Play ``task``'s episode with the env and policy kept in ``cache`` (made on first
    use); frames are recorded only for a task that saves its episode."""
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
    return episode


def _run_task(task: Task, cache: dict[Any, Any]) -> dict[str, Any]:
    episode = play_task(task, cache)
    if task.path is not None:
        save_episode(task.path, episode)
    return summarize(episode)


def _exit_with_parent() -> None:
    """End this worker as soon as the parent process is gone (killed, even by SIGKILL,
    it cannot stop its workers), instead of finishing the episode it was playing."""
    wait([mp.parent_process().sentinel])
    os._exit(1)


def _worker_main(connection: Connection) -> None:
    # Ctrl-C is handled by the parent, which terminates the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import jax  # after spawn, before any computation picks a backend

    jax.config.update("jax_platforms", "cpu")
    threading.Thread(target=_exit_with_parent, daemon=True).start()
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


class TaskLedger:
    """What a pool has left to play, has played and has given up on: a task is tried
    at most ``retries + 1`` times; each result reaches ``on_result`` as it comes."""

    def __init__(
        self,
        count: int,
        retries: int,
        on_result: Callable[[int, dict[str, Any]], None] | None,
    ):
        self.pending = list(range(count))[::-1]
        self.attempts = dict.fromkeys(self.pending, 0)
        self.results: dict[int, dict[str, Any]] = {}
        self.failures: dict[int, str] = {}
        self.retries, self.on_result = retries, on_result

    def next(self) -> int:
        return self.pending.pop()

    def succeed(self, index: int, result: dict[str, Any]) -> None:
        self.results[index] = result
        if self.on_result is not None:
            self.on_result(index, result)

    def fail(self, index: int, message: str) -> None:
        self.attempts[index] += 1
        if self.attempts[index] > self.retries:
            self.failures[index] = message
        else:
            self.pending.append(index)


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
    ledger = TaskLedger(len(tasks), retries, on_result)
    pool = [_Worker(context) for _ in range(max(1, min(workers, len(tasks))))]
    try:
        while ledger.pending or any(w.task_index is not None for w in pool):
            for worker in pool:
                if worker.task_index is None and ledger.pending:
                    worker.task_index = ledger.next()
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
                    ledger.succeed(index, payload)
                    continue
                if status == "died" or not worker.process.is_alive():
                    code = worker.process.exitcode
                    ledger.fail(index, f"{payload} (exit code {code})")
                    worker.stop()
                    pool[position] = _Worker(context)
                else:
                    ledger.fail(index, payload)
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
    return ledger.results, ledger.failures
