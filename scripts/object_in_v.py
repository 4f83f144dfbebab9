"""How much of a small object a V keeps (LunarLander's lander, Pong's ball and the
agent's paddle, Breakout's ball and paddle): on frames of 10 of a run's episodes, the
squared error on the object's pixels and elsewhere, and the share of frames (with the
object in view) whose reconstruction shows it in the right place, and how much of z
comes from the frame at all (``frame_signal``: the variance of V's mean across the
frames over that plus the mean posterior variance, averaged over z's dimensions; near
0, every frame gets the same z and V's samples are noise).

uv run python scripts/object_in_v.py --data RUN --vae RUN_A RUN_B ...
    [--object lander|pong_ball|pong_paddle|breakout_ball|breakout_paddle] [--out FILE]

The lander is told by its colour (blue well above red and green: its purple body);
Pong's ball by differing from the field's brown between the two paddles' columns (the
only thing there that moves); the agent's paddle by its green; Breakout's ball by
being drawn (not black) between the bricks and the paddle's rows, its paddle by being
drawn in those rows. A reconstruction shows the object when at least ``min_pixels``
such pixels appear, half of them on the true object's pixels grown by one pixel.
docs/worlds.md reports it.
"""

import argparse
import json
from pathlib import Path

import numpy as np

from world_models.data.episodes import list_episodes, load_episode
from world_models.models.vae import frames_to_float
from world_models.training.vae import load_vae

EPISODES = 10  # the run's last episodes, every 5th frame
PONG_FIELD_COLOUR = np.array([144, 72, 17])  # the field's brown, 64 x 64 frames
PONG_BETWEEN_PADDLES = slice(9, 55)  # columns of the 64 x 64 frame
# Breakout's 64 x 64 frame: walls in columns 0-3 and 60-63, bricks in rows 9-23, the
# paddle in rows 61-62; between bricks and paddle only the ball is drawn
BREAKOUT_INSIDE_WALLS = slice(4, 60)
BREAKOUT_BELOW_BRICKS = slice(24, 61)
BREAKOUT_PADDLE_ROWS = slice(61, 63)
BREAKOUT_LIT = 60  # a channel above this is drawn, below it is the black background


COLOUR_MARGIN = 40  # how far one channel stands above the other two


def dominant_channel_mask(frames: np.ndarray, channel: int) -> np.ndarray:
    f = frames.astype(np.int16)
    others = [f[..., c] for c in range(3) if c != channel]
    return f[..., channel] > np.maximum(*others) + COLOUR_MARGIN


def lander_mask(frames: np.ndarray) -> np.ndarray:
    return dominant_channel_mask(frames, 2)  # its purple body: blue


def pong_paddle_mask(frames: np.ndarray) -> np.ndarray:
    return dominant_channel_mask(frames, 1)  # green


def pong_ball_mask(frames: np.ndarray) -> np.ndarray:
    away = np.abs(frames.astype(np.int16) - PONG_FIELD_COLOUR).max(-1) > 25
    mask = np.zeros_like(away)
    mask[:, :, PONG_BETWEEN_PADDLES] = away[:, :, PONG_BETWEEN_PADDLES]
    return mask


def _lit_in(frames: np.ndarray, rows: slice) -> np.ndarray:
    lit = frames.max(-1) > BREAKOUT_LIT
    mask = np.zeros_like(lit)
    mask[:, rows, BREAKOUT_INSIDE_WALLS] = lit[:, rows, BREAKOUT_INSIDE_WALLS]
    return mask


def breakout_ball_mask(frames: np.ndarray) -> np.ndarray:
    return _lit_in(frames, BREAKOUT_BELOW_BRICKS)


def breakout_paddle_mask(frames: np.ndarray) -> np.ndarray:
    return _lit_in(frames, BREAKOUT_PADDLE_ROWS)


OBJECTS = {
    "breakout_ball": (breakout_ball_mask, 2),
    "breakout_paddle": (breakout_paddle_mask, 3),
    "lander": (lander_mask, 3),
    "pong_ball": (pong_ball_mask, 1),
    "pong_paddle": (pong_paddle_mask, 3),
}


def grown(mask: np.ndarray) -> np.ndarray:
    out = mask.copy()
    for shift in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        out |= np.roll(mask, shift, axis=(1, 2))
    return out


def reconstruct(run: Path, frames: np.ndarray) -> tuple[np.ndarray, float]:
    """V's reconstructions (from the posterior mean) and its ``frame_signal``."""
    vae, x = load_vae(run), frames_to_float(frames)
    parts, mus, variances = [], [], []
    for start in range(0, len(frames), 256):
        mu, logvar = vae.encode_batch(x[start : start + 256])
        parts.append(np.asarray(vae.decode_batch(mu)))
        mus.append(np.asarray(mu))
        variances.append(np.exp(np.asarray(logvar)))
    spread = np.concatenate(mus).var(0)
    signal = spread / (spread + np.concatenate(variances).mean(0))
    return np.concatenate(parts), float(signal.mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", type=Path, required=True, help="run with the episodes"
    )
    parser.add_argument("--vae", type=Path, nargs="+", required=True, help="V runs")
    parser.add_argument("--object", choices=sorted(OBJECTS), default="lander")
    parser.add_argument("--out", type=Path, default=None, help="JSON of the figures")
    args = parser.parse_args()
    paths = list_episodes(args.data / "data")[-4 * EPISODES :: 4]
    frames = np.concatenate([load_episode(p)["obs"][::5] for p in paths])
    object_mask, min_pixels = OBJECTS[args.object]
    truth = object_mask(frames)
    in_view = truth.sum((1, 2)) >= min_pixels
    rows = {}
    for run in args.vae:
        recon, frame_signal = reconstruct(run, frames)
        error = ((recon - np.asarray(frames_to_float(frames))) ** 2).sum(-1)
        shown = object_mask((recon * 255).round().astype(np.uint8))
        count = shown.sum((1, 2))
        placed = (shown & grown(truth)).sum((1, 2)) >= 0.5 * count
        kept = (count >= min_pixels) & placed
        rows[str(run)] = {
            "frames_with_object": int(in_view.sum()),
            "object_pixel_error": float(error[truth].mean()),
            "other_pixel_error": float(error[~truth].mean()),
            "object_kept": float(kept[in_view].mean()),
            "frame_signal": frame_signal,
        }
        print(run, rows[str(run)])
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
