"""M's training loop on hand-made latents: alignment, overfitting, resume, errors."""

import dataclasses
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from handmade_rnn import counter_rnn

from world_models.checkpoint import CheckpointError
from world_models.config import ConfigError, make_config
from world_models.data.episodes import save_latents
from world_models.data.samplers import SequenceSampler
from world_models.envs import get_spec
from world_models.logs import read_metrics
from world_models.models.mdnrnn import rnn_from_config
from world_models.run_directory import init_run
from world_models.training.fit import TrainingDivergedError
from world_models.training.rnn import load_rnn, train_rnn
from world_models.training.rnn_loss import (
    make_optimizer,
    make_train_step,
    sequence_loss,
    terminal_reward,
)
from world_models.training.rnn_validation import (
    auroc,
    return_calibration,
    termination_metrics,
    validation_metrics,
)

ENV = "CarRacing-v3"


def write_episode(path: Path, seed: int, length: int, z_dim: int) -> None:
    """Random latents and actions; the reward depends only on a_t: r_t = 2 * a_t[0]."""
    rng = np.random.default_rng(seed)
    actions = rng.uniform(-1, 1, size=(length, 3)).astype(np.float32)
    terminated, truncated = np.zeros(length, bool), np.zeros(length, bool)
    terminated[-1] = seed % 2 == 0
    truncated[-1] = not terminated[-1]
    save_latents(
        path,
        dict(
            mu=rng.normal(size=(length + 1, z_dim)).astype(np.float32),
            logvar=np.full((length + 1, z_dim), -4.0, np.float32),
            actions=actions,
            rewards=(2.0 * actions[:, 0]).astype(np.float32),
            terminated=terminated,
            truncated=truncated,
            env_id=ENV,
            policy="brownian",
            seed=seed,
        ),
    )


def make_run(
    tmp_path: Path, *overrides: str, episodes: int = 6, length: int = 30
) -> Path:
    config = make_config("smoke", ENV, ["rnn.val_fraction=0.34", *overrides])
    run = tmp_path / "run"
    init_run(run, config)
    for i in range(episodes):
        write_episode(
            run / "latents" / "round0" / "brownian" / f"ep{i:03d}.npz",
            i,
            length,
            config.vae.z_dim,
        )
    return run


def model_arrays(model):
    return [np.asarray(x) for x in jax.tree.leaves(eqx.filter(model, eqx.is_array))]


def test_reward_of_action_t_is_predicted_at_step_t(tmp_path):
    # r_t = 2 a_t[0] with i.i.d. actions: only a model reading (z_t, a_t) -> r_t
    # can beat the mean predictor; an off-by-one pairing would be at ratio ~1.
    run = make_run(
        tmp_path,
        "rnn.steps=200",
        "rnn.eval_every=200",
        "rnn.checkpoint_every=200",
        "rnn.learning_rate=0.01",
        "rnn.optimism_weight=1.0",
        "rnn.reward_window=1",  # the step's own reward: alignment is what is tested
    )
    metrics = train_rnn(run, progress=False)
    # This tiny M plateaus at a ratio of ~0.1 (0.09-0.13 across samplers and seeds).
    assert metrics["val_reward_mse_ratio"] < 0.2, metrics
    assert abs(metrics["val_reward_bias"]) < 0.2
    for name in ("nll.png", "reward.png", "done.png", "metrics.jsonl"):
        assert (run / "rnn" / name).is_file()


def test_overfits_a_tiny_batch():
    config = make_config("smoke", ENV, ["rnn.learning_rate=0.02"])
    spec = get_spec(ENV)
    rng = np.random.default_rng(0)
    batch = dict(
        mu=jnp.asarray(rng.normal(size=(2, 9, 8)), jnp.float32),
        logvar=jnp.full((2, 9, 8), -12.0),
        actions=jnp.asarray(rng.uniform(-1, 1, size=(2, 8, 3)), jnp.float32),
        # both windows end in a termination paying -3: one terminal reward fits them
        reward_targets=jnp.asarray(rng.normal(size=(2, 8)), jnp.float32)
        .at[:, -1]
        .set(-3.0),
        terminated=jnp.zeros((2, 8), bool).at[:, -1].set(True),
        mask=jnp.ones((2, 8)),
    )
    rnn = config.rnn
    model = rnn_from_config(config, key=jax.random.PRNGKey(0))
    optimizer = make_optimizer(rnn)
    opt_state = optimizer.init(eqx.filter(model, eqx.is_array))
    step = make_train_step(optimizer, rnn, spec)
    history = []
    for i in range(400):
        model, opt_state, metrics = step(model, opt_state, batch, jax.random.PRNGKey(i))
        history.append({k: float(v) for k, v in metrics.items()})
    first, last = history[0], history[-1]
    assert last["nll"] < first["nll"] - 2.0, (first, last)
    assert last["reward_loss"] < 0.05 * first["reward_loss"]
    assert last["done_loss"] < 0.1


