import jax.numpy as jnp
import numpy as np
import pytest
from tiny_run import TINY_OVERRIDES, make_tiny_run

from world_models.config import make_config
from world_models.dream.evolve import evolve
from world_models.dream.search import load_search
from world_models.dream.selection import (
    admit_finalist,
    empty_finalists,
    load_finalists,
    real_check,
)
from world_models.logs import read_metrics
from world_models.run_directory import init_run
from world_models.seeds import final_check_seeds, selection_seeds


def test_finalists_are_the_best_checks_and_the_earlier_of_equals():
    search = empty_finalists(2, 3)
    for generation, score in [(5, 1.0), (10, 1.0), (15, 2.0), (20, 2.0), (25, 1.5)]:
        search = admit_finalist(search, jnp.full(3, generation), score, generation)
    assert sorted(np.asarray(search["finalist_generations"]).tolist()) == [15, 20]
    search = admit_finalist(search, jnp.full(3, 30.0), 3.0, 30)
    kept = dict(zip(np.asarray(search["finalist_generations"]).tolist(),
                    np.asarray(search["finalist_params"])[:, 0].tolist()))
    assert kept == {15: 15.0, 30: 30.0}  # 20 went: the later of the two at 2.0
    assert admit_finalist({}, jnp.zeros(3), 9.0, 35) == {}  # no finalists: unchanged


def test_the_final_check_keeps_the_best_finalist_on_one_shared_block(tmp_path):
    run = make_tiny_run(tmp_path / "run")
    config = init_run(run, make_config("smoke", overrides=TINY_OVERRIDES + (
        "dream.generations=4", "dream.real_eval_every=1", "dream.finalists=2",
        "dream.final_check_episodes=2", "eval.max_steps=60")), fresh=True)
    summary = evolve(run, progress=False)

    checks = {r["step"]: r["real_score"]
              for r in read_metrics(run / "dream" / "metrics.jsonl")
              if "real_score" in r}
    assert sorted(checks) == [1, 2, 3, 4]
    record = load_finalists(run)["4"]
    best_two = sorted(checks, key=lambda g: (-checks[g], g))[:2]
    assert sorted(f["generation"] for f in record["finalists"]) == sorted(best_two)
    for finalist in record["finalists"]:
        assert finalist["check_score"] == pytest.approx(checks[finalist["generation"]])
    winner = max(record["finalists"], key=lambda f: f["final_score"])
    assert (summary["best_generation"] == record["kept_generation"]
            == winner["generation"])

    # the kept controller replays its final score on the final block, which no check
    # plays
    seeds = final_check_seeds(config, 0)
    assert record["seeds"] == [seeds.start, seeds.stop - 1]
    for check in range(5):
        assert set(seeds).isdisjoint(selection_seeds(config, 0, check))
    kept = load_search(run)["best_params"]
    replay = real_check(run, config, kept, 1, seeds)
    assert np.mean([r["return"] for r in replay]) == pytest.approx(
        winner["final_score"], abs=1e-4)
    assert winner["real_steps"] == sum(r["length"] for r in replay)


def test_a_search_out_of_patience_ends_with_its_final_check(tmp_path):
    run = make_tiny_run(tmp_path / "run")
    init_run(run, make_config("smoke", overrides=TINY_OVERRIDES + (
        "dream.generations=12", "dream.real_eval_every=1", "dream.finalists=2",
        "dream.final_check_episodes=2", "dream.patience=2", "eval.max_steps=60")),
        fresh=True)
    summary = evolve(run, progress=False)

    checks = [(r["step"], r["real_score"])
              for r in read_metrics(run / "dream" / "metrics.jsonl")
              if "real_score" in r]
    best, since_best, expected_end = -np.inf, 0, None
    for generation, score in checks:  # the rule, from the logged checks
        best, since_best = (score, 0) if score > best else (best, since_best + 1)
        if since_best == 2:
            expected_end = generation
            break
    assert expected_end is not None and expected_end < 12  # the seeds stall it early
    assert summary["generation"] == checks[-1][0] == expected_end
    assert list(load_finalists(run)) == [str(expected_end)]
    assert load_finalists(run)[str(expected_end)]["stalled"]
    assert int(load_search(run)["stalled"]) == 1
    # a resumed run (the same total) has nothing left to do
    assert evolve(run, progress=False)["generation"] == expected_end
    assert len(read_metrics(run / "dream" / "metrics.jsonl")) == expected_end + len(
        checks)


