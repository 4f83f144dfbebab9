"""The seed plan: which real-env seeds (hence which tracks) each purpose plays.

Five bands of ``BAND`` seeds, disjoint by construction:

    test        eval.seed + i                                      band 0
    selection   BAND + round·ROUND + check·CHECK + i               band 1
    collection  2·BAND + collect.seed + round·ROUND + slot·POLICY + i   band 2
    model-free  3·BAND + seed·RUN + episode                        band 3
    real DQN    4·BAND + seed·RUN + episode                        band 4

A policy's collection slot comes from its name (``COLLECTION_SLOTS``), not from its
position in a list, so collecting one policy alone plays the same tracks as collecting
it among others. Each real check of the dream search plays a fresh block of selection
seeds; a round's last two blocks are reserved for the finalists' re-check at the end
of the search and (the last) for ``scripts/fit_controller.py``'s check, and the block
before them for the choice between a later round's agent and the previous round's
(``pipeline/round_choice.py``).
The model-free band is the training episodes of the baseline that learns from real
frames without a world model (``rl/ppo_frames``): a run of training seed ``seed``
starts its episodes on consecutive seeds of its own block. The real-DQN band is the
same for DQN trained in the real env on V's and M's features (``rl/dqn_features``).
Policies in ``UNCOLLECTED_POLICIES`` only play evaluations, checks and their own
training (their seeds are those purposes'): they take no collection slot.
``check_seed_plan`` refuses a config whose blocks would spill out of their band or into
each other; ``seed_plan`` lists every range and is saved as ``RUN/seeds.json``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

BAND = 100_000_000
ROUND_STRIDE = 1_000_000
POLICY_STRIDE = 100_000
CHECK_STRIDE = 1_000
SELECTION_BASE = BAND
COLLECTION_BASE = 2 * BAND
# learners that train in the real env, each in a band of its own
REAL_LEARNER_BASES = {"ppo_frames": 3 * BAND, "dqn_real": 4 * BAND}
LEARNER_RUN_STRIDE = 1_000_000  # episodes one training run may start
LEARNER_RUNS = BAND // LEARNER_RUN_STRIDE  # training seeds 0 .. LEARNER_RUNS - 1
SHARED_POLICIES = (  # policies that may play in any env: a slot each
    "brownian",
    "recovery",
    "aggressive",
    "on_policy",
    "agent",
    "reckless",
    "understeer",
    "overspeed",
)
# Drivers written for one env each never play in the same run, so they share the
# next slot (the one LunarLander's lander had before the Atari drivers came)
ONE_ENV_DRIVERS = ("lander", "pong_tracker", "breakout_tracker")
COLLECTION_SLOTS: dict[str, int] = {
    name: slot for slot, name in enumerate(SHARED_POLICIES)
} | dict.fromkeys(ONE_ENV_DRIVERS, len(SHARED_POLICIES))
UNCOLLECTED_POLICIES = ("q_agent", "ppo_frames")
MAX_ROUNDS = BAND // ROUND_STRIDE
BLOCKS_PER_ROUND = ROUND_STRIDE // CHECK_STRIDE
FIT_CHECK_BLOCK = BLOCKS_PER_ROUND - 1
FINAL_CHECK_BLOCK = BLOCKS_PER_ROUND - 2
ROUND_CHOICE_BLOCK = BLOCKS_PER_ROUND - 3
MAX_CHECKS_PER_ROUND = ROUND_CHOICE_BLOCK  # the search's own checks: blocks below it
SEED_PLAN_FILENAME = "seeds.json"


def test_seeds(config: Any, episodes: int | None = None) -> range:
    """The published score's seeds: eval.seed, eval.seed + 1, ..."""
    count = config.eval.episodes if episodes is None else episodes
    return range(config.eval.seed, config.eval.seed + count)


test_seeds.__test__ = False  # not a pytest test despite its name


def collection_slot(policy_name: str) -> int:
    if policy_name in UNCOLLECTED_POLICIES:
        raise ValueError(
            f"policy {policy_name!r} only plays evaluations and checks: it has no "
            "collection seed slot"
        )
    if policy_name not in COLLECTION_SLOTS:
        raise ValueError(
            f"policy {policy_name!r} has no collection seed slot; known: "
            f"{', '.join(COLLECTION_SLOTS)} (add it to seeds.COLLECTION_SLOTS)"
        )
    return COLLECTION_SLOTS[policy_name]


def collection_policies(config: Any) -> tuple[str, ...]:
    """Every policy with a collection slot that can play in the run's env."""
    from world_models.envs import get_spec

    own = get_spec(config.env_id).heuristic_policies
    return SHARED_POLICIES + tuple(name for name in ONE_ENV_DRIVERS if name in own)


def collection_episodes(config: Any, policy_name: str) -> int:
    """Episodes a round collects of ``policy_name``: on-policy ones are counted
    apart."""
    if policy_name == "on_policy":
        return config.pipeline.on_policy_episodes
    return config.collect.episodes_per_policy


def collection_seeds(config: Any, round_index: int, policy_name: str) -> range:
    """Seeds of the collection episodes of ``policy_name`` in a round."""
    first = (
        COLLECTION_BASE
        + config.collect.seed
        + round_index * ROUND_STRIDE
        + collection_slot(policy_name) * POLICY_STRIDE
    )
    return range(first, first + collection_episodes(config, policy_name))


