import json
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from world_models.config import make_config
from world_models.data.episodes import save_episode, save_latents
from world_models.evaluation.latent_error import (
    latent_batch_mse,
    latent_error,
    latent_error_statistics,
)
from world_models.evaluation.open_loop import choose_windows, open_loop_latents
from world_models.evaluation.pixel_error import pixel_error
from world_models.evaluation.prediction_record import (
    PICKLE_KEYS,
    copy_last_frame,
    mse_per_horizon,
    prediction_record,
    save_record,
    to_gray84,
)
from world_models.evaluation.safe_pickle import safe_load_pickle
from world_models.models.mdnrnn import MDNRNN
from world_models.models.mixture import mode_next_z, sample_next_z
from world_models.models.vae import ConvVAE


def gray_rgb(values):
    """RGB frames (len(values), 64, 64, 3) whose every pixel is (v, v, v)."""
    values = np.asarray(values, np.uint8)
    return np.broadcast_to(values[:, None, None, None], (len(values), 64, 64, 3)).copy()


def test_gray84_matches_pil_and_keeps_leading_axes():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, 3, 64, 64, 3), dtype=np.uint8)
    gray = to_gray84(frames)
    assert gray.shape == (2, 3, 84, 84) and gray.dtype == np.uint8
    expected = np.asarray(
        Image.fromarray(frames[1, 2]).convert("L").resize((84, 84), Image.BILINEAR)
    )
    np.testing.assert_array_equal(gray[1, 2], expected)
    with pytest.raises(ValueError, match="uint8 RGB"):
        to_gray84(frames.astype(np.float32))


def test_identical_frames_give_zero_mse():
    frames = to_gray84(
        np.random.default_rng(1).integers(0, 256, (3, 5, 64, 64, 3), dtype=np.uint8)
    )
    np.testing.assert_array_equal(mse_per_horizon(frames, frames.copy()), np.zeros(5))


def test_mse_bookkeeping_index_zero_is_the_start_frame():
    real = np.zeros((2, 4, 84, 84), np.uint8)
    predicted = real.copy()
    predicted[0, 2] = 10  # only sequence 0, horizon 2 is wrong, by 10 everywhere
    mse = mse_per_horizon(real, predicted)
    np.testing.assert_allclose(mse, [0, 0, 50.0, 0])  # (10**2 + 0) / 2 sequences


def test_copy_baseline_matches_a_hand_computation():
    values = np.array([0, 10, 30, 60, 100, 150], np.uint8)  # gray level of frame t
    episode = gray_rgb(values)
    starts, horizon = [0, 2], 3
    real = to_gray84(np.stack([episode[s : s + horizon + 1] for s in starts]))
    mse = mse_per_horizon(real, copy_last_frame(real))
    # horizon k: mean over starts of (v[s+k] - v[s])**2
    hand = [
        np.mean([(int(values[s + k]) - int(values[s])) ** 2 for s in starts])
        for k in range(horizon + 1)
    ]
    assert hand == [0.0, (100 + 900) / 2, (900 + 4900) / 2, (3600 + 14400) / 2]
    np.testing.assert_allclose(mse, hand)


def test_record_keys_shapes_dtypes_and_files(tmp_path):
    rng = np.random.default_rng(2)
    real = rng.integers(0, 256, (3, 6, 84, 84), dtype=np.uint8)
    record = prediction_record([4, 9, 1], real, copy_last_frame(real))
    save_record(record, tmp_path / "model")
    loaded = safe_load_pickle(tmp_path / "model.pkl")
    assert tuple(loaded) == PICKLE_KEYS
    assert loaded["all_real_frames"].shape == (3, 6, 84, 84)
    assert loaded["all_predicted_frames"].shape == (3, 6, 84, 84)
    assert (
        loaded["all_real_frames"].dtype
        == loaded["all_predicted_frames"].dtype
        == np.uint8
    )
    assert isinstance(loaded["mse_per_horizon_pixels"], list)
    assert len(loaded["mse_per_horizon_pixels"]) == 6
    assert loaded["mse_per_horizon_pixels"][0] == 0.0
    assert loaded["start_indices"] == [4, 9, 1]
    assert loaded["sequence_length"] == 5 and loaded["num_sequences"] == 3
    with np.load(tmp_path / "model.npz") as npz:
        assert sorted(npz.files) == sorted(PICKLE_KEYS)
        np.testing.assert_array_equal(npz["all_real_frames"], real)
    with pytest.raises(ValueError, match="start indices"):
        prediction_record([1], real, real)