def test_the_final_check_chooses_the_noise_the_kept_controller_acts_at(tmp_path):
    from world_models.agent import export_agent, kept_action_noise, make_agent
    from world_models.evaluation.real import evaluate_run
    from world_models.export import exported_action_noise

    run = make_tiny_run(tmp_path / "run")
    config = init_run(run, make_config("smoke", overrides=TINY_OVERRIDES + (
        "dream.generations=2", "dream.real_eval_every=1", "dream.finalists=2",
        "dream.final_check_episodes=2", "eval.max_steps=60", "dream.action_noise=0.1",
        "dream.final_check_noise=0.1,0.3,0.6")), fresh=True)
    summary = evolve(run, progress=False)

    record = load_finalists(run)["2"]
    levels = record["noise_levels"]
    assert [row["noise"] for row in levels] == [0.1, 0.3, 0.6]  # the run's, once
    winner = max(record["finalists"], key=lambda f: f["final_score"])
    assert levels[0]["final_score"] == winner["final_score"]
    assert len({row["final_score"] for row in levels}) == 3  # the noise plays a part
    kept = max(levels, key=lambda row: row["final_score"])
    assert record["kept_noise"] == kept["noise"]
    search = load_search(run)
    assert float(search["best_action_noise"]) == pytest.approx(kept["noise"])
    assert summary["best_real_score"] == pytest.approx(kept["final_score"])
    assert summary["best_generation"] == winner["generation"]

    # every level replays its score on the final block, and the agent plays the kept
    seeds = final_check_seeds(config, 0)
    for row in levels:
        replay = real_check(run, config, search["best_params"], 1, seeds, row["noise"])
        assert np.mean([r["return"] for r in replay]) == pytest.approx(
            row["final_score"], abs=1e-4)
    # the level as configured, not its float32 in the search state: the final check
    # played that, and a noise rounded otherwise would play other episodes
    assert kept_action_noise(run) == kept["noise"]
    assert make_agent("CarRacing-v3", str(run)).noise == kept["noise"]
    assert make_agent("CarRacing-v3", str(run), controller="zero").noise == 0.1
    report = evaluate_run(run, episodes=1, seed=7, workers=1, progress=False)
    assert report["action_noise"] == kept["noise"]
    at_kept = evaluate_run(run, episodes=1, seed=7, workers=1, progress=False,
                           action_noise=kept["noise"])
    assert at_kept["results"] == report["results"]
    # a level the check did not offer, on the test seeds, beside the run's own test
    other = evaluate_run(run, episodes=1, seed=7, workers=1, progress=False,
                         action_noise=0.45)
    assert other["name"] == "agent_noise0.45" and other["action_noise"] == 0.45
    replay = real_check(run, config, search["best_params"], 1, range(7, 8), 0.45)
    assert other["results"][0]["return"] == pytest.approx(replay[0]["return"])
    assert other["results"][0]["return"] != report["results"][0]["return"]
    assert (run / "eval" / "agent.json").exists()
    with pytest.raises(ValueError, match="action noise is for"):
        evaluate_run(run, policy="brownian", episodes=1, action_noise=0.1)
    with pytest.raises(ValueError, match="must be >= 0"):
        evaluate_run(run, episodes=1, action_noise=-0.1)
    exported = export_agent(run, tmp_path / "exported")
    assert exported_action_noise(exported) == pytest.approx(kept["noise"])
    assert make_agent("CarRacing-v3", str(exported)).noise == pytest.approx(
        kept["noise"])


