"""Export a run's trained agent (V, M, the kept controller, config) to a small folder.

    uv run python scripts/export_agent.py --run RUN --out pretrained/CarRacing-v3
    uv run python evaluate_agent.py --run pretrained/CarRacing-v3 --episodes 100

See world_models/export.py for what the folder holds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from world_models.agent import export_agent
from world_models.cli import run_cli
from world_models.export import MANIFEST_FILENAME, PARAMETERS_FILENAME


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", required=True, type=Path, help="a trained run")
    parser.add_argument("--out", required=True, type=Path, help="folder to write")
    parser.add_argument("--controller", choices=("best", "mean"), default="best")
    args = parser.parse_args()
    if not args.run.is_dir():
        raise FileNotFoundError(f"no run directory {args.run}")
    out = export_agent(args.run, args.out, args.controller)
    manifest = json.loads((out / MANIFEST_FILENAME).read_text())
    size = (out / PARAMETERS_FILENAME).stat().st_size / 2**20
    print(f"exported {manifest['parameters']:,} parameters ({size:.1f} MiB) to {out}")
    if manifest["test"]:
        test = manifest["test"]
        first, last = test["seeds"]
        print(f"the run's test: {test['mean']:.1f} ± {test['std']:.1f} over "
              f"{test['episodes']} episodes (seeds {first}-{last})")


if __name__ == "__main__":
    run_cli(main)
