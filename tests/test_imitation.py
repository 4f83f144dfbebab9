"""The imitation fit recovers a linear controller from the actions it took."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny_run import make_tiny_run

from world_models.config import make_config
from world_models.data.episodes import save_latents
from world_models.dream.evolve import evolve
from world_models.dream.search import load_search, save_start
from world_models.envs import get_spec
from world_models.logs import read_metrics
from world_models.models.controller import (
    act,
    controller_to_flat,
    make_controller,
    num_parameters,
    raw_targets,
)
from world_models.models.mdnrnn import action_to_input, rnn_from_config
from world_models.run_directory import load_run_config
from world_models.training.imitation import controller_inputs, fit_linear_controller


def _episodes(tmp_path, config, rnn, teacher, count=6, steps=40):
    """Episodes whose actions are ``teacher``'s, acting on [z, h] as the agent does."""
    spec = get_spec(config.env_id)
    rng = np.random.default_rng(0)
    paths = []
    for seed in range(count):
        mu = rng.normal(size=(steps + 1, config.vae.z_dim)).astype(np.float32)
        state, actions = rnn.initial_state(), []
        for t in range(steps):
            z = jnp.asarray(mu[t])
            action = act(teacher, z, state[0], spec)
            state = rnn.advance(state, z, action_to_input(action, spec))
            actions.append(np.asarray(action))
        path = tmp_path / f"ep_{seed:06d}.npz"
        save_latents(path, dict(
            mu=mu, logvar=np.full_like(mu, -3.0), actions=np.stack(actions),
            rewards=np.zeros(steps, np.float32), terminated=np.zeros(steps, bool),
            truncated=np.arange(steps) == steps - 1, env_id=config.env_id,
            policy="teacher", seed=seed))
        paths.append(path)
    return paths


def test_the_fit_recovers_the_controller_that_acted(tmp_path):
    config = make_config("smoke")
    rnn = rnn_from_config(config, key=jax.random.key(1))
    teacher = make_controller(config, key=jax.random.key(2))
    teacher = jax.tree.map(lambda x: x * 0.5, teacher)  # mostly unsaturated actions
    paths = _episodes(tmp_path, config, rnn, teacher)

    fitted, r2 = fit_linear_controller(config, rnn, paths, ridge=1e-6)
    spec = get_spec(config.env_id)
    features = [controller_inputs(rnn, np.load(p)["mu"], np.load(p)["actions"], spec)
                for p in paths]
    x = jnp.asarray(np.concatenate(features))
    z, h = x[:, : config.vae.z_dim], x[:, config.vae.z_dim :]
    ours = np.asarray(jax.vmap(lambda a, b: act(fitted, a, b, spec))(z, h))
    theirs = np.asarray(jax.vmap(lambda a, b: act(teacher, a, b, spec))(z, h))
    inside = (np.abs(theirs[:, 0]) < 0.95) & (np.abs(2 * theirs[:, 1] - 1) < 0.95)
    assert inside.mean() > 0.8
    np.testing.assert_allclose(ours[inside, :2], theirs[inside, :2], atol=1e-3)
    assert r2[0] > 0.99 and r2[1] > 0.99
    assert not np.allclose(controller_to_flat(fitted), 0.0)


def test_raw_targets_invert_the_car_racing_head_and_refuse_discrete_actions():
    actions = np.array([[0.5, 0.25, 0.0], [-1.0, 1.0, 0.5]], np.float32)
    raw = raw_targets(actions, "CarRacing-v3")
    np.testing.assert_allclose(np.tanh(raw[0, :2]), [0.5, -0.5], atol=1e-6)
    np.testing.assert_allclose(np.tanh(raw[1]), [-0.95, 0.95, 0.5], atol=1e-6)
    assert raw[0, 2] < 0  # brake off: any raw output <= 0
    with pytest.raises(ValueError, match="continuous actions"):
        raw_targets(np.zeros(3, np.int32), "ALE/Pong-v5")


def test_a_search_starts_from_a_saved_controller(tmp_path):
    run = make_tiny_run(tmp_path / "run")
    config = load_run_config(run)
    start = np.full(num_parameters(make_controller(config, key=jax.random.key(0))),
                    0.01, np.float32)
    save_start(run / "imitation", config, -start)
    folder = save_start(run / "imitation", config, start)  # a second save replaces it
    np.testing.assert_array_equal(load_search(run, config, folder)["best_params"],
                                  start)
    evolve(run, progress=False, start_from=folder)
    rows = read_metrics(run / "dream" / "metrics.jsonl")
    # reality scores it first
    assert rows[0]["step"] == 0 and "best_rescored" in rows[0]
    assert int(load_search(run)["generation"]) == config.dream.generations


def test_the_dream_gap_starts_where_the_real_episode_stands(tmp_path):
    """A one-step dream branched at frame t reads M's state there and the frame's
    latent: with the controller's own actions and a sharp posterior, its reward is M's
    teacher-forced reward at t; longer dreams sum more steps."""
    from world_models.data.episodes import load_latents
    from world_models.evaluation.dream_gap import dream_gap

    config = make_config("smoke")
    spec = get_spec(config.env_id)
    rnn = rnn_from_config(config, key=jax.random.key(0))
    teacher = make_controller(config, key=jax.random.key(1))
    paths = _episodes(tmp_path, config, rnn, teacher, count=2, steps=12)
    episodes = []
    for path in paths:
        latents = dict(load_latents(path))
        latents["logvar"] = np.full_like(latents["logvar"], -30.0)  # z = mu
        latents["rewards"] = np.arange(12, dtype=np.float32)
        episodes.append(latents)
    params = controller_to_flat(teacher)
    rows = dream_gap(rnn, episodes, teacher, params, spec, every=4, horizon=1,
                     temperature=1.0, rollouts=2, key=jax.random.key(2))
    assert [(r["episode"], r["t"]) for r in rows] == [(e, t) for e in (0, 1)
                                                     for t in (0, 4, 8)]
    for row in rows:
        assert row["real"] == row["t"]
        assert row["dream"] == pytest.approx(row["teacher_forced"], abs=1e-4)
    longer = dream_gap(rnn, episodes, teacher, params, spec, every=4, horizon=5,
                       temperature=1.0, rollouts=2, key=jax.random.key(2))
    assert [r["t"] for r in longer] == [0, 4] * 2  # t + horizon inside the episode
    assert longer[1]["real"] == sum(range(4, 9))
