import dataclasses
import functools
import json
import shutil

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny_run import make_tiny_run

from world_models.agent import Agent, latent_key, load_controller, make_agent
from world_models.config import make_config
from world_models.data.collection import play_episodes
from world_models.data.play import play_episode
from world_models.dream.evolve import evolve
from world_models.dream.search import load_search, make_strategy, restart_from_kept
from world_models.dream.selection import real_check
from world_models.envs import get_spec
from world_models.evaluation.real import (
    evaluate_run,
    record_video,
    render_frames,
    world_model_panels,
)
from world_models.logs import read_metrics
from world_models.models.controller import (
    act,
    controller_to_flat,
    head_bounds,
    make_controller,
)
from world_models.models.mdnrnn import action_to_input, rnn_from_config
from world_models.models.vae import ConvVAE, encode_frames, sample_posterior
from world_models.run_directory import init_run, load_run_config
from world_models.seeds import selection_seeds
from world_models.training.rnn import latest_rnn_step, load_rnn, train_rnn
from world_models.training.vae import checkpointer, initial_state, load_vae

STEPS = 12


@functools.cache
def _vae(z_dim):  # building the paper-sized ConvVAE is slow on a shared CPU: once
    return ConvVAE(z_dim, key=jax.random.key(0))


def _agent(env_id="CarRacing-v3", noise=0.0, scale=1.0):
    config = make_config("smoke", env_id=env_id)
    vae = _vae(config.vae.z_dim)
    rnn = rnn_from_config(config, key=jax.random.key(1))
    controller = make_controller(config, key=jax.random.key(2))
    controller = jax.tree.map(lambda x: scale * x, controller)
    return Agent(vae, rnn, controller, get_spec(env_id), noise=noise)


@pytest.fixture(scope="module")
def car_episode():
    agent = _agent(scale=5.0)
    return agent, play_episode("CarRacing-v3", agent, seed=3, max_steps=STEPS)


def test_seeded_agent_episodes_reproduce_exactly(car_episode):
    agent, episode = car_episode
    again = play_episode("CarRacing-v3", agent, seed=3, max_steps=STEPS)
    np.testing.assert_array_equal(episode["actions"], again["actions"])
    np.testing.assert_array_equal(episode["rewards"], again["rewards"])
    other = play_episode("CarRacing-v3", agent, seed=4, max_steps=STEPS)
    assert not np.array_equal(episode["actions"], other["actions"])


def test_agent_steps_m_exactly_as_the_dream(car_episode):
    agent, _ = car_episode
    episode = play_episode("CarRacing-v3", agent, seed=3, max_steps=STEPS)
    frames = episode["obs"][:-1]
    mu, logvar = encode_frames(agent.vae, frames)
    state = agent.rnn.initial_state()
    for t, frame in enumerate(frames):
        z = sample_posterior(
            jnp.asarray(mu[t]), jnp.asarray(logvar[t]), latent_key(3, t)
        )
        expected = np.asarray(
            agent.controller(jnp.concatenate([z, state[0]]))
        )  # C sees h before M steps
        steer, gas = np.tanh(expected[0]), (np.tanh(expected[1]) + 1) / 2
        np.testing.assert_allclose(episode["actions"][t][:2], [steer, gas], atol=1e-4)
        state, _ = agent.rnn.step(
            state, z, action_to_input(episode["actions"][t], agent.spec)
        )
    np.testing.assert_allclose(agent.state[0], state[0], atol=1e-4)