def test_each_head_learns_from_its_own_weighting_of_the_windows():
    config = make_config("smoke", ENV, ["rnn.heads=2"])
    rng = np.random.default_rng(4)
    batch = dict(
        mu=jnp.asarray(rng.normal(size=(6, 7, 8)), jnp.float32),
        logvar=jnp.full((6, 7, 8), -3.0),
        actions=jnp.asarray(rng.uniform(-1, 1, size=(6, 6, 3)), jnp.float32),
        reward_targets=jnp.asarray(rng.normal(size=(6, 6)), jnp.float32),
        terminated=jnp.zeros((6, 6), bool),
        mask=jnp.ones((6, 6)),
    )
    model = rnn_from_config(config, key=jax.random.PRNGKey(0))
    width = model.head.weight.shape[0] // 2
    twins = eqx.tree_at(  # both heads start equal: only their weightings differ
        lambda m: (m.head.weight, m.head.bias), model,
        (jnp.tile(model.head.weight[:width], (2, 1)),
         jnp.tile(model.head.bias[:width], 2)),
    )
    grads = eqx.filter_grad(lambda m: sequence_loss(
        m, batch, jax.random.PRNGKey(1), config.rnn, get_spec(ENV))[0])(twins)
    first, second = grads.head.weight[:width], grads.head.weight[width:]
    assert float(jnp.abs(first).sum()) > 0 and float(jnp.abs(second).sum()) > 0
    assert not np.allclose(first, second, rtol=1e-3)


@pytest.mark.parametrize("open_loop_fraction", [0.0, 1.0])
def test_padded_steps_do_not_count(open_loop_fraction):
    config = make_config("smoke", ENV, [f"rnn.open_loop_fraction={open_loop_fraction}"])
    model = rnn_from_config(config, key=jax.random.PRNGKey(0))
    rng = np.random.default_rng(1)
    batch = dict(
        mu=jnp.asarray(rng.normal(size=(1, 6, 8)), jnp.float32),
        logvar=jnp.full((1, 6, 8), -3.0),
        actions=jnp.asarray(rng.normal(size=(1, 5, 3)), jnp.float32),
        reward_targets=jnp.asarray(rng.normal(size=(1, 5)), jnp.float32),
        terminated=jnp.zeros((1, 5), bool),
        mask=jnp.array([[1.0, 1.0, 1.0, 0.0, 0.0]]),
    )
    junk = dict(
        batch,
        reward_targets=batch["reward_targets"].at[0, 3:].set(1e6),
        mu=batch["mu"].at[0, 4:].set(1e3),
        terminated=batch["terminated"].at[0, 3:].set(True),
    )
    key = jax.random.PRNGKey(2)
    clean, _ = sequence_loss(model, batch, key, config.rnn, get_spec(ENV))
    dirty, _ = sequence_loss(model, junk, key, config.rnn, get_spec(ENV))
    np.testing.assert_allclose(float(clean), float(dirty), rtol=1e-6)


def test_interrupted_then_resumed_equals_uninterrupted(tmp_path):
    overrides = ("rnn.steps=12", "rnn.checkpoint_every=4", "rnn.eval_every=6")
    straight = make_run(tmp_path / "a", *overrides)
    train_rnn(straight, progress=False)
    resumed = make_run(tmp_path / "b", *overrides)
    train_rnn(resumed, stop_after=7, progress=False)  # "killed" after step 7: ckpt at 4
    assert [r["step"] for r in read_metrics(resumed / "rnn" / "metrics.jsonl")][-1] == 7
    train_rnn(resumed, progress=False)
    arrays = zip(
        model_arrays(load_rnn(straight)), model_arrays(load_rnn(resumed)), strict=True
    )
    for a, b in arrays:
        np.testing.assert_array_equal(a, b)
    rows_a = read_metrics(straight / "rnn" / "metrics.jsonl")
    rows_b = read_metrics(resumed / "rnn" / "metrics.jsonl")
    assert rows_a == rows_b and len(rows_a) == 12


