"""Batches for training over episode and latent files: the seeded train/validation
split, V's shuffled frame batches and M's padded windows."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from world_models.data.episodes import (
    FRAME_SHAPE,
    STEP_KEYS,
    EpisodeError,
    episode_length,
    load_episode,
    load_latents,
)


def _unit_hash(parts: tuple[str, ...], seed: int) -> float:
    digest = hashlib.sha256(f"{seed}/{'/'.join(parts)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_by_episode(
    paths: Sequence[str | os.PathLike], val_fraction: float, seed: int
) -> tuple[list[Path], list[Path]]:
    """Split episode files into (train, validation) by a seeded hash of their names.

    Whole episodes go to one side, so validation frames never neighbour training frames.
    The side of an episode depends only on its last three path parts
    (roundK/POLICY/file) and the seed: episodes added in later rounds never move
    earlier ones across, and an episode and its latent file (the mirrored path) land
    on the same side. With at least two episodes and ``val_fraction > 0`` each side
    gets one or more.
    """
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    paths = sorted(Path(p) for p in paths)
    scores = {p: _unit_hash(p.parts[-3:], seed) for p in paths}
    val = [p for p in paths if scores[p] < val_fraction]
    if val_fraction > 0 and len(paths) >= 2:
        by_score = sorted(paths, key=scores.__getitem__)
        if not val:
            val = by_score[:1]
        elif len(val) == len(paths):
            val = by_score[:-1]
    chosen = set(val)
    return [p for p in paths if p not in chosen], sorted(val)


class FrameBatches:
    """Shuffled uint8 frame batches (B, 64, 64, 3) over a set of episode files.

    Memory bound: at most ``max_frames`` frames are held at once (12 KiB each; the
    default 200k is ~2.4 GiB). If the whole dataset fits it is loaded once and every
    epoch is a full shuffle of all frames. Otherwise each epoch visits the episodes in a
    random order, in chunks of whole episodes holding at most ``max_frames`` frames, and
    shuffles within each chunk (every frame is still seen once per epoch).

    ``epoch(i)`` yields one epoch (deterministic in ``seed`` and ``i``); iterating the
    object yields batches forever, epoch after epoch.
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike],
        batch_size: int,
        *,
        seed: int,
        max_frames: int = 200_000,
        drop_last: bool = True,
    ):
        if not paths:
            raise ValueError("FrameBatches needs at least one episode file")
        if batch_size <= 0 or max_frames < batch_size:
            raise ValueError(
                f"need 0 < batch_size <= max_frames, got {batch_size}, {max_frames}"
            )
        self.paths = [Path(p) for p in paths]
        self.batch_size = batch_size
        self.seed = seed
        self.max_frames = max_frames
        self.drop_last = drop_last
        self.frames_per_episode = [episode_length(p) + 1 for p in self.paths]
        self.num_frames = sum(self.frames_per_episode)
        if max(self.frames_per_episode) > max_frames:
            raise ValueError(f"an episode has more than max_frames={max_frames} frames")
        self._cache: np.ndarray | None = None

    def _load(self, indices: Sequence[int]) -> np.ndarray:
        return np.concatenate([load_episode(self.paths[i])["obs"] for i in indices])

    def _chunks(self, rng: np.random.Generator) -> Iterator[np.ndarray]:
        if self.num_frames <= self.max_frames:
            if self._cache is None:
                self._cache = self._load(range(len(self.paths)))
            yield self._cache
            return
        chunk: list[int] = []
        size = 0
        for index in rng.permutation(len(self.paths)):
            if size + self.frames_per_episode[index] > self.max_frames:
                yield self._load(chunk)
                chunk, size = [], 0
            chunk.append(int(index))
            size += self.frames_per_episode[index]
        if chunk:
            yield self._load(chunk)

    def epoch(self, index: int = 0) -> Iterator[np.ndarray]:
        rng = np.random.default_rng([self.seed, index])
        leftover = np.zeros((0, *FRAME_SHAPE), np.uint8)
        for frames in self._chunks(rng):
            frames = np.concatenate([leftover, frames[rng.permutation(len(frames))]])
            full = len(frames) // self.batch_size * self.batch_size
            for start in range(0, full, self.batch_size):
                yield frames[start : start + self.batch_size]
            leftover = frames[full:]
        if len(leftover) and not self.drop_last:
            yield leftover

    def stream(self, start_step: int = 0) -> Iterator[np.ndarray]:
        """Batches epoch after epoch, as if ``start_step`` had already been drawn (a
        resumed training continues the uninterrupted one's stream)."""
        skipped, index = 0, 0
        while True:
            drawn = False
            for batch in self.epoch(index):
                drawn = True
                if skipped < start_step:
                    skipped += 1
                    continue
                yield batch
            if not drawn:
                raise ValueError(
                    f"fewer than batch_size={self.batch_size} frames in "
                    f"{len(self.paths)} episodes"
                )
            index += 1