def test_windows_are_seeded_distinct_and_in_range():
    windows = choose_windows([10, 3, 25], count=12, span=4, first=2, seed=5)
    assert windows == choose_windows([10, 3, 25], count=12, span=4, first=2, seed=5)
    assert len(set(windows)) == 12
    assert all(e != 1 and 2 <= s and s + 4 <= [10, 3, 25][e] for e, s in windows)
    with pytest.raises(ValueError, match="long enough"):
        choose_windows([3], count=1, span=4, first=0, seed=0)


def tiny_rnn(z_dim=4, actions=3):
    return MDNRNN(z_dim, actions, hidden_size=8, num_mixtures=2, key=jax.random.key(0))


def test_open_loop_feeds_back_its_own_prediction():
    rnn = tiny_rnn()
    rng = np.random.default_rng(3)
    warm_zs, warm_actions = rng.normal(size=(2, 4)), rng.normal(size=(2, 3))
    z0, actions = rng.normal(size=4), rng.normal(size=(5, 3))
    key = jax.random.key(1)
    for temperature in (None, 0.7):
        zs = open_loop_latents(
            rnn,
            jnp.asarray(warm_zs),
            jnp.asarray(warm_actions),
            jnp.asarray(z0),
            jnp.asarray(actions),
            key=key,
            temperature=temperature,
        )
        state = rnn.initial_state()
        for z, a in zip(warm_zs, warm_actions):
            state, _ = rnn.step(state, jnp.asarray(z), jnp.asarray(a))
        z, keys = jnp.asarray(z0), jax.random.split(key, 5)
        for t in range(5):
            state, out = rnn.step(state, z, jnp.asarray(actions[t]))
            z = (
                mode_next_z(out)
                if temperature is None
                else sample_next_z(out, keys[t], temperature)
            )
            np.testing.assert_allclose(zs[t], z, rtol=1e-5, atol=1e-6)


def synthetic_latents(length, z_dim, seed):
    rng = np.random.default_rng(seed)
    done = np.zeros(length, bool)
    done[-1] = True
    return {
        "mu": rng.normal(size=(length + 1, z_dim)).astype(np.float32),
        "logvar": np.zeros((length + 1, z_dim), np.float32),
        "actions": rng.uniform(-1, 1, (length, 3)).astype(np.float32),
        "rewards": np.zeros(length, np.float32),
        "terminated": np.zeros(length, bool),
        "truncated": done,
        "env_id": "CarRacing-v3",
        "policy": "brownian",
        "seed": seed,
    }


def test_latent_statistics_on_a_tiny_model(tmp_path):
    rnn, config = tiny_rnn(), make_config("smoke")
    paths = []
    for index, length in enumerate([12, 9]):
        paths.append(tmp_path / f"ep{index}.npz")
        save_latents(paths[-1], synthetic_latents(length, 4, index))
    stats = latent_error(
        rnn, config, paths, horizon=3, batch_size=4, max_batches=3, warmup=1, seed=0
    )
    assert stats["num_batches"] == 3 and stats["horizon"] == 3
    assert stats["num_episodes"] == 2 and stats["num_windows"] == 9 + 6
    assert len(stats["mse_per_timestep"]) == 3
    assert stats["mse_min"] <= stats["mse_average"] <= stats["mse_max"]
    assert stats == latent_error(
        rnn, config, paths, horizon=3, batch_size=4, max_batches=3, warmup=1, seed=0
    )
    json.dumps(stats)

    # one batch by hand: mode rollout from mu[s] against mu[s+1..s+3]
    episodes = [synthetic_latents(12, 4, 0), synthetic_latents(9, 4, 1)]
    windows = [(0, 1), (1, 5)]
    mus = [e["mu"] for e in episodes]
    actions = [e["actions"] for e in episodes]
    mse = latent_batch_mse(rnn, mus, actions, windows, 3, 1, jax.random.key(0), None)
    errors = []
    for e, s in windows:
        state, _ = rnn.step(
            rnn.initial_state(),
            jnp.asarray(mus[e][s - 1]),
            jnp.asarray(actions[e][s - 1]),
        )
        z, row = jnp.asarray(mus[e][s]), []
        for t in range(3):
            state, out = rnn.step(state, z, jnp.asarray(actions[e][s + t]))
            z = mode_next_z(out)
            row.append(float(jnp.mean((z - mus[e][s + t + 1]) ** 2)))
        errors.append(row)
    np.testing.assert_allclose(mse, np.mean(errors, axis=0), rtol=1e-5)

    stats = latent_error_statistics(np.array([[1.0, 2.0], [3.0, 6.0]]))
    assert stats["mse_per_timestep"] == [2.0, 4.0]
    assert stats["mse_average"] == 3.0 and stats["mse_std"] == 1.5
    assert (stats["mse_min"], stats["mse_max"]) == (1.5, 4.5)