def test_mismatched_checkpoint_config_raises_and_fresh_starts_over(tmp_path):
    run = make_run(
        tmp_path, "rnn.steps=2", "rnn.checkpoint_every=2", "rnn.eval_every=2"
    )
    train_rnn(run, progress=False)
    init_run(
        run,
        make_config(
            "smoke",
            ENV,
            [
                "rnn.val_fraction=0.34",
                "rnn.steps=2",
                "rnn.checkpoint_every=2",
                "rnn.eval_every=2",
                "rnn.hidden_size=12",
            ],
        ),
        fresh=True,
    )
    with pytest.raises(CheckpointError, match="hidden_size"):
        train_rnn(run, progress=False)
    with pytest.raises(CheckpointError, match="hidden_size"):
        load_rnn(run)
    train_rnn(run, fresh=True, progress=False)
    assert load_rnn(run).hidden_size == 12


def test_divergence_is_reported_with_its_step(tmp_path):
    run = make_run(tmp_path, "rnn.steps=20", "rnn.learning_rate=1e30")
    with pytest.raises(TrainingDivergedError, match=r"diverged at step \d+"):
        train_rnn(run, progress=False)


def test_missing_latents_and_missing_checkpoint_name_the_path(tmp_path):
    run = tmp_path / "empty"
    init_run(run, make_config("smoke", ENV))
    with pytest.raises(FileNotFoundError, match=str(run / "latents")):
        train_rnn(run, progress=False)
    with pytest.raises(CheckpointError, match="no RNN checkpoint"):
        load_rnn(run)


def test_auroc_against_pairwise_definition():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, size=50).astype(float)  # many ties
    labels = rng.random(50) < 0.3
    pos, neg = scores[labels], scores[~labels]
    pairs = (pos[:, None] > neg[None]).mean() + 0.5 * (pos[:, None] == neg[None]).mean()
    assert auroc(scores, labels) == pytest.approx(pairs)
    assert np.isnan(auroc(scores, np.zeros(50, bool)))


def write_threshold_episode(path: Path, seed: int, z_dim: int) -> None:
    """The episode terminates at the step whose z_t[0] > 1 (half of the episodes),
    paying -5 there and 0.1 on every other step; z_t[0] stays in [-1, 0.5] elsewhere,
    and the others end truncated."""
    rng = np.random.default_rng(seed)
    length = int(rng.integers(12, 40))
    mu = rng.normal(size=(length + 1, z_dim)).astype(np.float32)
    mu[:, 0] = rng.uniform(-1.0, 0.5, length + 1)
    terminated = np.zeros(length, bool)
    if seed % 2:
        terminated[-1] = True
        mu[length - 1, 0] = 2.0
    save_latents(
        path,
        dict(
            mu=mu,
            logvar=np.full((length + 1, z_dim), -8.0, np.float32),
            actions=rng.uniform(-1, 1, size=(length, 3)).astype(np.float32),
            rewards=np.where(terminated, -5.0, 0.1).astype(np.float32),
            terminated=terminated,
            truncated=~terminated & (np.arange(length) == length - 1),
            env_id=ENV,
            policy="brownian",
            seed=seed,
        ),
    )


def test_termination_is_learned_from_the_latent_that_causes_it(tmp_path):
    config = make_config(
        "smoke",
        ENV,
        [
            "rnn.val_fraction=0.3",
            "rnn.batch_size=8",
            "rnn.steps=300",
            "rnn.eval_every=300",
            "rnn.checkpoint_every=300",
            "rnn.learning_rate=0.005",
        ],
    )
    run = tmp_path / "run"
    init_run(run, config)
    for seed in range(24):
        write_threshold_episode(
            run / "latents" / "round0" / "brownian" / f"ep{seed:03d}.npz",
            seed,
            config.vae.z_dim,
        )
    metrics = train_rnn(run, progress=False)
    assert metrics["val_done_auroc"] > 0.9, metrics
    assert metrics["val_done_recall"] > 0.5, metrics
    # the -5 of terminating steps is kept apart and leaves the per-step 0.1 alone
    assert float(load_rnn(run).terminal_reward) == pytest.approx(-5.0)
    assert abs(metrics["val_reward_bias"]) < 0.1, metrics