def test_exploring_agent_steps_m_on_the_noisy_action_it_sends():
    agent = _agent(noise=0.5, scale=5.0)
    episode = play_episode("CarRacing-v3", agent, seed=6, max_steps=STEPS)
    frames = episode["obs"][:-1]
    mu, logvar = encode_frames(agent.vae, frames)
    low, high = head_bounds(agent.spec)
    rng = np.random.default_rng(6)  # the episode's exploration stream
    state = agent.rnn.initial_state()
    for t in range(len(frames)):
        z = sample_posterior(
            jnp.asarray(mu[t]), jnp.asarray(logvar[t]), latent_key(6, t)
        )
        planned = np.asarray(act(agent.controller, z, state[0], agent.spec))
        sent = np.clip(planned + 0.5 * rng.standard_normal(3), low, high)
        np.testing.assert_allclose(episode["actions"][t], sent, atol=1e-4)
        state, _ = agent.rnn.step(state, z, action_to_input(sent, agent.spec))
    assert np.abs(episode["actions"] - planned).max() > 0.01  # the noise is there
    np.testing.assert_allclose(agent.state[0], state[0], atol=1e-4)


def test_discrete_exploration_forces_the_actions_the_stream_draws():
    agent = _agent("LunarLander-v3", noise=0.3)
    episode = play_episode("LunarLander-v3", agent, seed=2, max_steps=40)
    rng = np.random.default_rng(2)
    forced = [
        int(rng.integers(4)) if rng.random() < 0.3 else None for _ in range(40)
    ][: len(episode["actions"])]
    assert any(f is not None for f in forced)
    for action, force in zip(episode["actions"], forced):
        if force is not None:
            assert action == force


def test_on_policy_noise_stays_in_range_and_is_seeded():
    noisy = _agent(noise=0.5)
    episode = play_episode("CarRacing-v3", noisy, seed=5, max_steps=STEPS)
    low, high = head_bounds(get_spec("CarRacing-v3"))
    assert np.all(episode["actions"] >= low) and np.all(episode["actions"] <= high)
    again = play_episode("CarRacing-v3", noisy, seed=5, max_steps=STEPS)
    np.testing.assert_array_equal(episode["actions"], again["actions"])
    plain = play_episode("CarRacing-v3", _agent(), seed=5, max_steps=STEPS)
    assert not np.allclose(episode["actions"], plain["actions"])


def test_a_runs_agent_acts_with_its_action_noise_in_reality_and_the_dream(tmp_path):
    from world_models.data.policies import make_policy
    from world_models.dream.evolve import load_dream

    run = make_tiny_run(tmp_path / "run", overrides=("dream.action_noise=0.2",))
    config = load_run_config(run)
    zero = dict(run_dir=str(run), controller="zero")
    assert make_agent("CarRacing-v3", **zero).noise == 0.2
    assert make_agent("CarRacing-v3", **zero, noise=0.0).noise == 0.0
    assert make_policy("on_policy", "CarRacing-v3", **zero).noise == 0.1
    # the zero controller's own action is (0, 0.5, 0): every deviation is the noise
    episode = play_episode(
        "CarRacing-v3", make_agent("CarRacing-v3", **zero), seed=4, max_steps=STEPS
    )
    deviation = episode["actions"] - np.array([0.0, 0.5, 0.0], np.float32)
    assert np.all(deviation[:, 2] >= 0) and np.any(deviation[:, 2] > 0)  # brakes
    assert 0.05 < deviation[:, :2].std() < 0.4
    assert load_dream(run, config).action_noise == 0.2
    dreamless = dataclasses.replace(config.dream, action_noise_in_dream=False)
    init_run(run, dataclasses.replace(config, dream=dreamless), fresh=True)
    assert load_dream(run, load_run_config(run)).action_noise == 0.0


def test_discrete_agent_explores_with_epsilon():
    agent = _agent("LunarLander-v3", noise=1.0)  # always random
    episode = play_episode("LunarLander-v3", agent, seed=0, max_steps=40)
    assert episode["actions"].dtype == np.int32
    assert set(episode["actions"].tolist()) <= set(range(4))
    assert len(set(episode["actions"].tolist())) > 1


