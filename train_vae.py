"""Train the ConvVAE (V) on a run directory's episodes; re-running resumes.

uv run python train_vae.py --run runs/NAME [--fresh]
"""

import argparse

from world_models.cli import run_cli
from world_models.training.vae import train_vae


def main() -> None:
    parser = argparse.ArgumentParser(description="Train V on DIR/data; resumable.")
    parser.add_argument(
        "--run", required=True, help="run directory (holds config.json)"
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="discard DIR/vae (checkpoints, logs) and start over",
    )
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    result = train_vae(args.run, fresh=args.fresh, progress=not args.no_progress)
    if result:
        print(f"validation: recon {result['recon']:.2f}  KL {result['kl']:.2f}")


if __name__ == "__main__":
    run_cli(main)
