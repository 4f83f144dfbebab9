"""Compare world models by their pixel MSE per horizon (result pickles of any tool).

    uv run python scripts/compare_models.py A.pkl B.pkl [...] --labels A B --out DIR

Pickles are read with a restricted unpickler (plain data and numpy arrays only). Writes
DIR/model_comparison_plot.png, model_comparison_ratio.png, model_comparison.md, .json.
"""

from __future__ import annotations

import argparse
import pickle

from world_models.evaluation.compare import compare_result_files


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "files",
        nargs="+",
        help="result pickles; the first is the reference for differences and ratios",
    )
    parser.add_argument("--labels", nargs="+", default=None)
    parser.add_argument("--out", default="model_comparison")
    args = parser.parse_args(argv)
    if len(args.files) < 2:
        parser.error("give at least two result files")
    try:
        summary = compare_result_files(args.files, args.labels, args.out)
    except (ValueError, OSError, pickle.UnpicklingError) as error:
        parser.exit(2, f"error: {error}\n")
    print(summary["markdown"], end="")


if __name__ == "__main__":
    main()
