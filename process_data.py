"""Encode every episode of a run with the trained V into DIR/latents (idempotent).

uv run python process_data.py --run runs/NAME
"""

import argparse

from world_models.cli import run_cli
from world_models.training.vae import encode_run


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Encode DIR/data frames to DIR/latents."
    )
    parser.add_argument("--run", required=True, help="run directory with a trained VAE")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    written = encode_run(
        args.run, batch_size=args.batch_size, progress=not args.no_progress
    )
    print(f"wrote {written} latent files under {args.run}/latents")


if __name__ == "__main__":
    run_cli(main)