def test_terminal_reward_is_the_asymmetric_loss_minimiser():
    rewards = np.array([-100.0, -100.0, 3.0, -100.0, 2.0])
    value = terminal_reward(rewards, optimism_weight=5.0)
    grid = np.linspace(-101, 4, 20001)
    losses = [np.sum(np.where(g > rewards, 5.0, 1.0) * (g - rewards) ** 2)
              for g in grid]
    assert value == pytest.approx(grid[int(np.argmin(losses))], abs=0.01)
    assert value < rewards.mean()  # pessimistic: below the plain mean
    assert terminal_reward(np.array([]), 5.0) == 0.0


def test_validation_returns_sum_each_episode_across_its_windows(tmp_path):
    # M predicts a reward of 0.5 every step but the terminating one; episodes of
    # 3, 10 and 25 steps span 1, 2 and 4 windows of 8 steps, over batches of 2.
    lengths, rewards = [3, 10, 25], [1.0, -2.0, 0.4]
    paths = []
    for seed, (length, reward) in enumerate(zip(lengths, rewards)):
        paths.append(tmp_path / f"ep{seed}.npz")
        save_latents(
            paths[-1],
            dict(
                mu=np.zeros((length + 1, 4), np.float32),
                logvar=np.zeros((length + 1, 4), np.float32),
                actions=np.zeros((length, 3), np.float32),
                rewards=np.full(length, reward, np.float32),
                terminated=np.arange(length) == length - 1,
                truncated=np.zeros(length, bool),
                env_id=ENV,
                policy="brownian",
                seed=seed,
            ),
        )
    sampler = SequenceSampler(paths, seq_len=8, batch_size=2, seed=0)
    model = counter_rnn(4, 3, done_step=1000, reward=0.5, terminal_reward=-4.0)
    config = make_config("smoke", ENV)
    metrics = validation_metrics(
        model, sampler, get_spec(ENV), jax.random.PRNGKey(0), config.rnn, 0.0
    )
    pred = 0.5 * (np.array(lengths) - 1) - 4.0  # the last step pays the terminal -4
    true = np.array(lengths) * np.array(rewards)  # 3, -20, 10
    assert metrics["val_return_pred_mean"] == pytest.approx(pred.mean(), rel=1e-5)
    assert metrics["val_return_true_mean"] == pytest.approx(true.mean(), rel=1e-5)
    assert metrics["val_return_corr"] == pytest.approx(np.corrcoef(pred, true)[0, 1])
    assert metrics["val_return_ratio"] == pytest.approx(pred.mean() / true.mean())
    assert metrics["val_done_recall"] == 0.0  # never predicts the 3 terminations
    assert np.isnan(metrics["val_done_precision"])


def test_termination_metrics_and_return_calibration_edge_cases():
    probs = np.array([0.9, 0.6, 0.2, 0.7, 0.1])
    labels = np.array([True, False, True, False, False])
    metrics = termination_metrics(probs, labels, pos_weight=4.0)
    assert metrics["val_done_recall"] == 0.5  # 0.9 of the two positives
    assert metrics["val_done_precision"] == pytest.approx(1 / 3)  # 0.9, 0.6, 0.7
    expected = -np.mean(
        [4 * np.log(0.9), np.log(0.4), 4 * np.log(0.2), np.log(0.3), np.log(0.9)]
    )
    assert metrics["val_done_loss"] == pytest.approx(expected, rel=1e-5)
    none = termination_metrics(probs, np.zeros(5, bool), pos_weight=4.0)
    assert np.isnan(none["val_done_recall"]) and np.isnan(none["val_done_auroc"])
    assert none["val_done_precision"] == 0.0
    one = return_calibration(np.array([2.0]), np.array([4.0]))
    assert np.isnan(one["val_return_corr"]) and one["val_return_ratio"] == 0.5
    zero = return_calibration(np.array([1.0, 3.0]), np.array([-1.0, 1.0]))
    assert np.isnan(zero["val_return_ratio"])
    assert zero["val_return_corr"] == pytest.approx(1.0)


