import json

import pytest

from world_models.config import (
    PRESETS,
    Config,
    ConfigError,
    apply_overrides,
    load_config,
    make_config,
)
from world_models.pipeline.report import render_report
from world_models.run_directory import (
    CONFIG_FILENAME,
    ENVIRONMENT_FILENAME,
    init_run,
    load_run_config,
)


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_round_trip_json(tmp_path, preset):
    config = make_config(preset)
    path = tmp_path / "c.json"
    path.write_text(config.to_json())
    assert load_config(path) == config


def test_overrides_are_typed():
    config = make_config("smoke", overrides=["vae.batch_size=7",
                                              "vae.learning_rate=0.5",
                                              "collect.policies=brownian,recovery",
                                              "pipeline.retrain_vae=true",
                                              "dream.finalists=2",
                                              "dream.final_check_noise=0, 0.05"])
    assert config.vae.batch_size == 7 and config.vae.learning_rate == 0.5
    assert config.collect.policies == ("brownian", "recovery")
    assert config.pipeline.retrain_vae is True
    assert config.dream.final_check_noise == (0.0, 0.05)  # floats, not strings


@pytest.mark.parametrize("bad", ["vae.batch_size=-1", "collect.episodes_per_policy=0",
                                 "vae.nope=1", "nope.x=1", "vae.batch_size=abc",
                                 "novalue", "dream.final_check_noise=0.05",
                                 "dream.final_check_noise=fast",
                                 "dream.finalists=1 dream.final_check_noise=1.5",
                                 "pipeline.round_choice_episodes=-1"])
def test_invalid_values_refused(bad):
    with pytest.raises(ConfigError):
        apply_overrides(make_config("smoke"), bad.split())


@pytest.mark.parametrize("bad", [
    "collect.policies=brownian,recovry",
    "pipeline.heuristic_policies_later_rounds=[]",  # not how a tuple is emptied
    "pipeline.heuristic_policies_later_rounds=lander",  # LunarLander's, not CarRacing's
])
def test_a_driver_the_env_cannot_collect_with_is_refused_before_any_episode(bad):
    with pytest.raises(ConfigError, match="cannot collect in CarRacing-v3"):
        make_config("smoke", overrides=[bad])
    empty = ["pipeline.heuristic_policies_later_rounds="]
    emptied = make_config("smoke", overrides=empty)
    assert emptied.pipeline.heuristic_policies_later_rounds == ()


def test_unknown_env_refused_as_a_config_error():
    with pytest.raises(ConfigError, match="unknown env id"):
        Config(env_id="CarRacing-v9")


def test_unknown_preset_refused():
    with pytest.raises(ConfigError, match="unknown preset"):
        make_config("huge")


def test_run_directory_refuses_other_config(tmp_path):
    init_run(tmp_path / "run", make_config("smoke"))
    assert init_run(tmp_path / "run", make_config("smoke")) == make_config("smoke")
    with pytest.raises(ConfigError, match="vae.steps"):
        init_run(tmp_path / "run", make_config("smoke", overrides=["vae.steps=3"]))
    with pytest.raises(ConfigError, match="vae.steps"):
        load_run_config(tmp_path / "run", ["vae.steps=3"])
    fresh = init_run(tmp_path / "run", make_config("smoke", overrides=["vae.steps=3"]),
                     fresh=True)
    assert load_run_config(tmp_path / "run").vae.steps == 3 == fresh.vae.steps


def test_a_run_records_its_envs_protocol_and_refuses_a_changed_one(tmp_path):
    import json

    run = tmp_path / "run"
    init_run(run, make_config("smoke", "ALE/Breakout-v5"))
    path = run / ENVIRONMENT_FILENAME
    recorded = json.loads(path.read_text())
    # ALE v5's protocol, and the serve this library adds to Breakout
    assert recorded["registered_kwargs"]["repeat_action_probability"] == 0.25
    assert recorded["registered_kwargs"]["frameskip"] == 4
    assert recorded["serve_action"] == 1 and recorded["crop_rows"] == [32, 196]
    assert recorded["versions"]["ale-py"]
    init_run(run, make_config("smoke", "ALE/Breakout-v5"))  # the same protocol resumes
    shown = render_report(run)
    registered = "repeat_action_probability 0.25, full_action_space False, frameskip 4"
    assert registered in shown and "presses action 1 to serve" in shown

    # a run begun before the env served the ball, then resumed
    path.write_text(json.dumps(dict(recorded, serve_action=None)))
    with pytest.raises(ConfigError, match="protocol of ALE/Breakout-v5.*serve_action"):
        init_run(run, make_config("smoke", "ALE/Breakout-v5"))
    init_run(run, make_config("smoke", "ALE/Breakout-v5"), fresh=True)
    assert json.loads(path.read_text())["serve_action"] == 1

    path.unlink()  # a run made before runs recorded the protocol gets it on resume
    init_run(run, make_config("smoke", "ALE/Breakout-v5"))
    assert json.loads(path.read_text()) == recorded


def test_a_run_grows_by_rounds_but_not_by_other_changes(tmp_path):
    import json

    run = tmp_path / "run"
    init_run(run, make_config("smoke"))
    plan_one = json.loads((run / "seeds.json").read_text())
    grown = init_run(run, make_config("smoke", overrides=["pipeline.rounds=3"]))
    assert grown.pipeline.rounds == 3 == load_run_config(run).pipeline.rounds
    plan_three = json.loads((run / "seeds.json").read_text())
    assert plan_three != plan_one  # the saved seed plan covers the new rounds
    with pytest.raises(ConfigError, match="pipeline.rounds"):  # rounds never shrink
        init_run(run, make_config("smoke", overrides=["pipeline.rounds=2"]))
    with pytest.raises(ConfigError, match="vae.steps"):  # nor ride with other changes
        init_run(run, make_config("smoke",
                                  overrides=["pipeline.rounds=4", "vae.steps=3"]))


