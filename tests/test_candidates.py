"""Choosing among M candidates and their searches: the best final check wins, its
folders become the run's."""

import json
from pathlib import Path

import pytest

from world_models.config import ConfigError, make_config
from world_models.pipeline.candidates import (
    candidate_config,
    candidate_dir,
    choose_candidate,
    load_candidates,
    prepare_candidate,
)


def _candidate(run_dir: Path, index: int, final_scores: dict[int, float], kept: int,
               search: int = 0):
    """A finished candidate search: its final check and a file naming it in dream/ and
    (the M's own folder only; a later search links to it) in rnn/."""
    folder = candidate_dir(run_dir, index, search)
    (folder / "dream").mkdir(parents=True)
    (folder / "dream" / "origin").write_text(folder.name)
    if search == 0:
        (folder / "rnn").mkdir()
        (folder / "rnn" / "origin").write_text(folder.name)
    else:
        (folder / "rnn").symlink_to(Path("..") / f"m{index}" / "rnn")
    finalists = [dict(generation=g, check_score=0.0, final_score=s, final_std=1.0)
                 for g, s in final_scores.items()]
    record = {"10": dict(seeds=[5, 6], kept_generation=kept, finalists=finalists)}
    (folder / "dream" / "finalists.json").write_text(json.dumps(record))


def _config(candidates: int, searches: int = 1):
    return make_config("smoke", overrides=[f"pipeline.rnn_candidates={candidates}",
                                           f"pipeline.search_candidates={searches}",
                                           "dream.finalists=2"])


def test_the_candidate_whose_kept_controller_scored_best_is_chosen(tmp_path):
    _candidate(tmp_path, 0, {5: 300.0, 10: 100.0}, kept=5)
    _candidate(tmp_path, 1, {5: 250.0, 10: 320.0}, kept=10)
    _candidate(tmp_path, 2, {5: 900.0, 10: 310.0}, kept=10)  # kept scores, not others
    (tmp_path / "rnn.partial").mkdir()  # a copy cut short by a kill is redone
    (tmp_path / "rnn.partial" / "stale").write_text("")
    record = choose_candidate(tmp_path, _config(3))
    assert record["chosen"] == 1
    assert [row["final_score"] for row in record["candidates"]] == [300.0, 320.0, 310.0]
    for name in ("rnn", "dream"):
        assert (tmp_path / name / "origin").read_text() == "m1"
    assert not (tmp_path / "rnn" / "stale").exists()
    assert load_candidates(tmp_path) == json.loads(json.dumps(record))


def test_a_later_search_of_an_m_can_be_chosen_and_brings_that_m(tmp_path):
    scores = {(0, 0): 300.0, (0, 1): 350.0, (1, 0): 320.0, (1, 1): 340.0}
    for (index, search), score in scores.items():
        _candidate(tmp_path, index, {5: score}, kept=5, search=search)
    record = choose_candidate(tmp_path, _config(2, searches=2))
    assert [(row["index"], row["search"], row["dream_seed"])
            for row in record["candidates"]] == [(0, 0, 0), (0, 1, 1), (1, 0, 0),
                                                 (1, 1, 1)]
    assert (record["chosen"], record["chosen_search"]) == (0, 1)
    assert (tmp_path / "dream" / "origin").read_text() == "m0_search1"
    assert (tmp_path / "rnn" / "origin").read_text() == "m0"
    assert not (tmp_path / "rnn").is_symlink()  # a copy, not the candidate's link


def test_a_candidate_is_scored_at_the_noise_its_final_check_kept(tmp_path):
    _candidate(tmp_path, 0, {5: 300.0}, kept=5)
    _candidate(tmp_path, 1, {5: 250.0}, kept=5)
    path = candidate_dir(tmp_path, 1) / "dream" / "finalists.json"
    record = json.loads(path.read_text())
    record["10"].update(kept_noise=0.05, noise_levels=[
        dict(noise=0.1, final_score=250.0, final_std=1.0, real_steps=0),
        dict(noise=0.05, final_score=340.0, final_std=2.0, real_steps=9)])
    path.write_text(json.dumps(record))
    chosen = choose_candidate(tmp_path, _config(2))
    assert chosen["chosen"] == 1
    assert (chosen["candidates"][1]["final_score"],
            chosen["candidates"][1]["final_std"]) == (340.0, 2.0)


def test_of_equal_scores_the_first_candidate_is_chosen(tmp_path):
    for index in (0, 1):
        _candidate(tmp_path, index, {5: 200.0}, kept=5)
    assert choose_candidate(tmp_path, _config(2))["chosen"] == 0


def test_a_candidate_without_a_final_check_is_refused(tmp_path):
    _candidate(tmp_path, 0, {5: 200.0}, kept=5)
    (candidate_dir(tmp_path, 1) / "dream").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no final check"):
        choose_candidate(tmp_path, _config(2))


def test_candidates_need_a_final_check():
    with pytest.raises(ConfigError, match="dream.finalists"):
        make_config("smoke", overrides=["pipeline.rnn_candidates=2"])
    with pytest.raises(ConfigError, match="rnn_candidates must be > 0"):
        make_config("smoke", overrides=["pipeline.rnn_candidates=0"])
    with pytest.raises(ConfigError, match="dream.finalists"):
        make_config("smoke", overrides=["pipeline.search_candidates=2"])
    with pytest.raises(ConfigError, match="search_candidates must be > 0"):
        make_config("smoke", overrides=["pipeline.search_candidates=0"])


def test_a_candidate_is_the_run_with_its_own_m_seed_sharing_data_v_and_latents(
        tmp_path):
    config = _config(2)
    for name in ("data", "vae", "latents"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "marker").write_text(name)
    folder = prepare_candidate(tmp_path, config, 1)
    saved = json.loads((folder / "config.json").read_text())
    assert saved["rnn"]["seed"] == config.rnn.seed + 1
    assert saved["pipeline"]["rnn_candidates"] == 1
    assert candidate_config(config, 1).dream == config.dream
    for name in ("data", "vae", "latents"):
        assert (folder / name / "marker").read_text() == name
    assert prepare_candidate(tmp_path, config, 1) == folder  # again: nothing changes


def test_a_later_search_is_its_ms_run_with_the_next_cma_seed(tmp_path):
    config = _config(2, searches=2)
    for name in ("data", "vae", "latents"):
        (tmp_path / name).mkdir()
    m1 = prepare_candidate(tmp_path, config, 1)
    (m1 / "rnn").mkdir()
    (m1 / "rnn" / "marker").write_text("m1's M")
    folder = prepare_candidate(tmp_path, config, 1, search=1)
    assert folder.name == "m1_search1"
    saved = json.loads((folder / "config.json").read_text())
    assert saved["rnn"]["seed"] == config.rnn.seed + 1
    assert saved["dream"]["seed"] == config.dream.seed + 1
    assert saved["pipeline"]["search_candidates"] == 1
    assert (folder / "rnn" / "marker").read_text() == "m1's M"
    assert json.loads((m1 / "config.json").read_text())["dream"] == json.loads(
        config.to_json())["dream"]