def synthetic_episode(length, seed):
    rng = np.random.default_rng(seed)
    done = np.zeros(length, bool)
    done[-1] = True
    return {
        "obs": rng.integers(0, 256, (length + 1, 64, 64, 3), dtype=np.uint8),
        "actions": rng.uniform(-1, 1, (length, 3)).astype(np.float32),
        "rewards": np.zeros(length, np.float32),
        "terminated": np.zeros(length, bool),
        "truncated": done,
        "env_id": "CarRacing-v3",
        "policy": "brownian",
        "seed": seed,
    }


def test_pixel_protocol_end_to_end_on_tiny_models(tmp_path):
    config = make_config("smoke")
    vae = ConvVAE(z_dim=4, key=jax.random.key(1))
    rnn = tiny_rnn()
    paths = []
    for index, length in enumerate([8, 6]):
        paths.append(tmp_path / "data" / f"ep{index}.npz")
        save_episode(paths[-1], synthetic_episode(length, index))
    out = tmp_path / "out"
    summary = pixel_error(
        vae,
        rnn,
        config,
        paths,
        out,
        num_sequences=3,
        horizon=3,
        warmup=1,
        temperature=0.5,
        seed=0,
        plots=True,
    )
    records = {
        name: safe_load_pickle(out / f"{name}.pkl")
        for name in ("model_mode", "model_sampled", "copy_baseline", "vae_floor")
    }
    episodes = [np.load(p)["obs"] for p in paths]
    for record in records.values():
        assert tuple(record) == PICKLE_KEYS and record["num_sequences"] == 3
        assert record["all_predicted_frames"].shape == (3, 4, 84, 84)
    mode = records["model_mode"]
    for index, sequence in enumerate(summary["sequences"]):
        episode = episodes[paths.index(type(paths[0])(sequence["episode"]))]
        start = sequence["start"]
        assert start == mode["start_indices"][index] and start >= 1
        np.testing.assert_array_equal(
            mode["all_real_frames"][index], to_gray84(episode[start : start + 4])
        )
    # index 0: the model's "prediction" is V's reconstruction of the start frame
    np.testing.assert_array_equal(
        mode["all_predicted_frames"][:, 0],
        records["vae_floor"]["all_predicted_frames"][:, 0],
    )
    assert records["copy_baseline"]["mse_per_horizon_pixels"][0] == 0.0
    assert (
        summary["mse_per_horizon_pixels"]["model_mode"]
        == mode["mse_per_horizon_pixels"]
    )
    assert summary["temperature"] == 0.5
    assert (out / "summary.md").read_text().startswith("| horizon |")
    assert (out / "sequence_02.png").stat().st_size > 5000
    assert (out / "mse_per_horizon.png").stat().st_size > 5000
    with open(out / "model_sampled.pkl", "rb") as handle:
        assert set(pickle.load(handle)) == set(PICKLE_KEYS)


def test_held_out_episodes_are_ms_validation_split(tmp_path):
    from world_models.data.samplers import split_by_episode
    from world_models.evaluation.open_loop import held_out_paths

    config = make_config("smoke", overrides=["rnn.val_fraction=0.3"])
    for kind in ("data", "latents"):
        for index in range(10):
            path = tmp_path / kind / "round0" / "brownian" / f"ep{index:03d}.npz"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
    _, expected = split_by_episode(
        sorted((tmp_path / "latents").rglob("*.npz")), 0.3, 0
    )
    latent = held_out_paths(tmp_path, config, "latents")
    data = held_out_paths(tmp_path, config, "data")
    assert latent == expected and len(data) == 3
    assert [p.relative_to(tmp_path / "data") for p in data] == [
        p.relative_to(tmp_path / "latents") for p in latent
    ]
    data[0].unlink()
    with pytest.raises(FileNotFoundError, match=data[0].name):
        held_out_paths(tmp_path, config, "data")
