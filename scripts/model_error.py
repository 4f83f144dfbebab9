"""World-model prediction error of a run: open-loop pixel MSE or latent consistency.

    uv run python scripts/model_error.py pixel --run runs/NAME [--horizon 20]
    uv run python scripts/model_error.py latent --run runs/NAME [--horizon 3]

Results go to runs/NAME/model_error/ (see docs/model_error.md).
"""

from __future__ import annotations

import argparse
import json

from world_models.evaluation.latent_error import latent_error_text, run_latent_error
from world_models.evaluation.pixel_error import run_pixel_error


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="protocol", required=True)
    pixel = commands.add_parser("pixel", help="open-loop pixel MSE on 84x84 grayscale")
    pixel.add_argument("--horizon", type=int, default=20)
    pixel.add_argument("--sequences", type=int, default=10, dest="num_sequences")
    pixel.add_argument(
        "--temperature",
        type=float,
        default=None,
        help="sampling temperature (default: the run's dream.temperature)",
    )
    pixel.add_argument("--no-plots", action="store_false", dest="plots")
    latent = commands.add_parser("latent", help="latent consistency MSE")
    latent.add_argument("--horizon", type=int, default=3)
    latent.add_argument("--batch-size", type=int, default=256)
    latent.add_argument("--max-batches", type=int, default=100)
    latent.add_argument(
        "--temperature",
        type=float,
        default=None,
        help="sample at this temperature instead of the mixture mode",
    )
    for command in (pixel, latent):
        command.add_argument("--run", required=True, help="run directory")
        command.add_argument(
            "--warmup",
            type=int,
            default=0,
            help="real frames fed to M before the start frame",
        )
        command.add_argument("--seed", type=int, default=0)
    options = vars(parser.parse_args(argv))
    protocol, run_dir = options.pop("protocol"), options.pop("run")
    try:
        if protocol == "pixel":
            summary = run_pixel_error(run_dir, **options)
            print(json.dumps(summary["mse_per_horizon_pixels"], indent=1))
            print(
                f"model (mode) beats the copy baseline from horizon "
                f"{summary['model_beats_copy_from_horizon']}"
            )
        else:
            print(latent_error_text(run_latent_error(run_dir, **options)), end="")
    except (ValueError, OSError, RuntimeError) as error:  # bad run dir, files, ckpt
        parser.exit(2, f"error: {error}\n")


if __name__ == "__main__":
    main()
