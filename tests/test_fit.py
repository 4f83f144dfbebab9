"""The shared training loop: what it logs, validates and saves, and when."""

import math

import pytest

from world_models.logs import MetricsLogger, read_metrics
from world_models.training.fit import Schedule, TrainingDivergedError, fit


def _run(tmp_path, schedule, start=0, log_every_step=False, loss=None):
    saved, validated = [], []
    logger = MetricsLogger(tmp_path)

    def train_step(state, step):
        value = float(step) if loss is None else loss(step)
        return state + 1, {"loss": value}

    def validate(state):
        validated.append(state)
        return {"val_state": float(state)}

    try:
        state, last = fit(
            start, start, schedule, train_step=train_step, validate=validate,
            save=lambda step, state: saved.append((step, state)), logger=logger,
            finite=("loss",), log_every_step=log_every_step, name="toy",
            progress=False,
        )
    finally:
        logger.close()
    return state, last, saved, validated, read_metrics(tmp_path / "metrics.jsonl")


def test_averages_between_validations_and_saves_on_schedule(tmp_path):
    state, last, saved, validated, rows = _run(tmp_path, Schedule(7, 3, 2))
    assert state == 7 and last == {"val_state": 7.0}
    assert saved == [(2, 2), (4, 4), (6, 6), (7, 7)]  # every 2 steps and the target
    assert validated == [3, 6, 7]
    assert [row["step"] for row in rows] == [3, 6, 7]
    assert [row["train_loss"] for row in rows] == [2.0, 5.0, 7.0]  # (1+2+3)/3, ...


def test_logs_every_step_and_resumes_where_it_stopped(tmp_path):
    _, _, saved, _, rows = _run(tmp_path / "a", Schedule(6, 4, 3, stop_after=4),
                                log_every_step=True)
    assert saved == [(3, 3)]  # killed after step 4: no checkpoint at 4
    assert [row["step"] for row in rows] == [1, 2, 3, 4]
    assert "val_state" in rows[3] and "val_state" not in rows[2]
    state, _, saved, _, rows = _run(tmp_path / "b", Schedule(6, 4, 3), start=3,
                                    log_every_step=True)
    assert state == 6 and saved == [(6, 6)]
    assert [row["step"] for row in rows] == [4, 5, 6]


def test_a_non_finite_metric_stops_with_its_step_and_last_checkpoint(tmp_path):
    with pytest.raises(TrainingDivergedError, match="step 5.*checkpoint: step 4"):
        _run(tmp_path, Schedule(9, 10, 2),
             loss=lambda step: math.nan if step == 5 else 1.0)
