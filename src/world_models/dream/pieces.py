"""A dream learner run in pieces: checkpointed after each, resumed where it stopped.

A learner in the dream is ``start(key) -> runner`` and ``advance(runner, n) -> (runner,
metrics per step)`` (``dream.ppo.make_stages``). One jitted call of all its updates
loses everything to a kill; here ``advance`` runs ``piece`` updates at a time, the
runner is saved after each piece, and a second call with the same checkpointer goes
on from the last one. Advancing by pieces computes what advancing at once does.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
from jaxtyping import PRNGKeyArray
from tqdm import tqdm

from world_models.checkpoint import Checkpointer


def run_in_pieces(
    start: Callable[[PRNGKeyArray], Any],
    advance: Callable[[Any, int], tuple[Any, dict[str, Any]]],
    key: PRNGKeyArray,
    total: int,
    piece: int,
    checkpointer: Checkpointer,
    on_piece: Callable[[int, dict[str, Any]], None] = lambda done, metrics: None,
    progress: bool = True,
) -> tuple[Any, dict[str, float]]:
    """Advance from the latest checkpoint (or ``start(key)``) to ``total`` steps.

    ``on_piece(done, metrics)`` receives each piece's metrics and the steps done
    before it. Returns the runner and timings: the seconds of the pieces that compiled
    (each new piece size compiles once) and the steady seconds per step of the others
    (NaN if none).
    """
    if total <= 0 or piece <= 0:
        raise ValueError(f"total and piece must be > 0, got {total} and {piece}")
    done = checkpointer.latest_step() or 0
    if done:
        runner = checkpointer.restore(eqx.filter_eval_shape(start, key))
    else:
        runner = start(key)
    advance = eqx.filter_jit(advance)
    compiled, compiling_seconds = set(), 0.0
    steady_seconds, steady_steps = 0.0, 0
    with tqdm(total=total, initial=done, unit="update", disable=not progress) as bar:
        while done < total:
            steps = min(piece, total - done)
            began = time.perf_counter()
            runner, metrics = jax.block_until_ready(advance(runner, steps))
            seconds = time.perf_counter() - began
            if steps in compiled:
                steady_seconds, steady_steps = (steady_seconds + seconds,
                                                steady_steps + steps)
            else:
                compiled.add(steps)
                compiling_seconds += seconds
            on_piece(done, metrics)
            done += steps
            checkpointer.save(done, runner)
            bar.update(steps)
    per_step = steady_seconds / steady_steps if steady_steps else float("nan")
    return runner, dict(compiling_seconds=compiling_seconds,
                        steady_seconds_per_step=per_step)