# ------------------------------------------------------------------------ RNN windows


def forward_mean_rewards(
    rewards: np.ndarray, terminated: np.ndarray, window: int
) -> np.ndarray:
    """Per step t, the mean reward of the steps t .. t+window-1 that go on (fewer at
    the episode's end); a terminating step keeps its own reward.

    CarRacing pays +1000/N on the step a new tile is touched and -0.1 otherwise: a
    spike that M cannot time exactly. Under the asymmetric reward loss the head then
    learns a low expectile of spike-or-nothing, near -0.1 whether the car drives or
    stands. The mean over a few steps says the same per-step worth (the dream sums it
    to nearly the same return) with little noise left for the asymmetry to discount.
    """
    rewards = np.asarray(rewards, np.float64)
    goes_on = ~np.asarray(terminated, bool)
    sums = np.concatenate([[0.0], np.cumsum(np.where(goes_on, rewards, 0.0))])
    counts = np.concatenate([[0.0], np.cumsum(goes_on)])
    steps = np.arange(rewards.size)
    ends = np.minimum(steps + window, rewards.size)
    total, count = sums[ends] - sums[steps], counts[ends] - counts[steps]
    means = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    return np.where(goes_on, means, rewards).astype(np.float32)


class SequenceSampler:
    """Fixed-length windows over latent files for MDN-RNN training, with masks.

    ``sample()`` returns a dict of numpy arrays for a batch of B windows of L steps:

        mu, logvar   float32 (B, L+1, Z)  z_t .. z_{t+L}: inputs and next-step targets
        actions      float32 (B, L, A) | int32 (B, L)   a_t (discrete: index)
        rewards      float32 (B, L)       r_t
        reward_targets float32 (B, L)     what M's reward head learns for step t: the
                                          mean reward of steps t .. t+k-1 (k =
                                          ``reward_window``; see
                                          ``forward_mean_rewards``)
        terminated   bool    (B, L)       terminated_t (predicted from z_t, a_t, h_t)
        truncated    bool    (B, L)
        mask         float32 (B, L)       1 for real steps, 0 for the padding after

    Windows cover every step of every episode equally often in expectation: an episode
    of T steps is drawn with probability proportional to T + L - 1 and a start s
    uniformly in {-(L-1), ..., T-1}; the window holds the steps [max(s, 0), min(s+L, T))
    left-aligned (row 0 is its first real step), zero-padded and masked after them. Each
    step is in exactly L of an episode's T + L - 1 windows, so its first and last steps
    are trained on as often as its middle. A window with s <= 0 starts at the episode's
    true start, where M's state h = 0 matches the agent's reset; the others start
    mid-episode from h = 0, as before.

    ``epoch_batches()`` tiles every episode into consecutive windows (the last one
    padded) covering each step exactly once: use it for a deterministic validation loss.
    Its batches also carry ``episode`` int64 (B,), the index (into ``paths``) of each
    row's episode; the training and loss code ignores that key.
    """

    def __init__(
        self,
        latent_paths: Sequence[str | os.PathLike],
        seq_len: int,
        batch_size: int,
        seed: int,
        reward_window: int = 1,
    ):
        if not latent_paths:
            raise ValueError("SequenceSampler needs at least one latent file")
        if reward_window <= 0:
            raise ValueError(f"reward_window must be > 0, got {reward_window}")
        if seq_len <= 0 or batch_size <= 0:
            raise ValueError(
                f"seq_len and batch_size must be > 0, got {seq_len}, {batch_size}"
            )
        self.paths = [Path(p) for p in latent_paths]
        self.seq_len = seq_len
        self.batch_size = batch_size
        self.episodes = [load_latents(p) for p in self.paths]
        first = self.episodes[0]
        for path, episode in zip(self.paths, self.episodes):
            if (
                episode["mu"].shape[1] != first["mu"].shape[1]
                or episode["actions"].shape[1:] != first["actions"].shape[1:]
                or episode["actions"].dtype != first["actions"].dtype
            ):
                raise EpisodeError(
                    f"{path}: latent or action shape differs from {self.paths[0]}"
                )
        for episode in self.episodes:
            episode["reward_targets"] = forward_mean_rewards(
                episode["rewards"], episode["terminated"], reward_window
            )
        self.z_dim = first["mu"].shape[1]
        self.lengths = np.array([len(e["rewards"]) for e in self.episodes])
        self._seed = seed
        self._rng = np.random.default_rng(seed)

    def _empty(self, batch: int) -> dict[str, np.ndarray]:
        L, actions = self.seq_len, self.episodes[0]["actions"]
        return {
            "mu": np.zeros((batch, L + 1, self.z_dim), np.float32),
            "logvar": np.zeros((batch, L + 1, self.z_dim), np.float32),
            "actions": np.zeros((batch, L, *actions.shape[1:]), actions.dtype),
            "rewards": np.zeros((batch, L), np.float32),
            "reward_targets": np.zeros((batch, L), np.float32),
            "terminated": np.zeros((batch, L), bool),
            "truncated": np.zeros((batch, L), bool),
            "mask": np.zeros((batch, L), np.float32),
        }

    def _fill(
        self, out: dict[str, np.ndarray], row: int, episode: int, start: int, stop: int
    ) -> None:
        """Steps [start, stop) of ``episode`` into rows 0 .. stop - start - 1."""
        data = self.episodes[episode]
        steps = stop - start
        out["mu"][row, : steps + 1] = data["mu"][start : stop + 1]
        out["logvar"][row, : steps + 1] = data["logvar"][start : stop + 1]
        for key in (*STEP_KEYS, "reward_targets"):
            out[key][row, :steps] = data[key][start:stop]
        out["mask"][row, :steps] = 1.0

    def sample(self, step: int | None = None) -> dict[str, np.ndarray]:
        """One random batch (see the class docstring for keys and shapes).

        With ``step``, the batch depends only on (seed, step), so a resumed run draws
        the same batches as an uninterrupted one without replaying the earlier ones.
        """
        rng = self._rng if step is None else np.random.default_rng((self._seed, step))
        out = self._empty(self.batch_size)
        L = self.seq_len
        windows = self.lengths + L - 1
        episodes = rng.choice(
            len(self.episodes), size=self.batch_size, p=windows / windows.sum()
        )
        starts = rng.integers(-(L - 1), self.lengths[episodes])
        for row, (episode, start) in enumerate(zip(episodes, starts)):
            stop = min(int(start) + L, int(self.lengths[episode]))
            self._fill(out, row, int(episode), max(int(start), 0), stop)
        return out

    def epoch_batches(self) -> Iterator[dict[str, np.ndarray]]:
        """Every step of every episode exactly once, in order; the last batch may be
        smaller than batch_size."""
        windows = [
            (e, s)
            for e, length in enumerate(self.lengths)
            for s in range(0, int(length), self.seq_len)
        ]
        for first in range(0, len(windows), self.batch_size):
            chunk = windows[first : first + self.batch_size]
            out = self._empty(len(chunk))
            out["episode"] = np.array([episode for episode, _ in chunk], np.int64)
            for row, (episode, start) in enumerate(chunk):
                stop = min(start + self.seq_len, int(self.lengths[episode]))
                self._fill(out, row, episode, start, stop)
            yield out
