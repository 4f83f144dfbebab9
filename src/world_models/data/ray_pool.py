"""The worker pool on Ray (``collect.backend=ray``): ``worker_pool.run_tasks``'s tasks
and contract, played by Ray actors on this machine or on a cluster.

Each actor plays one task at a time, keeps its env and policies between tasks and keeps
JAX on the CPU, as a local worker does. It sends the episode's arrays back (only the
summary for a task without a path), and the driver writes the file with
``save_episode`` (temp file, rename): workers never write files, so a cluster needs no
shared filesystem. A task whose actor dies (its process killed, its node lost) is
retried on a fresh actor, and reported after ``retries + 1`` attempts.

Ray is an optional extra (``uv sync --extra ray``): only this module imports it.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from world_models.config_sections import ConfigError
from world_models.data.episodes import save_episode
from world_models.data.play import summarize
from world_models.data.worker_pool import Task, TaskLedger, play_task


def import_ray() -> Any:
    """The ``ray`` module, or a ConfigError that says how to install it."""
    # Under `uv run`, Ray would copy the working directory to every worker and build
    # a new environment there from the lock file, without this extra. Workers use the
    # driver's environment instead (on a cluster: `ray start` from the same install).
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "collect.backend=ray needs Ray, which is not installed: "
            "uv sync --extra ray"
        ) from None
    return ray


def connect(address: str = "") -> Any:
    """Ray, initialised: kept as it is if this process already joined a cluster,
    else ``ray.init(address)`` ("": RAY_ADDRESS, else a new local instance)."""
    ray = import_ray()
    if not ray.is_initialized():
        ray.init(address=address or None)
    return ray


class _Player:
    """One actor: plays tasks with the env and policies it keeps between them."""

    def __init__(self) -> None:
        import jax  # before any computation picks a backend

        jax.config.update("jax_platforms", "cpu")
        self.cache: dict[Any, Any] = {}

    def play(self, task: Task) -> tuple[str, Any]:
        try:
            episode = play_task(task, self.cache)
        except Exception:  # the driver decides whether to retry
            self.cache.clear()  # an env that raised may be in a broken state
            return "error", traceback.format_exc(limit=4)
        return "ok", episode if task.path is not None else summarize(episode)


def run_tasks(
    tasks: Sequence[Task],
    workers: int,
    on_result: Callable[[int, dict[str, Any]], None] | None = None,
    retries: int = 1,
    address: str = "",
) -> tuple[dict[int, dict[str, Any]], dict[int, str]]:
    """Play ``tasks`` on ``workers`` Ray actors (at most one per CPU of the cluster).

    Returns (results by task index, last error by task index for tasks that failed
    ``retries + 1`` times), as ``worker_pool.run_tasks`` does.
    """
    ray = connect(address)
    player = ray.remote(num_cpus=1, max_restarts=0)(_Player)
    cpus = int(ray.cluster_resources().get("CPU", 1))
    size = max(1, min(workers, len(tasks), cpus))
    actors: list[Any] = [None] * size  # started when first given a task
    ledger = TaskLedger(len(tasks), retries, on_result)
    running: dict[Any, tuple[int, int]] = {}  # reference -> (task index, actor slot)
    try:
        while ledger.pending or running:
            busy = {slot for _, slot in running.values()}
            for slot in range(size):
                if slot not in busy and ledger.pending:
                    index = ledger.next()
                    if actors[slot] is None:
                        actors[slot] = player.remote()
                    running[actors[slot].play.remote(tasks[index])] = (index, slot)
            (done,), _ = ray.wait(list(running), num_returns=1)
            index, slot = running.pop(done)
            try:
                status, payload = ray.get(done)
            except ray.exceptions.RayError as error:  # the actor's process died
                ray.kill(actors[slot], no_restart=True)
                actors[slot] = None  # a fresh one for the next task
                ledger.fail(index, f"worker process died ({type(error).__name__})")
                continue
            if status == "ok" and tasks[index].path is not None:
                try:
                    save_episode(tasks[index].path, payload)
                    payload = summarize(payload)
                except Exception:
                    status, payload = "error", traceback.format_exc(limit=4)
            if status != "ok":
                ledger.fail(index, payload)
                continue
            ledger.succeed(index, payload)
    finally:
        for actor in actors:
            if actor is not None:
                ray.kill(actor, no_restart=True)
    return ledger.results, ledger.failures