def test_terminated_steps_weigh_done_pos_weight_in_the_bce():
    config = make_config("smoke", ENV)
    model = rnn_from_config(config, key=jax.random.PRNGKey(0))
    rng = np.random.default_rng(3)
    batch = dict(
        mu=jnp.asarray(rng.normal(size=(2, 6, 8)), jnp.float32),
        logvar=jnp.full((2, 6, 8), -3.0),
        actions=jnp.asarray(rng.normal(size=(2, 5, 3)), jnp.float32),
        reward_targets=jnp.zeros((2, 5)),
        terminated=jnp.zeros((2, 5), bool).at[0, 4].set(True),
        mask=jnp.ones((2, 5)),
    )
    key, spec = jax.random.PRNGKey(1), get_spec(ENV)
    done = {}
    for weight in (1.0, 2.0, 5.0):
        rnn = dataclasses.replace(config.rnn, done_pos_weight=weight)
        _, metrics = sequence_loss(model, batch, key, rnn, spec)
        done[weight] = float(metrics["done_loss"])
    # done_loss = (negatives' BCE + weight * positive's BCE) / 10 steps
    positive = done[2.0] - done[1.0]
    assert positive > 0
    assert done[5.0] == pytest.approx(done[1.0] + 4 * positive, rel=1e-5)
    with pytest.raises(ConfigError, match="done_pos_weight"):
        make_config("smoke", ENV, ["rnn.done_pos_weight=0"])


def test_open_loop_windows_change_the_loss_and_keep_its_scale():
    config = make_config("smoke", ENV)
    model = rnn_from_config(config, key=jax.random.PRNGKey(0))
    rng = np.random.default_rng(3)
    batch = dict(
        mu=jnp.asarray(rng.normal(size=(4, 9, 8)), jnp.float32),
        logvar=jnp.full((4, 9, 8), -3.0),
        actions=jnp.asarray(rng.uniform(0, 1, size=(4, 8, 3)), jnp.float32),
        reward_targets=jnp.asarray(rng.normal(size=(4, 8)), jnp.float32),
        terminated=jnp.zeros((4, 8), bool),
        mask=jnp.ones((4, 8)),
    )
    key, spec = jax.random.PRNGKey(2), get_spec(ENV)
    losses = {}
    for fraction in (0.0, 1.0):
        rnn = dataclasses.replace(config.rnn, open_loop_fraction=fraction)
        losses[fraction], _ = sequence_loss(model, batch, key, rnn, spec)
    # Step 0 always reads the data, every other step may read M's own draw: the
    # loss moves, but it is the same loss (an untrained M's draws are as good as noise).
    assert float(losses[0.0]) != float(losses[1.0])
    assert np.isfinite(float(losses[1.0]))
    assert float(losses[1.0]) == pytest.approx(float(losses[0.0]), rel=0.5)
    with pytest.raises(ConfigError, match="open_loop_fraction"):
        make_config("smoke", ENV, ["rnn.open_loop_fraction=1.5"])


def test_a_frozen_lstm_keeps_its_weights_while_the_heads_learn(tmp_path):
    overrides = ("rnn.steps=4", "rnn.checkpoint_every=4", "rnn.eval_every=4")
    frozen = make_run(tmp_path / "frozen", *overrides)
    train_rnn(frozen, progress=False)
    before = load_rnn(frozen)
    train_rnn(frozen, total_steps=8, lstm_frozen_after=4, progress=False)
    after = load_rnn(frozen)
    for a, b in zip(model_arrays(before.cell), model_arrays(after.cell), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(before.head.weight, after.head.weight)
    free = make_run(tmp_path / "free", *overrides)
    train_rnn(free, progress=False)
    train_rnn(free, total_steps=8, progress=False)  # the same updates, LSTM free
    assert not np.array_equal(load_rnn(free).cell.weight_hh, after.cell.weight_hh)
