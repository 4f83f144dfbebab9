"""The one training loop V and M share: resumable, validated, checkpointed, logged.

Step n's batch and key are the caller's functions of n alone, so a run killed after any
step and resumed from its last checkpoint repeats the uninterrupted run exactly. Steps
are numbered from 1; step n is logged, validated and checkpointed as "n".
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from world_models.logs import MetricsLogger


class TrainingDivergedError(FloatingPointError):
    """A training metric (the loss, the gradient norm) became NaN or infinite."""


@dataclass(frozen=True)
class Schedule:
    """Train to ``target``; validate every ``eval_every`` steps, checkpoint every
    ``checkpoint_every`` (both at ``target`` too); ``stop_after`` returns after that
    step as a kill would (tests, benchmarks)."""

    target: int
    eval_every: int
    checkpoint_every: int
    stop_after: int | None = None


def fit(
    state: Any,
    start: int,
    schedule: Schedule,
    *,
    train_step: Callable[[Any, int], tuple[Any, dict[str, float]]],
    validate: Callable[[Any], dict[str, float]] | None,
    save: Callable[[int, Any], None],
    logger: MetricsLogger,
    finite: tuple[str, ...],
    log_every_step: bool,
    name: str,
    progress: bool = True,
    after_validation: Callable[[Any, dict[str, float]], None] | None = None,
) -> tuple[Any, dict[str, float]]:
    """Run steps ``start + 1 .. target`` (or ``stop_after``); returns the state and the
    last validation figures ({} if none ran).

    ``train_step(state, n)`` returns the new state and step n's training metrics;
    ``finite`` names those that must stay finite. With ``log_every_step`` every step is
    logged as ``train_*``; otherwise the training metrics are averaged between
    validations and logged with them. ``validate(state)`` returns figures that are
    logged as they are named.
    """
    end = schedule.target
    if schedule.stop_after is not None:
        end = min(schedule.stop_after, end)
    last_checkpoint = start or None
    sums: dict[str, float] = {}
    count, last_val = 0, {}
    bar = tqdm(
        range(start + 1, end + 1),
        initial=start,
        total=schedule.target,
        desc=name,
        disable=not progress,
    )
    try:
        for step in bar:
            state, metrics = train_step(state, step)
            bad = [key for key in finite if not math.isfinite(metrics[key])]
            if bad:
                raise TrainingDivergedError(
                    f"{name} training diverged at step {step}: {', '.join(bad)} is not "
                    f"finite ({ {key: metrics[key] for key in bad} }); last good "
                    f"checkpoint: step {last_checkpoint}. Lower the learning rate or "
                    "check the data."
                )
            row = {}
            if log_every_step:
                row = {f"train_{key}": value for key, value in metrics.items()}
            else:
                for key, value in metrics.items():
                    sums[key] = sums.get(key, 0.0) + value
                count += 1
            if validate is not None and (
                step % schedule.eval_every == 0 or step == schedule.target
            ):
                last_val = validate(state)
                if not log_every_step:
                    row = {f"train_{key}": total / count for key, total in sums.items()}
                    sums, count = {}, 0
                row.update(last_val)
                if after_validation is not None:
                    after_validation(state, last_val)
            if row:
                logger.log(step, **row)
            if step % schedule.checkpoint_every == 0 or step == schedule.target:
                save(step, state)
                last_checkpoint = step
    finally:
        bar.close()
    return state, last_val


def as_floats(metrics: dict[str, Any]) -> dict[str, float]:
    """Device scalars -> Python floats (one transfer per metric)."""
    return {key: float(np.asarray(value)) for key, value in metrics.items()}
