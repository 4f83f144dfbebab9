"""MDN-RNN maths: parameter count, mixture density, reward weights, temperature."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from world_models.config import make_config
from world_models.envs import get_spec
from world_models.models.mdnrnn import MDNRNN, action_to_input, rnn_from_config
from world_models.models.mixture import (
    MDNOutput,
    mdn_log_prob,
    mode_next_z,
    pessimistic,
    sample_next_z,
)
from world_models.training.rnn_loss import asymmetric_reward_error, termination_bce


def count_params(module) -> int:
    return sum(x.size for x in jax.tree.leaves(eqx.filter(module, eqx.is_array)))


def random_output(seed: int, z_dim: int = 4, k: int = 3) -> MDNOutput:
    rng = np.random.default_rng(seed)
    return MDNOutput(
        logit_pi=jnp.asarray(rng.normal(size=(z_dim, k)) * 2, jnp.float32),
        mu=jnp.asarray(rng.normal(size=(z_dim, k)) * 3, jnp.float32),
        log_sigma=jnp.asarray(rng.uniform(-1.5, 0.5, size=(z_dim, k)), jnp.float32),
        reward=jnp.float32(0.0),
        done_logit=jnp.float32(0.0),
    )


def test_parameter_count_at_carracing_defaults():
    model = rnn_from_config(make_config("full"), key=jax.random.PRNGKey(0))
    # Paper: 422,368 = LSTM 4*256*(35+256) + 4*256 bias, plus the 256 -> 3*5*32 head.
    # Our reward and done heads add 2*256 weights + 2 biases = 514, and the terminal
    # reward one scalar.
    assert count_params(model) == 422_368 + 514 + 1


def test_mixture_log_prob_matches_scipy():
    out = random_output(0, z_dim=5, k=4)
    z_next = np.random.default_rng(1).normal(size=5) * 2
    got = np.asarray(mdn_log_prob(out, jnp.asarray(z_next, jnp.float32)))
    pi = np.asarray(jax.nn.softmax(out.logit_pi, axis=-1), np.float64)
    mu, sigma = (
        np.asarray(out.mu, np.float64),
        np.exp(np.asarray(out.log_sigma, np.float64)),
    )
    expected = np.log(
        (pi * stats.norm.pdf(z_next[:, None], loc=mu, scale=sigma)).sum(axis=-1)
    )
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_log_sigma_is_clamped():
    model = MDNRNN(
        3, 2, 8, 2, key=jax.random.PRNGKey(0), log_std_min=-0.01, log_std_max=0.01
    )
    _, out = model(jnp.ones((6, 3)) * 50.0, jnp.ones((6, 2)) * 50.0)
    assert float(out.log_sigma.min()) >= -0.01 and float(out.log_sigma.max()) <= 0.01


@pytest.mark.parametrize("optimism", [1.0, 5.0])
def test_over_prediction_costs_optimism_weight_times_under_prediction(optimism):
    truth = jnp.float32(2.0)
    over = asymmetric_reward_error(truth + 0.5, truth, optimism)
    under = asymmetric_reward_error(truth - 0.5, truth, optimism)
    np.testing.assert_allclose(float(under), 0.25, rtol=1e-6)
    np.testing.assert_allclose(float(over), optimism * 0.25, rtol=1e-6)


def test_termination_bce_matches_formula():
    logits = jnp.array([-3.0, 0.0, 2.0])
    target = jnp.array([True, False, True])
    p = 1 / (1 + np.exp(-np.asarray(logits)))
    t = np.asarray(target, np.float64)
    expected = -(t * np.log(p) + (1 - t) * np.log(1 - p))
    np.testing.assert_allclose(
        np.asarray(termination_bce(logits, target)), expected, rtol=1e-5
    )


def test_low_temperature_gives_most_likely_components_mean():
    out = random_output(2)
    mode = np.asarray(mode_next_z(out))
    best = np.argmax(np.asarray(out.logit_pi), axis=-1)
    np.testing.assert_array_equal(mode, np.asarray(out.mu)[np.arange(4), best])
    cold = sample_next_z(out, jax.random.PRNGKey(3), 1e-6)
    np.testing.assert_allclose(np.asarray(cold), mode, atol=1e-2)


def test_unit_temperature_reproduces_mixture_moments():
    out = random_output(4)
    keys = jax.random.split(jax.random.PRNGKey(5), 20_000)
    samples = np.asarray(jax.vmap(lambda k: sample_next_z(out, k, 1.0))(keys))
    pi = np.asarray(jax.nn.softmax(out.logit_pi, axis=-1), np.float64)
    mu, sigma = np.asarray(out.mu, np.float64), np.exp(np.asarray(out.log_sigma))
    mean = (pi * mu).sum(-1)
    var = (pi * (sigma**2 + mu**2)).sum(-1) - mean**2
    std_error = np.sqrt(var / len(keys))
    assert np.all(np.abs(samples.mean(0) - mean) < 5 * std_error)
    np.testing.assert_allclose(samples.var(0), var, rtol=0.05)


def test_temperature_sharpens_logits_and_widens_sigma():
    # One component per dim: sampling at tau is exactly N(mu, sigma^2 tau).
    out = MDNOutput(
        jnp.zeros((2, 1)),
        jnp.array([[1.0], [-2.0]]),
        jnp.log(jnp.array([[0.5], [2.0]])),
        jnp.float32(0),
        jnp.float32(0),
    )
    keys = jax.random.split(jax.random.PRNGKey(0), 20_000)
    samples = np.asarray(jax.vmap(lambda k: sample_next_z(out, k, 2.0))(keys))
    np.testing.assert_allclose(
        samples.std(0), [0.5 * np.sqrt(2), 2.0 * np.sqrt(2)], rtol=0.03
    )


def test_sequence_call_equals_stepping():
    model = MDNRNN(3, 2, 8, 2, key=jax.random.PRNGKey(0))
    zs = jax.random.normal(jax.random.PRNGKey(1), (7, 3))
    actions = jax.random.normal(jax.random.PRNGKey(2), (7, 2))
    final, outs = model(zs, actions)
    state = model.initial_state()
    for t in range(7):
        state, out = model.step(state, zs[t], actions[t])
        np.testing.assert_allclose(
            np.asarray(out.mu), np.asarray(outs.mu[t]), atol=1e-5
        )
        np.testing.assert_allclose(float(out.reward), float(outs.reward[t]), atol=1e-5)
    np.testing.assert_allclose(np.asarray(state[0]), np.asarray(final[0]), atol=1e-5)


def test_open_loop_reads_its_own_draws_from_open_from_on():
    model = MDNRNN(3, 2, 8, 2, key=jax.random.PRNGKey(0), num_heads=2)
    zs = jax.random.normal(jax.random.PRNGKey(1), (7, 3))
    actions = jax.random.normal(jax.random.PRNGKey(2), (7, 2))
    key, temperature, start = jax.random.PRNGKey(3), 0.5, 3
    _, forced = model(zs, actions, all_heads=True)
    closed = model.open_loop(zs, actions, 7, key, temperature)
    for ours, theirs in zip(closed, forced):  # open_from past the end: teacher forcing
        np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), atol=1e-6)
    opened = model.open_loop(zs, actions, start, key, temperature)
    # The same outputs come from teacher forcing on the draws the open loop made:
    # z_t for t >= start is head 0's sample at step t - 1 with key fold_in(key, t - 1).
    inputs = zs
    for t in range(start, 7):
        _, prefix = model(inputs[:t], actions[:t])  # head 0's outputs
        drawn = sample_next_z(
            jax.tree.map(lambda x: x[t - 1], prefix),
            jax.random.fold_in(key, t - 1), temperature,
        )
        inputs = inputs.at[t].set(drawn)
    _, replayed = model(inputs, actions, all_heads=True)
    for ours, theirs in zip(opened, replayed):
        np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), atol=1e-5)
    assert not np.allclose(np.asarray(opened.mu[start:]), np.asarray(forced.mu[start:]))
    np.testing.assert_allclose(
        np.asarray(opened.mu[:start]), np.asarray(forced.mu[:start]), atol=1e-6
    )


def test_action_to_input_one_hot_and_shape_check():
    lander = get_spec("LunarLander-v3")
    np.testing.assert_array_equal(np.asarray(action_to_input(2, lander)), [0, 0, 1, 0])
    assert action_to_input(jnp.array([[0, 3]]), lander).shape == (1, 2, 4)
    car = get_spec("CarRacing-v3")
    assert action_to_input(np.zeros(3), car).dtype == jnp.float32
    with pytest.raises(ValueError, match="CarRacing-v3"):
        action_to_input(np.zeros(4), car)


def test_bad_sizes_raise():
    with pytest.raises(ValueError, match="positive"):
        MDNRNN(0, 3, key=jax.random.PRNGKey(0))


def test_heads_share_the_lstm_and_step_picks_one():
    rnn = MDNRNN(4, 3, 8, 2, key=jax.random.key(0), num_heads=3)
    single = MDNRNN(4, 3, 8, 2, key=jax.random.key(0))
    assert rnn.head.weight.shape[0] == 3 * single.head.weight.shape[0]
    state = rnn.initial_state()
    z, action = jnp.ones(4), jnp.array([0.1, 0.5, 0.0])
    _, heads = rnn.step_heads(state, z, action)
    assert heads.reward.shape == (3,) and heads.mu.shape == (3, 4, 2)
    for member in range(3):
        _, one = rnn.step(state, z, action, member=member)
        np.testing.assert_array_equal(one.mu, heads.mu[member])
    cautious = pessimistic(heads, 1)
    assert float(cautious.reward) == float(heads.reward.min())
    assert float(cautious.done_logit) == float(heads.done_logit.max())
    np.testing.assert_array_equal(cautious.mu, heads.mu[1])
    _, sequence = rnn(jnp.ones((5, 4)), jnp.zeros((5, 3)), all_heads=True)
    assert sequence.reward.shape == (5, 3)
