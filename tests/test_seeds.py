import json

import pytest

from world_models import seeds
from world_models.config import PRESETS, ConfigError, make_config
from world_models.data.collection import collect_round
from world_models.envs import ENVS
from world_models.run_directory import init_run


def _every_seed_by_purpose(config) -> dict[str, list[range]]:
    collection = [
        seeds.collection_seeds(config, k, policy)
        for k in range(config.pipeline.rounds)
        for policy in seeds.collection_policies(config)
    ]
    selection = [
        seeds.selection_seeds(config, k, check)
        for k in range(config.pipeline.rounds)
        for check in range(seeds.checks_per_round(config))
    ]
    final = [seeds.final_check_seeds(config, k) for k in range(config.pipeline.rounds)
             if config.dream.finalists]
    choice = [seeds.round_choice_seeds(config, k)
              for k in range(1, config.pipeline.rounds)]
    return dict(test=[seeds.test_seeds(config)], collection=collection,
                selection=selection + final + choice + [seeds.fit_check_seeds(1000)])


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("rounds", [1, 2, 5, 17, 100])
def test_every_seed_of_every_purpose_is_used_once(preset, rounds):
    config = make_config(preset, overrides=[f"pipeline.rounds={rounds}"])
    every = [s for blocks in _every_seed_by_purpose(config).values()
             for block in blocks for s in block]
    assert len(every) == len(set(every))  # no seed plays two roles or two blocks


@pytest.mark.parametrize("env_id", sorted(ENVS))
def test_default_plans_of_every_env_are_valid(env_id):
    for preset in PRESETS:
        config = make_config(preset, env_id)
        plan = seeds.seed_plan(config)
        assert plan["test"] == [config.eval.seed,
                                config.eval.seed + config.eval.episodes - 1]


@pytest.mark.parametrize("bad", [
    "eval.seed=200000000",                       # test seeds inside the collection band
    "collect.seed=99999",                        # would spill into the next policy slot
    "pipeline.rounds=101",
    "dream.real_eval_episodes=1001",
    "dream.real_eval_every=1",                   # more checks than a round holds
    "dream.final_check_episodes=1001",
    "pipeline.round_choice_episodes=1001",
])
def test_plans_that_could_overlap_are_refused(bad):
    overrides = [bad] + (["dream.generations=2000"] if "every" in bad else [])
    with pytest.raises(ConfigError, match="seed plan"):
        make_config("quick", overrides=overrides)


@pytest.mark.parametrize("preset", PRESETS)
def test_real_env_learners_train_on_bands_of_their_own(preset):
    config = make_config(preset, overrides=["pipeline.rounds=100"])
    others = [block for blocks in _every_seed_by_purpose(config).values()
              for block in blocks]
    bands = []
    for learner, base in seeds.REAL_LEARNER_BASES.items():
        runs = [seeds.real_learner_seeds(learner, k) for k in range(seeds.LEARNER_RUNS)]
        assert runs[0].start == base and runs[-1].stop == base + seeds.BAND
        assert all(a.stop == b.start for a, b in zip(runs, runs[1:]))
        bands.append(range(base, base + seeds.BAND))
        for outside in (-1, seeds.LEARNER_RUNS):
            with pytest.raises(ValueError, match=f"{learner} training seed"):
                seeds.real_learner_seeds(learner, outside)
    assert len({band.start for band in bands}) == len(bands)  # one band a learner
    for band in bands:
        assert all(b.stop <= band.start or b.start >= band.stop for b in others)
    with pytest.raises(ValueError, match="unknown real-env learner"):
        seeds.real_learner_seeds("cma", 0)


def test_every_collection_slot_fits_in_a_round():
    slots = max(seeds.COLLECTION_SLOTS.values()) + 1
    assert slots * seeds.POLICY_STRIDE <= seeds.ROUND_STRIDE


@pytest.mark.parametrize("env_id", sorted(ENVS))
def test_drivers_that_share_a_slot_never_meet_in_one_env(env_id):
    policies = seeds.collection_policies(make_config("quick", env_id))
    slots = [seeds.collection_slot(name) for name in policies]
    assert len(slots) == len(set(slots))
    assert set(ENVS[env_id].heuristic_policies) <= set(policies)


def test_a_policy_plays_its_own_tracks_alone_or_in_a_round(tmp_path):
    config = init_run(tmp_path / "run", make_config("smoke", overrides=[
        "collect.policies=brownian,recovery", "collect.max_steps=5"]))
    together = collect_round(tmp_path / "run", config, 0, progress=False)
    alone = init_run(tmp_path / "alone", config)
    recovery_alone = collect_round(tmp_path / "alone", alone, 0, ["recovery"],
                                   progress=False)
    assert recovery_alone["recovery"]["seeds"] == together["recovery"]["seeds"]
    assert set(together["recovery"]["seeds"]).isdisjoint(together["brownian"]["seeds"])


def test_run_directory_records_its_seed_plan(tmp_path):
    config = init_run(tmp_path, make_config("quick", overrides=["pipeline.rounds=3"]))
    recorded = json.loads((tmp_path / seeds.SEED_PLAN_FILENAME).read_text())
    assert recorded == seeds.seed_plan(config)
    assert set(recorded["selection"]) == {"round0", "round1", "round2"}


def test_every_library_policy_has_a_collection_slot():
    from world_models.data.policies import get_factory, policy_names

    library = {
        name
        for name in policy_names()
        if get_factory(name).__module__.startswith("world_models.")
    }  # other tests register policies of their own
    assert {"brownian", "recovery", "lander", "agent"} <= library
    assert library <= set(seeds.COLLECTION_SLOTS) | set(seeds.UNCOLLECTED_POLICIES)
    for name in seeds.UNCOLLECTED_POLICIES:
        with pytest.raises(ValueError, match="only plays evaluations"):
            seeds.collection_slot(name)
