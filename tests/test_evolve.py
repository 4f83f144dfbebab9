import jax
import jax.numpy as jnp
import numpy as np
import pytest
from handmade_rnn import steering_reward_rnn

from world_models.checkpoint import Checkpointer
from world_models.config import make_config
from world_models.dream.evolve import (
    patience_ran_out,
    rollout_fitness,
    run_generations,
    worst_fraction_at,
)
from world_models.dream.rollout import make_dream
from world_models.dream.search import (
    initial_search,
    make_strategy,
    search_checkpoint_config,
)
from world_models.envs import get_spec
from world_models.models.controller import (
    act,
    controller_from_flat,
    controller_to_flat,
    make_controller,
)

CAR = get_spec("CarRacing-v3")
Z = 2


def _toy_search(population=16, rollouts=2, sigma0=0.5, horizon=4):
    config = make_config(
        "smoke",
        overrides=[
            f"vae.z_dim={Z}",
            "rnn.hidden_size=2",
            "rnn.num_mixtures=1",
            f"dream.population={population}",
            f"dream.rollouts={rollouts}",
            f"dream.sigma0={sigma0}",
        ],
    )
    template = make_controller(config, key=jax.random.key(0))
    starts = (np.zeros((4, Z), np.float32), np.zeros((4, Z), np.float32))
    dream = make_dream(steering_reward_rnn(Z), starts, template, CAR, horizon, 1.0)
    mean = jnp.zeros_like(controller_to_flat(template))
    es, es_params = make_strategy(config, mean.size)
    return config, dream, es, es_params, initial_search(es, es_params, mean, seed=0)


def test_cma_es_finds_the_action_the_toy_dream_rewards():
    config, dream, es, es_params, search = _toy_search()
    es_state, metrics = run_generations(
        dream,
        es,
        es_params,
        search["es_state"],
        jax.random.key(1),
        jnp.asarray(0),
        40,
        config.dream.rollouts,
        0,
    )
    controller = controller_from_flat(dream.template, es_state.mean)
    z = jax.random.normal(jax.random.key(2), (8, Z))
    h = jax.random.uniform(jax.random.key(3), (8, 2), minval=-1, maxval=1)
    actions = np.asarray(jax.vmap(lambda z, h: act(controller, z, h, CAR))(z, h))
    assert np.all(actions[:, 0] > 0.9), actions  # steer right
    assert np.all(actions[:, 1] < 0.1), actions  # no gas
    best = np.asarray(metrics["dream_best"])
    assert best[-1] > best[0] + 0.5  # the zero mean starts near 0 reward per step


def test_a_resumed_search_replays_the_uninterrupted_one(tmp_path):
    config, dream, es, es_params, search = _toy_search(population=8, horizon=3)
    key = jax.random.key(5)
    straight, _ = run_generations(
        dream, es, es_params, search["es_state"], key, jnp.asarray(0), 4, 2, 0
    )

    first, _ = run_generations(
        dream, es, es_params, search["es_state"], key, jnp.asarray(0), 2, 2, 0
    )
    checkpointer = Checkpointer(tmp_path / "ckpt", search_checkpoint_config(config))
    checkpointer.save(2, dict(search, es_state=first, generation=jnp.asarray(2)))
    restored = checkpointer.restore(search)
    checkpointer.close()
    assert int(restored["generation"]) == 2
    assert int(restored["es_state"].generation_counter) == 2
    resumed, _ = run_generations(
        dream, es, es_params, restored["es_state"], key, jnp.asarray(2), 2, 2, 0
    )
    np.testing.assert_array_equal(resumed.mean, straight.mean)
    np.testing.assert_array_equal(resumed.C, straight.C)


def test_chunked_generation_equals_unchunked():
    config, dream, es, es_params, search = _toy_search(population=8, horizon=3)
    runs = [
        run_generations(
            dream,
            es,
            es_params,
            search["es_state"],
            jax.random.key(0),
            jnp.asarray(0),
            2,
            2,
            chunk,
        )[0]
        for chunk in (0, 6)
    ]
    np.testing.assert_allclose(runs[0].mean, runs[1].mean, rtol=1e-5, atol=1e-6)


def test_checkpoint_config_lets_a_search_grow_longer():
    short = make_config("smoke")
    longer = make_config(
        "smoke", overrides=["dream.generations=99", "dream.real_eval_every=7"]
    )
    assert search_checkpoint_config(short) == search_checkpoint_config(longer)
    other = make_config("smoke", overrides=["dream.temperature=1.3"])
    assert search_checkpoint_config(other) != search_checkpoint_config(short)


def test_sigma0_reaches_the_strategy():
    config, _, es, es_params, search = _toy_search(sigma0=0.25)
    assert float(search["es_state"].std) == pytest.approx(0.25)
    assert es.population_size == config.dream.population


def test_fitness_is_the_mean_of_the_worst_rollouts():
    returns = jax.random.normal(jax.random.key(0), (5, 16)) * 100
    worst_half = np.sort(np.asarray(returns), axis=1)[:, :8].mean(axis=1)
    np.testing.assert_allclose(rollout_fitness(returns, 0.5), worst_half, rtol=1e-6)
    np.testing.assert_array_equal(rollout_fitness(returns, 1.0), returns.mean(axis=1))
    lowest = np.asarray(returns).min(axis=1)
    np.testing.assert_array_equal(rollout_fitness(returns, 0.01), lowest)
    with pytest.raises(ValueError, match="worst_fraction"):
        make_config("smoke", overrides=["dream.worst_fraction=0"])


def test_the_worst_fraction_starts_at_its_generation():
    overrides = ["dream.real_eval_every=5", "dream.worst_fraction=0.5"]
    settings = make_config("smoke", overrides=[*overrides, "dream.worst_from=20"]).dream
    assert [worst_fraction_at(settings, g) for g in (0, 15, 20, 25)] == [
        1.0, 1.0, 0.5, 0.5
    ]
    always = make_config("smoke", overrides=overrides).dream
    assert worst_fraction_at(always, 0) == 0.5
    with pytest.raises(ValueError, match="worst_from"):
        make_config("smoke", overrides=[*overrides, "dream.worst_from=7"])


def test_patience_counts_the_checks_since_the_round_improved():
    overrides = ["dream.real_eval_every=5", "dream.patience=3"]
    settings = make_config("smoke", overrides=overrides).dream

    def ran_out(generation, best_generation, round_start=0):
        search = dict(generation=generation, best_generation=best_generation,
                      round_start=round_start)
        return patience_ran_out(settings, search)

    assert [ran_out(g, 25) for g in (25, 30, 35, 40, 45)] == [
        False, False, False, True, True
    ]
    # a later round's best, re-scored at its start (60), counts from that start
    assert not ran_out(70, 25, round_start=60) and ran_out(75, 25, round_start=60)
    off = make_config("smoke", overrides=overrides[:1]).dream
    assert not patience_ran_out(off, dict(generation=99, best_generation=5,
                                          round_start=0))
    with pytest.raises(ValueError, match="patience"):
        make_config("smoke", overrides=["dream.patience=-1"])


def test_a_pessimistic_fitness_changes_the_search():
    config, dream, es, es_params, search = _toy_search(population=8, horizon=3)
    means = [
        run_generations(
            dream, es, es_params, search["es_state"], jax.random.key(0),
            jnp.asarray(0), 2, 4, 0, fraction,
        )[0].mean
        for fraction in (1.0, 0.5)
    ]
    assert not np.array_equal(means[0], means[1])
