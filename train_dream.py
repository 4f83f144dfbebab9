"""Evolve the controller with CMA-ES inside M's dream: ``train_dream.py --run DIR``."""

import argparse

from world_models.cli import run_cli
from world_models.dream.evolve import evolve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--run", required=True, help="run directory (with rnn/ and latents/)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes for the real checks (default: eval.workers)",
    )
    parser.add_argument(
        "--fresh", action="store_true", help="discard a saved search and start over"
    )
    parser.add_argument(
        "--start-from",
        default=None,
        help="a search folder (e.g. RUN/imitation from scripts/fit_controller.py) "
        "whose kept controller a new search starts from",
    )
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    summary = evolve(
        args.run, workers=args.workers, fresh=args.fresh, progress=not args.no_progress,
        start_from=args.start_from,
    )
    print(
        f"generation {summary['generation']}: best real score "
        f"{summary['best_real_score']:.1f} (CMA mean of generation "
        f"{summary['best_generation']})"
    )


if __name__ == "__main__":
    run_cli(main)
