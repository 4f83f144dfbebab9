"""How much of LunarLander's lander a V keeps: on frames of 10 of a run's episodes, the
squared error on the lander's pixels and elsewhere, and the share of frames (with the
lander in view) whose reconstruction shows it in the right place.

uv run python scripts/lander_in_v.py --data RUN --vae RUN_A RUN_B ... [--out FILE]

The lander is told by its colour (blue well above red and green: its purple body); a
reconstruction shows it when at least 3 such pixels appear, half of them on the true
lander's pixels grown by one pixel. docs/worlds.md reports it for the plain loss and
``vae.salient_weight``.
"""

import argparse
import json
from pathlib import Path

import numpy as np

from world_models.data.episodes import list_episodes, load_episode
from world_models.models.vae import frames_to_float
from world_models.training.vae import load_vae

EPISODES = 10  # the run's last episodes, every 5th frame
MIN_PIXELS = 3


def lander_mask(frames: np.ndarray) -> np.ndarray:
    f = frames.astype(np.int16)
    return (f[..., 2] > f[..., 0] + 40) & (f[..., 2] > f[..., 1] + 40)


def grown(mask: np.ndarray) -> np.ndarray:
    out = mask.copy()
    for shift in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        out |= np.roll(mask, shift, axis=(1, 2))
    return out


def reconstruct(run: Path, frames: np.ndarray) -> np.ndarray:
    vae, x = load_vae(run), frames_to_float(frames)
    parts = []
    for start in range(0, len(frames), 256):
        mu, _ = vae.encode_batch(x[start : start + 256])
        parts.append(np.asarray(vae.decode_batch(mu)))
    return np.concatenate(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", type=Path, required=True, help="run with the episodes"
    )
    parser.add_argument("--vae", type=Path, nargs="+", required=True, help="V runs")
    parser.add_argument("--out", type=Path, default=None, help="JSON of the figures")
    args = parser.parse_args()
    paths = list_episodes(args.data / "data")[-4 * EPISODES :: 4]
    frames = np.concatenate([load_episode(p)["obs"][::5] for p in paths])
    truth = lander_mask(frames)
    in_view = truth.sum((1, 2)) >= MIN_PIXELS
    rows = {}
    for run in args.vae:
        recon = reconstruct(run, frames)
        error = ((recon - np.asarray(frames_to_float(frames))) ** 2).sum(-1)
        shown = lander_mask((recon * 255).round().astype(np.uint8))
        count = shown.sum((1, 2))
        placed = (shown & grown(truth)).sum((1, 2)) >= 0.5 * count
        kept = (count >= MIN_PIXELS) & placed
        rows[str(run)] = {
            "frames_with_lander": int(in_view.sum()),
            "lander_pixel_error": float(error[truth].mean()),
            "other_pixel_error": float(error[~truth].mean()),
            "lander_kept": float(kept[in_view].mean()),
        }
        print(run, rows[str(run)])
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
