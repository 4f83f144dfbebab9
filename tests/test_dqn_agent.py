"""The Q-agent plays the argmax of a saved Q-network over V's and M's features in the
real env; a Q-network's folder round-trips and refuses what it was not made for; DQN
trained in the real env on those features resumes to an uninterrupted run's result."""

import dataclasses
import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny_run import make_tiny_run

from world_models.agent import latent_key
from world_models.checkpoint import CheckpointError
from world_models.config import make_config
from world_models.data.play import play_episode
from world_models.data.policies import make_policy
from world_models.dream.dqn import CAR_ACTIONS, DQNSettings
from world_models.evaluation.real import policy_setup
from world_models.logs import read_metrics
from world_models.models.mdnrnn import action_to_input
from world_models.models.vae import encode_frames, sample_posterior
from world_models.rl.dqn_core import q_network
from world_models.rl.dqn_features import train_real_dqn
from world_models.rl.q_agent import (
    Q_INFO_FILENAME,
    Q_NETWORK_FILENAME,
    load_q_network,
    make_q_agent,
    save_q_network,
)
from world_models.run_directory import load_run_config
from world_models.training.rnn import load_rnn
from world_models.training.vae import load_vae

ENV_ID = "CarRacing-v3"
STEPS = 8


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run = make_tiny_run(tmp_path_factory.mktemp("run"))
    config = load_run_config(run)
    network = q_network(config.vae.z_dim + config.rnn.hidden_size, len(CAR_ACTIONS),
                        16, jax.random.key(0))
    # scaled so that the features, not the biases, decide: the choice changes by step
    network = jax.tree.map(lambda x: 3.0 * x if eqx.is_array(x) else x, network)
    save_q_network(run / "dqn", network, CAR_ACTIONS, DQNSettings(hidden=16), config)
    return run


def _arrays(model):
    return [np.asarray(x) for x in jax.tree.leaves(eqx.filter(model, eqx.is_array))]


def test_q_agent_plays_the_argmax_of_its_network_on_v_and_m_features(run):
    agent = make_policy("q_agent", ENV_ID, run_dir=str(run))
    episode = play_episode(ENV_ID, agent, seed=5, max_steps=STEPS)
    network, _, _ = load_q_network(run / "dqn", load_run_config(run))
    vae, rnn = load_vae(run), load_rnn(run)
    mu, logvar = encode_frames(vae, episode["obs"][:-1])
    state, chosen = rnn.initial_state(), []
    for t in range(len(episode["actions"])):
        z = sample_posterior(jnp.asarray(mu[t]), jnp.asarray(logvar[t]),
                             latent_key(5, t))
        chosen.append(int(network(jnp.concatenate([z, state[0]])).argmax()))
        np.testing.assert_array_equal(episode["actions"][t], CAR_ACTIONS[chosen[-1]])
        state, _ = rnn.step(state, z, action_to_input(CAR_ACTIONS[chosen[-1]],
                                                       agent.spec))
    assert len(episode["actions"]) == STEPS and len(set(chosen)) > 1
    np.testing.assert_allclose(agent.state[0], state[0], atol=1e-5)

    exploring = make_q_agent(ENV_ID, str(run), epsilon=1.0)  # always a random entry
    episode = play_episode(ENV_ID, exploring, seed=5, max_steps=STEPS)
    rng = np.random.default_rng(5)  # the episode's exploration stream
    drawn = []
    for _ in range(STEPS):
        assert rng.random() < 1.0  # the draw that decides to explore
        drawn.append(CAR_ACTIONS[rng.integers(len(CAR_ACTIONS))])
    np.testing.assert_array_equal(episode["actions"], drawn)


def test_a_q_network_folder_round_trips_and_refuses_what_it_was_not_made_for(
    run, tmp_path
):
    config = load_run_config(run)
    network, actions, info = load_q_network(run / "dqn", config)
    folder = tmp_path / "copy"
    save_q_network(folder, network, actions, info["settings"], config)
    again, again_actions, again_info = load_q_network(folder, config)
    for x, y in zip(_arrays(network), _arrays(again), strict=True):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(again_actions, CAR_ACTIONS)
    assert again_actions.dtype == np.float32 and again_info == info

    with pytest.raises(CheckpointError, match="no Q-network"):
        load_q_network(tmp_path / "nowhere", config)
    lander = make_config("smoke", env_id="LunarLander-v3")
    with pytest.raises(CheckpointError, match="plays CarRacing-v3, not LunarLander"):
        load_q_network(folder, lander)
    with pytest.raises(ValueError, match="trained on CarRacing-v3"):
        make_q_agent("LunarLander-v3", str(run))
    # evaluate_agent.py --policy q_agent plays the run's RUN/dqn
    assert policy_setup(run, "q_agent") == ("q_agent", dict(run_dir=str(run)))
    wider = dataclasses.replace(config, rnn=dataclasses.replace(config.rnn,
                                                                hidden_size=32))
    with pytest.raises(CheckpointError, match=r"sizes \(8, 16\).*\(8, 32\)"):
        load_q_network(folder, wider)
    with pytest.raises(ValueError, match="does not fit"):
        save_q_network(folder, network, actions[:3], {}, config)
    leaves = folder / Q_NETWORK_FILENAME
    leaves.write_bytes(leaves.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_q_network(folder, config)
    (folder / Q_INFO_FILENAME).write_text(json.dumps(dict(env_id=ENV_ID)))
    with pytest.raises(CheckpointError, match="corrupt"):
        load_q_network(folder, config)


SETTINGS = DQNSettings(iterations=10, buffer_size=32, batch_size=4, warmup=3,
                       epsilon_iterations=6, target_every=3, hidden=16)


def _train(run, out, steps, seed=0, **changes):
    settings = dataclasses.replace(SETTINGS, iterations=steps, **changes)
    return train_real_dqn(run, settings, seed=seed, max_episode_steps=4,
                          out_dir=out, progress=False)


def test_real_env_dqn_resumed_after_a_stop_mid_episode_equals_an_uninterrupted_run(
    run, tmp_path
):
    config = load_run_config(run)
    whole = _train(run, tmp_path / "whole", 10)
    assert whole["real_steps"] == whole["steps_played_now"] == 10
    assert whole["episodes"] == 2  # of 4 steps; the last 2 steps end no episode
    rows = read_metrics(tmp_path / "whole" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [4, 8]
    assert rows[0]["epsilon"] > rows[1]["epsilon"] and np.isfinite(rows[1]["loss"])
    assert (tmp_path / "whole" / "curve.png").stat().st_size > 0

    _train(run, tmp_path / "split", 6)  # stops in episode 2: its checkpoint is step 4
    resumed = _train(run, tmp_path / "split", 10)
    assert resumed["real_steps"] == 10 and resumed["steps_played_now"] == 6
    assert read_metrics(tmp_path / "split" / "metrics.jsonl") == rows
    whole_net = load_q_network(tmp_path / "whole", config)[0]
    for x, y in zip(_arrays(whole_net),
                    _arrays(load_q_network(tmp_path / "split", config)[0]),
                    strict=True):
        np.testing.assert_array_equal(x, y)
    _train(run, tmp_path / "other", 10, seed=1)
    other_seed = load_q_network(tmp_path / "other", config)[0]
    assert not all(np.array_equal(x, y) for x, y in
                   zip(_arrays(whole_net), _arrays(other_seed), strict=True))
    with pytest.raises(CheckpointError, match="another config"):
        _train(run, tmp_path / "split", 12, gamma=0.5)
