import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from handmade_rnn import counter_rnn

from world_models.config import make_config
from world_models.data.episodes import save_latents
from world_models.dream.rollout import Dream, make_dream
from world_models.dream.starts import load_dream_starts
from world_models.envs import get_spec
from world_models.models.controller import (
    LinearController,
    controller_to_flat,
    make_controller,
)
from world_models.models.mdnrnn import rnn_from_config

CAR = get_spec("CarRacing-v3")
Z = 3


def _starts(n=5, z=Z, logvar=0.0):
    mu = np.arange(n * z, dtype=np.float32).reshape(n, z)
    return mu, np.full((n, z), logvar, np.float32)


def _linear_template(rnn):
    return LinearController(
        rnn.z_dim + rnn.hidden_size, CAR.action_size, key=jax.random.key(0)
    )


def _random_dream(horizon=12, temperature=1.0):
    config = make_config("smoke", overrides=[f"vae.z_dim={Z}"])
    rnn = rnn_from_config(config, key=jax.random.key(3))
    template = make_controller(config, key=jax.random.key(4))
    return make_dream(rnn, _starts(), template, CAR, horizon, temperature)


def _population(dream, size, key=5, scale=0.5):
    dim = controller_to_flat(dream.template).size
    return scale * jax.random.normal(jax.random.key(key), (size, dim))


@pytest.mark.parametrize("done_step", [1, 4, 7])
def test_nothing_is_counted_after_the_predicted_termination(done_step):
    rnn = counter_rnn(
        Z, CAR.action_size, done_step=done_step, reward=1.5, terminal_reward=-7.0
    )
    dream = make_dream(
        rnn, _starts(), _linear_template(rnn), CAR, horizon=20, temperature=1.0
    )
    params = controller_to_flat(dream.template)
    total, length = eqx.filter_jit(dream.rollout)(params, jax.random.key(0))
    assert int(length) == done_step
    # every step before the termination pays 1.5, the terminating one the terminal -7
    np.testing.assert_allclose(total, 1.5 * (done_step - 1) - 7.0, rtol=1e-6)


def test_horizon_caps_a_dream_that_never_terminates():
    rnn = counter_rnn(Z, CAR.action_size, done_step=50)
    dream = make_dream(
        rnn, _starts(), _linear_template(rnn), CAR, horizon=9, temperature=1.0
    )
    total, length = dream.rollout(controller_to_flat(dream.template), jax.random.key(0))
    assert int(length) == 9 and float(total) == pytest.approx(9.0)


def test_rollout_is_pure_and_jit_compiles():
    dream = _random_dream()
    params = _population(dream, 1)[0]
    key = jax.random.key(7)
    eager = dream.rollout(params, key)
    jitted = eqx.filter_jit(dream.rollout)
    first, second = jitted(params, key), jitted(params, key)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_allclose(first[0], eager[0], rtol=1e-5, atol=1e-6)
    other = jitted(params, jax.random.key(8))
    assert float(other[0]) != float(first[0])


@pytest.mark.parametrize("chunk_size", [0, 8, 12])
def test_vmapped_population_matches_a_python_loop(chunk_size):
    dream = _random_dream()
    population = _population(dream, 5)
    rollouts, key = 4, jax.random.key(11)
    returns, lengths = eqx.filter_jit(dream.population_returns)(
        population, key, rollouts, chunk_size
    )
    assert returns.shape == (5, rollouts) and lengths.shape == (5, rollouts)
    keys = jax.random.split(key, rollouts)
    rollout = eqx.filter_jit(dream.rollout)
    for c in range(5):
        for r in range(rollouts):
            total, length = rollout(population[c], keys[r])
            np.testing.assert_allclose(returns[c, r], total, rtol=1e-4, atol=1e-5)
            assert int(lengths[c, r]) == int(length)


