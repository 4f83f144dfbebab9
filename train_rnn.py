"""Train the MDN-RNN (M) on a run's latents.

    uv run python train_rnn.py --run runs/NAME

Re-running resumes from the latest checkpoint in runs/NAME/rnn/ckpt; ``--fresh`` starts
over. Run process_data.py first.
"""

import argparse

from world_models.cli import run_cli
from world_models.training.rnn import train_rnn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", required=True, help="run directory (runs/NAME)")
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="delete RUN/rnn (checkpoints, logs) and start over",
    )
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    metrics = train_rnn(args.run, fresh=args.fresh, progress=not args.no_progress)
    for name, value in metrics.items():
        print(f"{name:32s} {value:.4f}")


if __name__ == "__main__":
    run_cli(main)
