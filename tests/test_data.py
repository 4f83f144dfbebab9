import os
import subprocess
import sys
import time

import numpy as np
import pytest

from world_models.data.episodes import (
    EpisodeError,
    list_episodes,
    load_episode,
    load_latents,
    save_episode,
    save_latents,
)
from world_models.data.samplers import (
    FrameBatches,
    SequenceSampler,
    forward_mean_rewards,
    split_by_episode,
)


def make_episode(length=5, discrete=False, seed=0, first_frame_id=0):
    rng = np.random.default_rng(seed)
    obs = rng.integers(0, 256, (length + 1, 64, 64, 3), dtype=np.uint8)
    obs[:, 0, 0, 0] = (first_frame_id + np.arange(length + 1)) % 256
    obs[:, 0, 0, 1] = (first_frame_id + np.arange(length + 1)) // 256
    actions = (
        rng.integers(0, 4, length).astype(np.int32)
        if discrete
        else rng.uniform(-1, 1, (length, 3)).astype(np.float32)
    )
    truncated = np.zeros(length, bool)
    truncated[-1] = True
    return {
        "obs": obs,
        "actions": actions,
        "rewards": rng.normal(size=length).astype(np.float32),
        "terminated": np.zeros(length, bool),
        "truncated": truncated,
        "env_id": "LunarLander-v3" if discrete else "CarRacing-v3",
        "policy": "brownian",
        "seed": seed,
    }


def make_latents(length, z_dim=4, seed=0):
    episode = make_episode(length, seed=seed)
    del episode["obs"]
    steps = np.arange(length + 1, dtype=np.float32)
    episode["mu"] = np.repeat(steps[:, None], z_dim, axis=1) + 1000 * seed
    episode["logvar"] = -episode["mu"]
    episode["rewards"] = np.arange(length, dtype=np.float32) + 1000 * seed
    return episode


@pytest.mark.parametrize("discrete", [False, True])
def test_episode_round_trip(tmp_path, discrete):
    episode = make_episode(7, discrete=discrete)
    path = tmp_path / "ep_000000.npz"
    save_episode(path, episode)
    loaded = load_episode(path)
    assert set(loaded) == set(episode)
    for key, value in episode.items():
        np.testing.assert_array_equal(loaded[key], np.asarray(value))
        assert loaded[key].dtype == np.asarray(value).dtype or key in ("env_id", "seed")
    assert str(loaded["env_id"]) == episode["env_id"] and int(loaded["seed"]) == 0
    with np.load(path, allow_pickle=False) as archive:
        assert set(archive.files) == set(episode)


def test_latents_round_trip(tmp_path):
    latents = make_latents(6)
    save_latents(tmp_path / "l.npz", latents)
    loaded = load_latents(tmp_path / "l.npz")
    np.testing.assert_array_equal(loaded["mu"], latents["mu"])
    np.testing.assert_array_equal(loaded["actions"], latents["actions"])
    with pytest.raises(EpisodeError, match="mu"):
        save_latents(tmp_path / "bad.npz", {**latents, "mu": latents["mu"][:-1]})
    assert not (tmp_path / "bad.npz").exists()


def test_exception_during_write_leaves_no_file(tmp_path, monkeypatch):
    real_write, calls = np.lib.format.write_array, []

    def failing_write(*args, **kwargs):  # a disk error after the first member
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full")
        real_write(*args, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array", failing_write)
    with pytest.raises(OSError, match="disk full"):
        save_episode(tmp_path / "ep.npz", make_episode(3))
    assert len(calls) == 2 and list(tmp_path.iterdir()) == []
    with pytest.raises(
        EpisodeError, match="ep2.npz"
    ):  # invalid: refused before writing
        save_episode(tmp_path / "ep2.npz", {**make_episode(3), "rewards": np.zeros(2)})
    assert list(tmp_path.iterdir()) == []


KILLED_WRITER = """
import sys, numpy as np
from world_models.data.episodes import save_episode
sys.path.insert(0, sys.argv[2])
from test_data import make_episode
episode = make_episode(1500)  # random frames: incompressible, slow to write
while True:
    save_episode(sys.argv[1], episode)
"""


def test_killed_writer_leaves_no_file(tmp_path):
    target = tmp_path / "ep_000000.npz"
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(target), os.path.dirname(__file__)]
    )
    try:
        deadline = time.time() + 60
        while not any(p.name.startswith(".") for p in tmp_path.iterdir()):
            assert time.time() < deadline and process.poll() is None
            time.sleep(0.01)
    finally:
        process.kill()
        process.wait()
    assert not target.exists()
    assert list_episodes(tmp_path) == []


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda e: e.update(obs=e["obs"][:, :32]), "obs must be uint8"),
        (lambda e: e.update(obs=e["obs"][:-1]), "obs must be uint8"),
        (lambda e: e.update(obs=e["obs"].astype(np.float32)), "obs must be uint8"),
        (lambda e: e.update(actions=e["actions"][:, :2]), r"actions must be \(T, 3\)"),
        (lambda e: e.update(rewards=e["rewards"][:-1]), "terminated must be"),
        (lambda e: e.update(rewards=np.full(5, np.nan, np.float32)), "NaN"),
        (lambda e: e.update(terminated=np.ones(5, bool)), "before the last step"),
        (lambda e: e.update(truncated=np.zeros(5, bool)), "neither terminated"),
        (lambda e: e.pop("seed"), "missing keys"),
    ],
)
def test_misshaped_files_are_refused_naming_the_file(tmp_path, change, message):
    episode = make_episode(5)
    change(episode)
    path = tmp_path / "ep_bad.npz"
    np.savez(path, **episode)
    with pytest.raises(EpisodeError, match=message) as error:
        load_episode(path)
    assert str(path) in str(error.value)