def test_pool_evaluation_reproduces_seeds_and_writes_a_report(tmp_path):
    init_run(tmp_path, make_config("smoke"))
    report = evaluate_run(
        tmp_path,
        policy="brownian",
        episodes=2,
        seed=7,
        workers=2,
        max_steps=STEPS,
        progress=False,
    )
    saved = json.loads((tmp_path / "eval" / "brownian.json").read_text())
    assert saved["mean"] == pytest.approx(report["mean"])
    assert [r["seed"] for r in saved["results"]] == [7, 8]
    returns = [r["return"] for r in saved["results"]]
    assert saved["mean"] == pytest.approx(np.mean(returns))
    assert saved["std"] == pytest.approx(np.std(returns))
    assert saved["min"] == min(returns) and saved["max"] == max(returns)
    assert saved["truncated"] == 2  # both cut by max_steps, neither ended by the env
    in_process = [
        play_episode("CarRacing-v3", "brownian", s, STEPS)["rewards"].sum()
        for s in (7, 8)
    ]
    np.testing.assert_allclose(returns, in_process, rtol=0, atol=1e-4)
    single_worker = play_episodes(
        "CarRacing-v3", "brownian", [7, 8], 1, STEPS, progress=False
    )
    assert [r["return"] for r in single_worker] == returns


def test_video_frames_show_three_panels_per_step(car_episode):
    agent, episode = car_episode
    panels = world_model_panels(agent.vae, agent.rnn, episode, seed=3)
    frames = render_frames(episode, panels)
    assert len(frames) == len(episode["rewards"])
    assert frames[0].shape == (256 + 20, 3 * 256, 3)
    assert panels["prediction"].shape == (len(frames), 64, 64, 3)
    assert np.all(panels["prediction"][0] == 0)  # nothing predicted before step 0


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return make_tiny_run(tmp_path_factory.mktemp("run"))


def test_evolve_end_to_end_then_resume(tiny_run):
    summary = evolve(tiny_run, progress=False)
    assert summary["generation"] == 2
    rows = read_metrics(tiny_run / "dream" / "metrics.jsonl")
    dream_rows = [r for r in rows if "dream_best" in r]
    real_rows = [r for r in rows if "real_score" in r]
    assert [r["step"] for r in dream_rows] == [1, 2]
    assert [r["step"] for r in real_rows] == [2]  # real_eval_every=2
    best = max(real_rows, key=lambda r: r["real_score"])
    assert summary["best_real_score"] == pytest.approx(best["real_score"], abs=1e-4)
    assert summary["best_generation"] == best["step"]
    assert (tiny_run / "dream" / "curves.png").stat().st_size > 0

    search = load_search(tiny_run)
    controller = load_controller(tiny_run, "best")
    np.testing.assert_array_equal(controller_to_flat(controller), search["best_params"])
    # the kept controller, replayed on its check's seeds, scores what the check said
    config = load_run_config(tiny_run)
    seeds = selection_seeds(config, round_index=0, check_index=1)
    replay = real_check(tiny_run, config, search["best_params"], 1, seeds)
    assert np.mean([r["return"] for r in replay]) == pytest.approx(
        best["real_score"], abs=1e-4
    )
    with pytest.raises(ValueError, match="test seeds"):  # selection tracks stay apart
        evaluate_run(tiny_run, episodes=1, seed=seeds.start, progress=False)

    resumed = evolve(tiny_run, total_generations=3, progress=False)
    assert resumed["generation"] == 3
    steps = [
        r["step"]
        for r in read_metrics(tiny_run / "dream" / "metrics.jsonl")
        if "dream_best" in r
    ]
    assert steps == [1, 2, 3]
    assert evolve(tiny_run, total_generations=3, progress=False)["generation"] == 3


