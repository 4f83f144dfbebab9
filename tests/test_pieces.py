"""PPO in the dream run in checkpointed pieces, stopped and resumed, computes what one
call of all its updates computes."""

from dataclasses import replace

import equinox as eqx
import jax
import numpy as np
import pytest
from test_ppo import SETTINGS, _dream

from world_models.checkpoint import Checkpointer
from world_models.dream.pieces import run_in_pieces
from world_models.dream.ppo import make_stages, make_train, policy_params

UPDATES = 5


def test_ppo_in_pieces_stopped_and_resumed_is_ppo_at_once(tmp_path):
    dream = _dream("CarRacing-v3")
    settings = replace(SETTINGS, updates=UPDATES)
    key = jax.random.key(4)
    whole, whole_metrics = eqx.filter_jit(make_train(dream, settings))(key)

    stages = make_stages(dream, settings)
    logged, pieces = {}, []

    def log(done, metrics):
        pieces.append(done)
        for i, value in enumerate(np.asarray(metrics["episode_return"])):
            logged[done + i + 1] = value

    def run(total):  # a fresh process's view: only the folder carries over
        checkpointer = Checkpointer(tmp_path / "ckpt", config=dict(seed=4))
        try:
            return run_in_pieces(stages.start, stages.advance, key, total, 2,
                                 checkpointer, log, progress=False)
        finally:
            checkpointer.close()

    run(3)  # "killed" after 3 updates (pieces of 2 and 1)
    assert sorted(logged) == [1, 2, 3] and pieces == [0, 2]
    runner, timing = run(UPDATES)  # resumes at 3: one piece of 2
    assert pieces == [0, 2, 3]
    assert sorted(logged) == list(range(1, UPDATES + 1))
    assert timing["compiling_seconds"] > 0
    np.testing.assert_array_equal(policy_params(stages.policy(runner)),
                                  policy_params(whole))
    np.testing.assert_array_equal([logged[i] for i in range(1, UPDATES + 1)],
                                  np.asarray(whole_metrics["episode_return"]))


def test_pieces_refuse_empty_runs(tmp_path):
    stages = make_stages(_dream("CarRacing-v3"), SETTINGS)
    checkpointer = Checkpointer(tmp_path, config={})
    with pytest.raises(ValueError, match="must be > 0"):
        run_in_pieces(stages.start, stages.advance, jax.random.key(0), 4, 0,
                      checkpointer)