def test_corrupt_and_truncated_files_are_refused(tmp_path):
    good = tmp_path / "good.npz"
    save_episode(good, make_episode(20))
    data = good.read_bytes()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data[: len(data) // 2])
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(data[:100] + bytes(len(data) - 200) + data[-100:])
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not an npz file at all")
    for path in (truncated, corrupt, garbage, tmp_path / "missing.npz"):
        with pytest.raises(EpisodeError) as error:
            load_episode(path)
        assert str(path) in str(error.value)


def test_list_episodes_recursive_sorted_skips_temp(tmp_path):
    for name in ("b/ep_000002.npz", "a/ep_000001.npz", "a/.ep_000003.npz.tmp-12"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert list_episodes(tmp_path) == [
        tmp_path / "a/ep_000001.npz",
        tmp_path / "b/ep_000002.npz",
    ]
    with pytest.raises(FileNotFoundError, match="nowhere"):
        list_episodes(tmp_path / "nowhere")


def _write_frame_dataset(folder, lengths):
    paths, first = [], 0
    for index, length in enumerate(lengths):
        path = folder / f"ep_{index:06d}.npz"
        save_episode(path, make_episode(length, seed=index, first_frame_id=first))
        first += length + 1
        paths.append(path)
    return paths, first


def _frame_ids(batch):
    return batch[:, 0, 0, 0].astype(int) + 256 * batch[:, 0, 0, 1].astype(int)


@pytest.mark.parametrize("max_frames", [1000, 12])  # all in memory / chunked by episode
def test_frame_batches_cover_every_frame_once(tmp_path, max_frames):
    paths, total = _write_frame_dataset(tmp_path, [3, 9, 5, 6])
    loader = FrameBatches(
        paths, batch_size=4, seed=1, max_frames=max_frames, drop_last=False
    )
    batches = list(loader.epoch(0))
    assert all(b.dtype == np.uint8 and b.shape[1:] == (64, 64, 3) for b in batches)
    ids = np.concatenate([_frame_ids(b) for b in batches])
    assert sorted(ids) == list(range(total))
    assert list(ids) != list(range(total))  # shuffled
    again = np.concatenate([_frame_ids(b) for b in loader.epoch(0)])
    np.testing.assert_array_equal(ids, again)  # deterministic per (seed, epoch)
    other = np.concatenate([_frame_ids(b) for b in loader.epoch(1)])
    assert list(other) != list(ids)
    stream = loader.stream()
    assert all(next(stream).shape[0] <= 4 for _ in range(20))  # runs past one epoch
    resumed = loader.stream(start_step=7)  # where a stream killed after 7 batches was
    fresh = loader.stream()
    for _ in range(7):
        next(fresh)
    for _ in range(10):
        np.testing.assert_array_equal(next(resumed), next(fresh))


def test_split_by_episode(tmp_path):
    paths = [tmp_path / "round0" / "brownian" / f"ep_{i:06d}.npz" for i in range(1000)]
    train, val = split_by_episode(paths, 0.2, seed=0)
    assert 150 < len(val) < 250 and len(train) + len(val) == 1000
    assert not set(train) & set(val)
    assert split_by_episode(paths, 0.2, seed=0) == (train, val)
    assert split_by_episode(paths, 0.2, seed=1) != (train, val)
    # More data (a later round) never moves an episode to the other side.
    more = paths + [tmp_path / "round1" / "on_policy" / f"ep_{i:06d}.npz"
                    for i in range(50)]
    assert set(val) <= set(split_by_episode(more, 0.2, seed=0)[1])
    # An episode and its mirrored latent file land on the same side.
    mirrored = [tmp_path / "latents" / p.relative_to(tmp_path) for p in paths]
    assert [p.name for p in split_by_episode(mirrored, 0.2, seed=0)[1]] == [
        p.name for p in val]
    assert split_by_episode(paths[:2], 0.01, seed=0)[1] != []
    assert split_by_episode(paths[:2], 0.99, seed=0)[0] != []


def _write_latent_files(folder, lengths):
    paths = []
    for seed, length in enumerate(lengths):
        paths.append(folder / f"l{seed}.npz")
        save_latents(paths[-1], make_latents(length, seed=seed))
    return paths


def test_sequence_sampler_windows_of_episodes_of_different_lengths(tmp_path):
    lengths = [3, 10, 25]
    paths = _write_latent_files(tmp_path, lengths)
    sampler = SequenceSampler(paths, seq_len=8, batch_size=64, seed=0)
    batch = sampler.sample()
    assert batch["mu"].shape == (64, 9, 4) and batch["logvar"].shape == (64, 9, 4)
    assert batch["actions"].shape == (64, 8, 3) and batch["mask"].shape == (64, 8)
    episode_of_row = (batch["rewards"][:, 0] // 1000).astype(int)
    assert set(episode_of_row) == {0, 1, 2}
    starts, partial_long = [], 0
    for row, episode in enumerate(episode_of_row):
        start = int(batch["rewards"][row, 0]) - 1000 * episode
        steps = int(batch["mask"][row].sum())
        assert steps >= 1
        np.testing.assert_array_equal(batch["mask"][row, :steps], 1.0)  # left-aligned
        np.testing.assert_array_equal(
            batch["mu"][row, : steps + 1, 0],
            np.arange(start, start + steps + 1) + 1000 * episode,
        )
        assert not batch["mu"][row, steps + 1 :].any()
        assert not batch["rewards"][row, steps:].any()
        # A window shorter than L either starts at the episode's first step or ends
        # at its last one.
        assert steps == 8 or start == 0 or start + steps == lengths[episode]
        starts.append(start)
        partial_long += episode == 2 and steps < 8
    assert 0 in starts and partial_long > 0  # true starts and padded long windows
    again = SequenceSampler(paths, seq_len=8, batch_size=64, seed=0)
    for key, value in sampler.sample(17).items():  # (seed, step) alone decide
        np.testing.assert_array_equal(value, again.sample(17)[key])

    windows = list(SequenceSampler(paths, 8, 2, seed=0).epoch_batches())
    assert sum(w["mask"].sum() for w in windows) == sum(lengths)
    episodes = np.concatenate([w["episode"] for w in windows])
    first_codes = np.concatenate([w["rewards"][:, 0] for w in windows]) // 1000
    np.testing.assert_array_equal(episodes, first_codes)
    np.testing.assert_array_equal(episodes, [0, 1, 1, 2, 2, 2, 2])

def test_sequence_sampler_covers_every_step_equally_often(tmp_path):
    # Episodes shorter and longer than L; rewards encode (episode, step) as in
    # make_latents. The old sampler (start uniform in [0, T - L]) saw the first and
    # last steps of long episodes several times less often than their middle.
    lengths, seq_len = [4, 9, 23, 47], 10
    sampler = SequenceSampler(
        _write_latent_files(tmp_path, lengths), seq_len, batch_size=256, seed=3
    )
    counts = [np.zeros(length) for length in lengths]
    for step in range(60):
        batch = sampler.sample(step)
        real = batch["mask"] > 0
        codes = batch["rewards"][real].astype(int)
        for episode, length in enumerate(lengths):
            mine = codes[(codes >= 1000 * episode) & (codes < 1000 * episode + 1000)]
            counts[episode] += np.bincount(mine - 1000 * episode, minlength=length)
    every = np.concatenate(counts)
    assert every.min() > 0
    np.testing.assert_allclose(every / every.mean(), 1.0, atol=0.15)
    for count in counts:  # ends and middle alike
        middle = count[len(count) // 2]
        assert 0.85 < count[0] / middle < 1.15 and 0.85 < count[-1] / middle < 1.15


def test_forward_mean_rewards_by_hand():
    rewards = np.array([3.0, 0.0, 0.0, 6.0, 0.0, -100.0], np.float32)
    terminated = np.array([0, 0, 0, 0, 0, 1], bool)
    # window 3: means over steps t..t+2 that go on; the terminal step keeps its -100
    # and is kept out of its predecessors' means
    np.testing.assert_allclose(
        forward_mean_rewards(rewards, terminated, 3),
        [1.0, 2.0, 2.0, 3.0, 0.0, -100.0],
    )
    np.testing.assert_array_equal(forward_mean_rewards(rewards, terminated, 1), rewards)
    no_end = np.zeros(6, bool)
    np.testing.assert_allclose(
        forward_mean_rewards(rewards, no_end, 2), [1.5, 0.0, 3.0, 3.0, -50.0, -100.0]
    )


def test_sequence_sampler_windows_carry_the_reward_targets(tmp_path):
    lengths = [7, 30]
    paths = _write_latent_files(tmp_path, lengths)
    sampler = SequenceSampler(paths, 8, 16, seed=0, reward_window=4)
    batch = sampler.sample(0)
    for row in range(16):
        episode = int(batch["rewards"][row, 0] // 1000)
        start = int(batch["rewards"][row, 0]) - 1000 * episode
        steps = int(batch["mask"][row].sum())
        rewards = np.arange(lengths[episode], dtype=np.float32) + 1000 * episode
        expected = forward_mean_rewards(rewards, np.zeros(len(rewards), bool), 4)
        np.testing.assert_allclose(
            batch["reward_targets"][row, :steps], expected[start : start + steps]
        )
        assert not batch["reward_targets"][row, steps:].any()
    with pytest.raises(ValueError, match="reward_window"):
        SequenceSampler(paths, 8, 16, seed=0, reward_window=0)
