"""Ablation table of agents scored on the same test seeds (paired, row after row).

    uv run python scripts/ablation_table.py LABEL=RUN[:EVAL] ... [--json OUT.json]

EVAL defaults to ``agent`` (evaluate_agent.py's eval/agent.json).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from world_models.cli import run_cli
from world_models.evaluation.ablation import ablation_markdown, ablation_rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("entries", nargs="+", help="LABEL=RUN[:EVAL]")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    entries = []
    for text in args.entries:
        label, _, target = text.rpartition("=")  # a label may hold "="
        if not target:
            parser.error(f"{text!r} is not LABEL=RUN[:EVAL]")
        run, _, eval_name = target.partition(":")
        entries.append((label, Path(run), eval_name or "agent"))
    rows = ablation_rows(entries)
    print(ablation_markdown(rows), end="")
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    run_cli(main)