def test_a_run_moves_between_pools_in_place(tmp_path):
    run = tmp_path / "run"
    init_run(run, make_config("smoke"))
    moved = init_run(run, make_config("smoke", overrides=["collect.backend=ray"]))
    assert load_run_config(run).collect.backend == "ray" == moved.collect.backend
    back = init_run(run, make_config("smoke", overrides=["pipeline.rounds=2"]))
    assert (back.collect.backend, back.pipeline.rounds) == ("local", 2)
    with pytest.raises(ConfigError, match="collect.workers"):  # not a relocation
        init_run(run, make_config("smoke", overrides=["collect.workers=3"]))


def test_missing_and_corrupt_config_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_run_config(tmp_path / "absent")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / CONFIG_FILENAME).write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_run_config(tmp_path / "run")
    (tmp_path / "run" / CONFIG_FILENAME).write_text(json.dumps({"bogus": 1}))
    with pytest.raises(ConfigError, match="unknown config keys"):
        load_run_config(tmp_path / "run")


def test_a_fresh_m_each_round_needs_a_new_search_each_round():
    config = make_config("quick")  # later rounds: a fresh M and search by default
    assert config.pipeline.retrain_rnn and not config.pipeline.warm_start_es
    with pytest.raises(ConfigError,
                       match="retrain_rnn needs pipeline.warm_start_es=false"):
        make_config("quick", overrides=["pipeline.warm_start_es=true"])
    continued = make_config("quick", overrides=[
        "pipeline.retrain_rnn=false", "pipeline.warm_start_es=true"])
    assert not continued.pipeline.retrain_rnn and continued.pipeline.warm_start_es
    with pytest.raises(ConfigError, match="freeze_lstm keeps round 0's LSTM"):
        make_config("quick", overrides=["pipeline.freeze_lstm=true"])
    assert make_config("quick", overrides=[
        "pipeline.freeze_lstm=true", "pipeline.retrain_rnn=false"]).pipeline.freeze_lstm


def test_a_config_names_the_preset_it_was_built_from():
    assert Config().preset is None  # the dataclass defaults are no preset's
    assert make_config("quick").preset == "quick"
    assert make_config("quick").dream != Config().dream


def test_heuristic_policies_only_where_the_env_has_them():
    assert make_config("quick").collect.policies == (
        "brownian", "recovery", "aggressive", "understeer"
    )
    lunar = make_config("quick", "LunarLander-v3")
    assert lunar.collect.policies == ("brownian", "lander")
    assert lunar.pipeline.heuristic_policies_later_rounds == ("lander",)
    pong = make_config("quick", "ALE/Pong-v5")
    assert pong.collect.policies == ("brownian", "pong_tracker")
    breakout = make_config("quick", "ALE/Breakout-v5")
    assert breakout.collect.max_steps == breakout.eval.max_steps == 2000
    assert make_config("full", "ALE/Breakout-v5").eval.max_steps == 0  # 27,000
    assert make_config("smoke", "ALE/Pong-v5").collect.max_steps == 40
    assert make_config("quick").eval.max_steps == 0  # CarRacing: its own 1000
    assert breakout.pipeline.heuristic_policies_later_rounds == ("breakout_tracker",)
    assert make_config("smoke", "LunarLander-v3").collect.policies == ("brownian",)


def test_the_pool_backend_is_checked_and_old_configs_load_without_it(tmp_path):
    config = make_config("smoke", overrides=["collect.backend=ray",
                                              "collect.ray_address=head:6379"])
    assert (config.collect.backend, config.collect.ray_address) == ("ray", "head:6379")
    assert make_config("smoke").collect.backend == "local"
    with pytest.raises(ConfigError, match="local, ray"):
        make_config("smoke", overrides=["collect.backend=dask"])
    with pytest.raises(ConfigError, match="collect.backend=ray"):
        make_config("smoke", overrides=["collect.ray_address=head:6379"])
    old = make_config("smoke").to_dict()  # a run made before the two fields existed
    del old["collect"]["backend"], old["collect"]["ray_address"]
    (tmp_path / CONFIG_FILENAME).write_text(json.dumps(old))
    assert load_run_config(tmp_path) == make_config("smoke")
    assert init_run(tmp_path, make_config("smoke")) == make_config("smoke")


@pytest.mark.parametrize("preset", PRESETS)
def test_each_envs_own_settings_apply_to_every_preset_and_yield_to_set(preset):
    from world_models.envs import ENVS

    for env_id, spec in ENVS.items():
        config = make_config(preset, env_id)
        plain = make_config(preset)  # CarRacing's, before any env's own settings
        for item in spec.preset_overrides:
            key, _ = item.split("=", 1)
            section, name = key.split(".")
            env_value = getattr(getattr(config, section), name)
            assert env_value == getattr(
                getattr(apply_overrides(plain, [item]), section), name
            ), item
            default = getattr(getattr(plain, section), name)
            assert env_value != default, f"{env_id}: {item} changes nothing"
            mine = make_config(preset, env_id, [f"{key}={default}"])
            assert getattr(getattr(mine, section), name) == default  # --set wins
    for env_id in ("ALE/Pong-v5", "ALE/Breakout-v5", "LunarLander-v3"):
        assert make_config(preset, env_id).vae.encoder_norm == "instance"
    assert make_config(preset).vae.encoder_norm != "instance"