def selection_seeds(config: Any, round_index: int, check_index: int) -> range:
    """A fresh block of seeds for real check ``check_index`` of a round's search."""
    if not 0 <= check_index < MAX_CHECKS_PER_ROUND:
        raise ValueError(
            f"real check {check_index} of a round is past the seed plan's "
            f"{MAX_CHECKS_PER_ROUND} blocks: raise dream.real_eval_every"
        )
    return _selection_block(round_index, check_index, config.dream.real_eval_episodes)


def final_check_seeds(config: Any, round_index: int) -> range:
    """The block on which every finalist of a round's search is re-checked."""
    return _selection_block(
        round_index, FINAL_CHECK_BLOCK, config.dream.final_check_episodes
    )


def round_choice_seeds(config: Any, round_index: int) -> range:
    """The block on which a later round's agent and the previous round's both play."""
    return _selection_block(
        round_index, ROUND_CHOICE_BLOCK, config.pipeline.round_choice_episodes
    )


def fit_check_seeds(episodes: int) -> range:
    """Round 0's block for checking a controller fitted outside the search."""
    return _selection_block(0, FIT_CHECK_BLOCK, episodes)


def _selection_block(round_index: int, block: int, episodes: int) -> range:
    first = SELECTION_BASE + round_index * ROUND_STRIDE + block * CHECK_STRIDE
    return range(first, first + episodes)


def real_learner_seeds(learner: str, training_seed: int) -> range:
    """The episode seeds of ``learner``'s real-env training run seeded
    ``training_seed`` (``REAL_LEARNER_BASES``: ppo_frames, dqn_real)."""
    if learner not in REAL_LEARNER_BASES:
        raise ValueError(
            f"unknown real-env learner {learner!r}; known: {list(REAL_LEARNER_BASES)}"
        )
    if not 0 <= training_seed < LEARNER_RUNS:
        raise ValueError(
            f"{learner} training seed {training_seed} is outside the seed plan's "
            f"[0, {LEARNER_RUNS})"
        )
    first = REAL_LEARNER_BASES[learner] + training_seed * LEARNER_RUN_STRIDE
    return range(first, first + LEARNER_RUN_STRIDE)


def checks_per_round(config: Any) -> int:
    """A round's real checks: one per block of its dream.generations, plus the
    re-score of the kept controller under the round's new M."""
    return math.ceil(config.dream.generations / config.dream.real_eval_every) + 1


def check_seed_plan(config: Any) -> None:
    """Raise ValueError if some purpose's seeds could leave their block or band."""
    problems = []
    if not 0 <= config.eval.seed <= BAND - config.eval.episodes:
        problems.append(f"eval.seed must be in [0, {BAND - config.eval.episodes}]")
    per_policy = max(
        config.collect.episodes_per_policy, config.pipeline.on_policy_episodes
    )
    if not 0 <= config.collect.seed <= POLICY_STRIDE - per_policy:
        problems.append(
            f"collect.seed + episodes per policy ({per_policy}) must fit in "
            f"[0, {POLICY_STRIDE}]"
        )
    if config.pipeline.rounds > MAX_ROUNDS:
        problems.append(f"pipeline.rounds must be <= {MAX_ROUNDS}")
    if config.dream.real_eval_episodes > CHECK_STRIDE:
        problems.append(f"dream.real_eval_episodes must be <= {CHECK_STRIDE}")
    if config.dream.final_check_episodes > CHECK_STRIDE:
        problems.append(f"dream.final_check_episodes must be <= {CHECK_STRIDE}")
    if config.pipeline.round_choice_episodes > CHECK_STRIDE:
        problems.append(f"pipeline.round_choice_episodes must be <= {CHECK_STRIDE}")
    if checks_per_round(config) > MAX_CHECKS_PER_ROUND:
        problems.append(
            f"too many real checks per round ({checks_per_round(config)} > "
            f"{MAX_CHECKS_PER_ROUND}): raise dream.real_eval_every"
        )
    if problems:
        raise ValueError("seed plan: " + "; ".join(problems))


def seed_plan(config: Any) -> dict[str, Any]:
    """Every seed range of the run, per purpose, as [first, last] pairs."""
    check_seed_plan(config)

    def span(seeds: range) -> list[int]:
        return [seeds.start, seeds.stop - 1]

    collection = {}
    for round_index in range(config.pipeline.rounds):
        for policy in collection_policies(config):
            collection[f"round{round_index}/{policy}"] = span(
                collection_seeds(config, round_index, policy)
            )
    selection = {
        f"round{k}": [
            selection_seeds(config, k, 0).start,
            selection_seeds(config, k, checks_per_round(config) - 1).stop - 1,
        ]
        for k in range(config.pipeline.rounds)
    }
    plan = dict(
        test=span(test_seeds(config)), selection=selection, collection=collection
    )
    if config.dream.finalists:
        plan["final_check"] = {
            f"round{k}": span(final_check_seeds(config, k))
            for k in range(config.pipeline.rounds)
        }
    if config.pipeline.round_choice_episodes:
        plan["round_choice"] = {
            f"round{k}": span(round_choice_seeds(config, k))
            for k in range(1, config.pipeline.rounds)
        }
    return plan


def write_seed_plan(run_dir: str | os.PathLike, config: Any) -> Path:
    from world_models.files import write_atomic_text

    path = Path(run_dir) / SEED_PLAN_FILENAME
    write_atomic_text(path, json.dumps(seed_plan(config), indent=2))
    return path