def test_a_later_round_restarts_the_search_from_the_kept_controller(tmp_path):
    run = make_tiny_run(tmp_path / "run")
    evolve(run, progress=False)
    before = load_search(run)
    train_rnn(run, total_steps=6, progress=False)  # the next round retrains M
    evolve(run, total_generations=4, progress=False, round_index=1)
    rows = read_metrics(run / "dream" / "metrics.jsonl")
    assert [r["step"] for r in rows if "best_rescored" in r] == [2]
    after = load_search(run)
    assert int(after["round_start"]) == 2 and int(after["rnn_step"]) == 6

    config = load_run_config(run)
    es, es_params = make_strategy(config, before["best_params"].size)
    kept = before["es_state"].mean + 0.5  # a kept controller other than the mean
    restarted = restart_from_kept(es, es_params, dict(before, best_params=kept), 0)
    np.testing.assert_array_equal(restarted["es_state"].mean, kept)
    assert float(restarted["es_state"].std) == pytest.approx(config.dream.sigma0)
    # a round that ran out of patience (dream.patience) does not end the next one
    stalled = dict(before, best_params=kept, stalled=jnp.asarray(1))
    assert int(restart_from_kept(es, es_params, stalled, 0)["stalled"]) == 0


def test_agent_of_a_run_scores_reproducibly_on_the_pool(tiny_run):
    run_dir = tiny_run
    first = evaluate_run(run_dir, policy="zero", episodes=2, seed=3, progress=False)
    second = evaluate_run(
        run_dir, policy="zero", name="zero_again", episodes=2, seed=3, progress=False
    )
    assert [r["return"] for r in first["results"]] == [
        r["return"] for r in second["results"]
    ]
    assert (run_dir / "eval" / "zero.json").exists()
    assert first["max_steps"] == 10 and all(r["length"] <= 10 for r in first["results"])
    video = record_video(run_dir, seed=3, policy="zero", video_format="gif")
    assert video.suffix == ".gif" and video.stat().st_size > 0


def _arrays(model):
    return [np.asarray(x) for x in jax.tree.leaves(eqx.filter(model, eqx.is_array))]


def _same(a, b):
    pairs = zip(_arrays(a), _arrays(b), strict=True)
    return all(np.array_equal(x, y) for x, y in pairs)


def test_agents_made_after_retraining_act_with_the_new_checkpoints(tmp_path):
    run = make_tiny_run(tmp_path / "run")
    first = make_agent("CarRacing-v3", str(run), controller="zero")
    again = make_agent("CarRacing-v3", str(run), controller="zero")
    assert again.rnn is first.rnn and again.vae is first.vae  # one load per round

    train_rnn(run, total_steps=6, progress=False)  # the next round retrains M
    assert latest_rnn_step(run) == 6
    retrained = make_agent("CarRacing-v3", str(run), controller="zero")
    assert _same(retrained.rnn, load_rnn(run))
    assert not _same(retrained.rnn, first.rnn)

    # pipeline.retrain_rnn: M set aside, a fresh one trained to the same step on
    # grown data
    (run / "rnn").rename(run / "rnn_round0")
    latents = sorted((run / "latents" / "round0" / "brownian").glob("*.npz"))
    grown = run / "latents" / "round1" / "brownian"
    grown.mkdir(parents=True)
    shutil.copy(latents[0], grown / "ep_000099.npz")
    train_rnn(run, total_steps=6, progress=False)
    assert latest_rnn_step(run) == 6
    fresh = make_agent("CarRacing-v3", str(run), controller="zero")
    assert _same(fresh.rnn, load_rnn(run))
    assert not _same(fresh.rnn, retrained.rnn)

    config = load_run_config(run).vae  # and retrains V (pipeline.retrain_vae)
    state = initial_state(config)
    state["model"] = jax.tree.map(
        lambda x: x + 0.01 if eqx.is_inexact_array(x) else x, state["model"]
    )
    saver = checkpointer(run, config)
    saver.save(1, state)
    saver.close()
    revised = make_agent("CarRacing-v3", str(run), controller="zero")
    assert _same(revised.vae, load_vae(run))
    assert not _same(revised.vae, first.vae)