def test_batch_major_lstm_is_the_same_dream():
    """The dream's x·Wᵀ LSTM computes what eqx.nn.LSTMCell's W·x does, one step and
    whole populations (XLA's CPU backend gives the same bits at the batch sizes
    benchmarks/dream.py measures; rounding is all that may differ)."""
    dream = _random_dream()
    rnn = dream.rnn
    keys = jax.random.split(jax.random.key(7), 4)
    state = tuple(jax.random.normal(k, (rnn.hidden_size,)) for k in keys[:2])
    z = jax.random.normal(keys[2], (rnn.z_dim,))
    action = jax.random.normal(keys[3], (CAR.action_size,))
    for got, want in zip(
        rnn.advance(state, z, action, batch_major=True), rnn.advance(state, z, action)
    ):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    population = _population(dream, 6)
    old_layout = dataclasses.replace(dream, batch_major=False)
    evaluate = eqx.filter_jit(lambda d: d.population_returns(population, keys[0], 4))
    (returns, lengths), (old_returns, old_lengths) = (
        evaluate(dream), evaluate(old_layout)
    )
    np.testing.assert_allclose(returns, old_returns, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(lengths, old_lengths)


def test_a_bfloat16_dream_is_close_to_the_float32_one():
    config = make_config("smoke", overrides=[f"vae.z_dim={Z}"])
    rnn = rnn_from_config(config, key=jax.random.key(3))
    template = make_controller(config, key=jax.random.key(4))
    dreams = [
        make_dream(rnn, _starts(), template, CAR, 12, 1.0, matmul_dtype=dtype)
        for dtype in ("float32", "bfloat16")
    ]
    assert dreams[1].rnn.cell.weight_hh.dtype == jnp.bfloat16
    assert dreams[1].rnn.cell.bias.dtype == jnp.float32
    population = _population(dreams[0], 6)
    evaluate = eqx.filter_jit(
        lambda d: d.population_returns(population, jax.random.key(9), 4)
    )
    (returns, lengths), (low_returns, low_lengths) = map(evaluate, dreams)
    assert low_returns.dtype == jnp.float32
    assert not np.array_equal(returns, low_returns)
    np.testing.assert_allclose(low_returns, returns, rtol=0.05, atol=0.05)
    np.testing.assert_array_equal(lengths, low_lengths)
    with pytest.raises(ValueError, match="matmul_dtype"):
        make_config("smoke", overrides=["dream.matmul_dtype=float16"])


def test_common_random_numbers_within_a_generation():
    dream = _random_dream()
    candidate = _population(dream, 1)[0]
    population = jnp.stack([candidate, candidate, 2 * candidate])
    returns, _ = dream.population_returns(population, jax.random.key(0), rollouts=3)
    np.testing.assert_array_equal(returns[0], returns[1])  # same starts, same noise
    assert len(set(np.asarray(returns[0]).tolist())) == 3  # rollouts differ
    assert not np.array_equal(returns[0], returns[2])


def test_start_latents_come_from_the_pool():
    dream = _random_dream()
    deterministic = make_dream(
        dream.rnn,
        _starts(logvar=-80.0),
        dream.template,
        CAR,
        horizon=3,
        temperature=1.0,
    )
    mu = np.asarray(_starts()[0])
    for seed in range(10):
        state, z0 = deterministic.sample_start(jax.random.key(seed))
        assert not np.any(np.asarray(state))  # episode starts: M's state at reset
        z0 = np.asarray(z0)
        assert np.any(np.all(np.isclose(mu, z0), axis=1))


def test_dream_rejects_mismatched_latents():
    dream = _random_dream()
    with pytest.raises(ValueError, match="z_dim"):
        make_dream(dream.rnn, _starts(z=Z + 1), dream.template, CAR, 5, 1.0)


def test_load_dream_starts_reads_first_frames(tmp_path):
    folder = tmp_path / "latents" / "round1" / "brownian"
    folder.mkdir(parents=True)
    mus = []
    for i in range(3):
        mu = np.random.default_rng(i).normal(size=(5, Z)).astype(np.float32)
        mus.append(mu[0])
        save_latents(
            folder / f"ep{i}.npz",
            dict(
                mu=mu,
                logvar=np.zeros_like(mu),
                actions=np.zeros((4, 3), np.float32),
                rewards=np.zeros(4, np.float32),
                terminated=np.zeros(4, bool),
                truncated=np.arange(4) == 3,
                env_id="CarRacing-v3",
                policy="brownian",
                seed=i,
            ),
        )
    starts = load_dream_starts(tmp_path)
    np.testing.assert_array_equal(starts.mu, np.stack(mus))
    assert starts.logvar.shape == (3, Z)
    assert starts.h is None and starts.c is None  # M's state at reset: zero
    with pytest.raises(FileNotFoundError, match="latents"):
        load_dream_starts(tmp_path / "missing")


def _save_episode(path, mu, actions, seed):
    steps = actions.shape[0]
    save_latents(
        path,
        dict(
            mu=mu,
            logvar=np.full_like(mu, -1.0),
            actions=actions,
            rewards=np.zeros(steps, np.float32),
            terminated=np.zeros(steps, bool),
            truncated=np.arange(steps) == steps - 1,
            env_id="CarRacing-v3",
            policy="brownian",
            seed=seed,
        ),
    )


def test_branched_starts_carry_the_state_m_reaches_on_the_real_prefix(tmp_path):
    config = make_config("smoke", overrides=[f"vae.z_dim={Z}"])
    rnn = rnn_from_config(config, key=jax.random.key(3))
    folder = tmp_path / "latents" / "round0" / "brownian"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    episodes = []
    for i, steps in enumerate((9, 4)):  # unequal lengths: the shorter one is padded
        mu = rng.normal(size=(steps + 1, Z)).astype(np.float32)
        actions = rng.uniform(0, 1, size=(steps, 3)).astype(np.float32)
        _save_episode(folder / f"ep{i}.npz", mu, actions, i)
        episodes.append((mu, actions))
    starts = load_dream_starts(tmp_path, rnn, branch_every=3, spec=CAR)
    # frames 0, 3, 6 of the 9-step episode, then 0, 3 of the 4-step one
    expected = [(0, 0), (0, 3), (0, 6), (1, 0), (1, 3)]
    assert starts.mu.shape == (len(expected), Z)
    for row, (episode, frame) in enumerate(expected):
        mu, actions = episodes[episode]
        np.testing.assert_array_equal(starts.mu[row], mu[frame])
        np.testing.assert_array_equal(starts.logvar[row], -1.0)
        if frame == 0:
            h, c = rnn.initial_state()
        else:
            (h, c), _ = rnn(jnp.asarray(mu[:frame]), jnp.asarray(actions[:frame]))
        np.testing.assert_allclose(starts.h[row], h, atol=1e-5)
        np.testing.assert_allclose(starts.c[row], c, atol=1e-5)
    assert np.abs(starts.h[1]).max() > 0  # a read prefix leaves a nonzero state

    dream = make_dream(rnn, starts, make_controller(config, key=jax.random.key(4)),
                       CAR, horizon=5, temperature=1.0)
    state, z = dream.sample_start(jax.random.key(7))
    rows = [i for i in range(len(expected)) if np.allclose(starts.h[i], state[0])]
    assert len(rows) == 1  # the dream begins in one pooled start, with its state
    with pytest.raises(ValueError, match="rnn"):
        load_dream_starts(tmp_path, branch_every=3)


def _never_ending(dream):
    """The same dream with its termination switched off, so it lasts the horizon."""
    return Dream(dream.rnn, dream.start_mu, dream.start_logvar, dream.start_h,
                 dream.start_c, dream.template, CAR,
                 dream.horizon, dream.temperature, dream.dropout, dream.ensemble,
                 done_threshold=1 - 1e-12)


def _dropout_dream(dropout, temperature=1.0):
    config = make_config("smoke", overrides=[f"vae.z_dim={Z}"])
    rnn = rnn_from_config(config, key=jax.random.key(3))
    template = make_controller(config, key=jax.random.key(4))
    return _never_ending(
        make_dream(rnn, _starts(), template, CAR, 12, temperature, dropout)
    )


def test_dream_with_dropout_is_pure_and_reproducible_from_its_key():
    dream = _dropout_dream(0.3)
    population = _population(dream, 4)
    evaluate = eqx.filter_jit(dream.population_returns)
    first = evaluate(population, jax.random.key(1), 6)
    again = evaluate(population, jax.random.key(1), 6)
    np.testing.assert_array_equal(first[0], again[0])
    other_key = evaluate(population, jax.random.key(2), 6)
    assert not np.array_equal(first[0], other_key[0])


def test_dropout_makes_each_rollout_a_different_model_and_zero_dropout_is_none():
    params = _population(_dropout_dream(0.0), 1)[0]
    key = jax.random.key(9)
    plain = _never_ending(_random_dream()).rollout(params, key)
    no_dropout = _dropout_dream(0.0).rollout(params, key)
    np.testing.assert_array_equal(plain[0], no_dropout[0])
    # At τ → 0 the next z is (nearly) the mode, so a changed return is the mask's doing.
    sharp, masked = _dropout_dream(0.0, 1e-6), _dropout_dream(0.5, 1e-6)
    assert float(masked.rollout(params, key)[0]) != float(sharp.rollout(params, key)[0])


def test_head_mask_keeps_the_expected_prediction():
    from world_models.models.mdnrnn import dropout_mask

    masks = jax.vmap(lambda k: dropout_mask(k, 64, 0.25))(
        jax.random.split(jax.random.key(0), 4000)
    )
    np.testing.assert_allclose(np.unique(np.asarray(masks)), [0.0, 1 / 0.75], rtol=1e-6)
    np.testing.assert_allclose(masks.mean(), 1.0, atol=0.01)
    np.testing.assert_array_equal(dropout_mask(jax.random.key(0), 8, 0.0), np.ones(8))


def _ensemble_dream(ensemble, heads=3):
    config = make_config("smoke", overrides=[f"vae.z_dim={Z}", f"rnn.heads={heads}"])
    rnn = rnn_from_config(config, key=jax.random.key(3))
    template = make_controller(config, key=jax.random.key(4))
    return make_dream(rnn, _starts(), template, CAR, 12, 1.0, 0.0, ensemble)


@pytest.mark.parametrize("ensemble", ["sample", "pessimistic"])
def test_ensemble_dream_is_pure_and_reproducible_from_its_key(ensemble):
    dream = _never_ending(_ensemble_dream(ensemble))
    population = _population(dream, 3)
    evaluate = eqx.filter_jit(dream.population_returns)
    first, again = (evaluate(population, jax.random.key(1), 5) for _ in range(2))
    np.testing.assert_array_equal(first[0], again[0])
    assert not np.array_equal(first[0], evaluate(population, jax.random.key(2), 5)[0])


def test_pessimistic_dream_pays_no_more_than_the_sampled_head():
    sampled = _never_ending(_ensemble_dream("sample"))
    cautious = _never_ending(_ensemble_dream("pessimistic"))
    params = _population(sampled, 1)[0]
    keys = jax.random.split(jax.random.key(0), 8)
    rollout = jax.vmap(lambda d, k: d.rollout(params, k), in_axes=(None, 0))
    # Same key: same head for the next z, hence the same latent path; only the reward
    # (the minimum over heads) differs.
    sample_returns, sample_lengths = map(np.asarray, rollout(sampled, keys))
    cautious_returns, cautious_lengths = map(np.asarray, rollout(cautious, keys))
    assert np.all(sample_lengths == 12) and np.all(cautious_lengths == 12)
    assert np.all(cautious_returns <= sample_returns + 1e-5)
    assert np.any(cautious_returns < sample_returns - 1e-3)


def test_trajectory_replays_the_rollout_of_the_same_key():
    dream = _random_dream(horizon=12)
    params = _population(dream, 1)[0]
    key = jax.random.key(9)
    total, length = eqx.filter_jit(dream.rollout)(params, key)
    zs, rewards, alive = eqx.filter_jit(dream.trajectory)(params, key)
    assert zs.shape == (12, Z) and rewards.shape == alive.shape == (12,)
    assert int(alive.sum()) == int(length)
    np.testing.assert_allclose(float(jnp.where(alive, rewards, 0).sum()), float(total),
                               rtol=1e-5)
    _, start_z = dream.sample_start(jax.random.split(key, 4)[0])
    np.testing.assert_array_equal(zs[0], start_z)  # the first frame is the start


def test_dream_frames_show_one_row_per_dream(tmp_path):
    from world_models.evaluation.dream_view import dream_frames, save_blocks
    from world_models.models.vae import ConvVAE

    dream = _random_dream(horizon=12)
    vae = ConvVAE(z_dim=Z, key=jax.random.key(1))
    params = _population(dream, 1)[0]
    image, returns = dream_frames(dream, vae, params, jax.random.key(2), 3, every=5)
    assert image.dtype == np.uint8 and image.shape == (3 * 64, 3 * 64, 3)
    assert returns.shape == (3,) and len(set(returns.tolist())) == 3
    again, _ = dream_frames(dream, vae, params, jax.random.key(2), 3, every=5)
    np.testing.assert_array_equal(image, again)  # pure: same key, same picture
    save_blocks([image, image[:64]], tmp_path / "strip.png")
    from PIL import Image

    assert Image.open(tmp_path / "strip.png").size == (3 * 64, 4 * 64 + 4)


def test_dream_animation_plays_the_strips_dreams_side_by_side():
    from world_models.evaluation.dream_view import dream_animation, dream_frames
    from world_models.models.vae import ConvVAE

    # dreams that last their 12 steps
    dream = dataclasses.replace(_random_dream(horizon=12), done_threshold=1 - 1e-6)
    vae = ConvVAE(z_dim=Z, key=jax.random.key(1))
    params = _population(dream, 1)[0]
    strip, returns = dream_frames(dream, vae, params, jax.random.key(2), 3, every=4)
    assert strip.reshape(3, 64, 3, 64, 3).max(axis=(1, 3, 4)).min() > 0  # none black
    frames, again = dream_animation(
        dream, vae, params, jax.random.key(2), 3, every=4, scale=2
    )
    np.testing.assert_array_equal(returns, again)
    assert len(frames) == 3 and frames[0].shape == (128, 3 * 128, 3)  # steps 0, 4, 8
    for t, frame in enumerate(frames):  # dream r's step 4t, enlarged 2×
        for r in range(3):
            shown = frame[:, r * 128:(r + 1) * 128][::2, ::2]
            np.testing.assert_array_equal(
                shown, strip[r * 64:(r + 1) * 64, t * 64:(t + 1) * 64]
            )
    with pytest.raises(ValueError, match="scale"):
        dream_animation(dream, vae, params, jax.random.key(2), 3, every=4, scale=0)
    # dreams that all end at their first step: the start, one black frame, no more
    ending = dataclasses.replace(dream, done_threshold=1e-6)
    frames, _ = dream_animation(ending, vae, params, jax.random.key(2), 3, every=1)
    assert len(frames) == 2 and frames[0].any() and not frames[1].any()


def test_action_noise_is_the_agents_rule_played_in_the_dream():
    dream = _random_dream()
    noisy = dataclasses.replace(dream, action_noise=0.3)
    action = jnp.array([0.0, 0.5, 0.0])
    assert noisy.explore(action, jax.random.key(0)).shape == (3,)
    np.testing.assert_array_equal(dream.explore(action, jax.random.key(0)), action)
    keys = jax.random.split(jax.random.key(1), 4000)
    played = np.asarray(jax.vmap(noisy.explore, in_axes=(None, 0))(action, keys))
    assert played.min() >= -1 and played.max() <= 1 and played[:, 1:].min() >= 0
    assert played[:, 1].std() == pytest.approx(0.3, rel=0.1)  # gas: rarely clipped
    assert played[:, 2].mean() == pytest.approx(0.3 * 0.3989, rel=0.1)  # half-normal
    assert np.mean(played[:, 2] > 0) == pytest.approx(0.5, abs=0.05)

    # M steps on the noisy action: the dream the controller sees changes, reproducibly
    params, key = _population(dream, 1)[0], jax.random.key(2)
    quiet, loud = dream.trajectory(params, key)[0], noisy.trajectory(params, key)[0]
    np.testing.assert_array_equal(quiet[0], loud[0])  # the same start
    assert not np.allclose(quiet[1:], loud[1:])
    again = eqx.filter_jit(noisy.trajectory)(params, key)[0]
    np.testing.assert_allclose(again, loud, rtol=1e-5, atol=1e-6)


def test_discrete_action_noise_in_the_dream_is_epsilon_random():
    lander = get_spec("LunarLander-v3")
    dream = dataclasses.replace(_random_dream(), spec=lander, action_noise=0.6)
    keys = jax.random.split(jax.random.key(3), 4000)
    played = np.asarray(
        jax.vmap(dream.explore, in_axes=(None, 0))(jnp.int32(2), keys)
    )
    assert played.dtype == np.int32 and set(played.tolist()) == {0, 1, 2, 3}
    # a random pick keeps action 2 a quarter of the time: 0.6 x 3/4 of them change
    assert np.mean(played != 2) == pytest.approx(0.6 * 0.75, abs=0.03)