def test_every_finalist_plays_every_level_and_the_best_pair_is_kept(tmp_path):
    from world_models.agent import kept_action_noise
    from world_models.evaluation.contenders import RealSteps, search_steps

    run = make_tiny_run(tmp_path / "run")
    config = init_run(run, make_config("smoke", overrides=TINY_OVERRIDES + (
        "dream.generations=2", "dream.real_eval_every=1", "dream.finalists=2",
        "dream.final_check_episodes=2", "eval.max_steps=60",
        "dream.final_check_noise=0.3,0.6",
        "dream.final_check_noise_all_finalists=true")), fresh=True)
    summary = evolve(run, progress=False)

    record = load_finalists(run)["2"]
    kept_generation = record["kept_generation"]
    scores = {(row["generation"], 0.0): row["final_score"]
              for row in record["finalists"]}
    scores |= {(kept_generation, row["noise"]): row["final_score"]
               for row in record["noise_levels"]}
    scores |= {(row["generation"], row["noise"]): row["final_score"]
               for row in record["other_levels"]}
    assert len(record["finalists"]) == 2
    assert len(scores) == 6 and len(record["other_levels"]) == 2  # each pair once
    assert (kept_generation, record["kept_noise"]) == max(scores, key=scores.get)
    assert summary["best_generation"] == kept_generation
    assert summary["best_real_score"] == pytest.approx(max(scores.values()))
    assert kept_action_noise(run) == record["kept_noise"]

    # another finalist's level replays on the block, with that finalist's params
    search = load_search(run)
    generations = np.asarray(search["finalist_generations"]).tolist()
    other = record["other_levels"][-1]
    params = search["finalist_params"][generations.index(other["generation"])]
    replay = real_check(run, config, params, 1, final_check_seeds(config, 0),
                        other["noise"])
    assert np.mean([r["return"] for r in replay]) == pytest.approx(
        other["final_score"], abs=1e-4)
    # the levels' episodes count among the search's real steps
    checks = [r for r in read_metrics(run / "dream" / "metrics.jsonl")
              if "real_score" in r]
    played = (record["finalists"] + record["noise_levels"] + record["other_levels"])
    assert search_steps(run, config) == RealSteps(
        sum(r["real_steps"] for r in checks + played))

    # that finalist at that level on a test seed, beside the kept controller's test
    from world_models.evaluation.real import evaluate_run, policy_setup

    generation, noise = other["generation"], other["noise"]
    tested = evaluate_run(run, episodes=1, seed=7, workers=1, progress=False,
                          action_noise=noise, finalist=generation)
    assert tested["name"] == f"agent_finalist{generation}_noise{noise:g}"
    assert (tested["finalist"], tested["action_noise"]) == (generation, noise)
    replay = real_check(run, config, params, 1, range(7, 8), other["noise"])
    assert tested["results"][0]["return"] == pytest.approx(replay[0]["return"])
    _, kwargs = policy_setup(run, "agent", None, generation)  # not the kept one's
    np.testing.assert_array_equal(kwargs["params"], np.asarray(params))
    assert not np.array_equal(np.asarray(params), np.asarray(search["best_params"]))
    # without a level, a finalist plays at the run's own noise
    plain = evaluate_run(run, episodes=1, seed=7, workers=1, progress=False,
                         finalist=other["generation"])
    assert plain["action_noise"] == config.dream.action_noise
    assert plain["results"][0]["return"] == pytest.approx(
        real_check(run, config, params, 1, range(7, 8))[0]["return"])
    with pytest.raises(ValueError, match="no finalist from generation 99"):
        evaluate_run(run, episodes=1, seed=7, finalist=99)
    with pytest.raises(ValueError, match="a finalist is played by the agent"):
        evaluate_run(run, policy="zero", episodes=1, seed=7, finalist=kept_generation)


def test_every_finalist_at_every_level_needs_levels():
    with pytest.raises(ValueError, match="needs dream.final_check_noise"):
        make_config("smoke", overrides=("dream.finalists=2",
                                        "dream.final_check_noise_all_finalists=true"))
