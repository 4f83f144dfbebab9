"""The report's final-check section: each final check's finalists on their shared
block, and the action-noise levels played there (``dream/finalists.json``)."""

from __future__ import annotations

from pathlib import Path

from world_models.dream.selection import load_finalists


def finalists_section(run_dir: Path, patience: int) -> list[str]:
    record = load_finalists(run_dir)
    if not record:
        return []
    lines = [
        "## Final check",
        "",
        (
            "The best real checks of the search played again on one shared block of "
            "selection seeds; the best there (at its best action-noise level, where "
            "the check plays levels) is the kept controller."
        ),
        "",
        "| at generation | finalist (generation) | its check | final check | seeds |",
        "|---|---|---|---|---|",
    ]
    for at, check in record.items():
        for row in check["finalists"]:
            kept = " (kept)" if row["generation"] == check["kept_generation"] else ""
            lines.append(
                f"| {at} | {row['generation']}{kept} | {row['check_score']:.1f} | "
                f"{row['final_score']:.1f} ± {row['final_std']:.1f} | "
                f"{check['seeds'][0]}..{check['seeds'][1]} |"
            )
    for at, check in record.items():
        if "noise_levels" in check:
            lines += ["", f"At generation {at} the kept controller played the same "
                      "block at each action-noise level (dream.final_check_noise):", "",
                      "| action noise | final check |", "|---|---|"]
            for row in check["noise_levels"]:
                kept = " (kept)" if row["noise"] == check["kept_noise"] else ""
                lines.append(f"| {row['noise']:g}{kept} | "
                             f"{row['final_score']:.1f} ± {row['final_std']:.1f} |")
        if "other_levels" in check:
            lines += ["", f"At generation {at} the other finalists played the block at "
                      "each level too (dream.final_check_noise_all_finalists):", "",
                      "| finalist (generation) | action noise | final check |",
                      "|---|---|---|"]
            lines += [f"| {row['generation']} | {row['noise']:g} | "
                      f"{row['final_score']:.1f} ± {row['final_std']:.1f} |"
                      for row in check["other_levels"]]
    stalled = [at for at, check in record.items() if check.get("stalled")]
    if stalled:
        lines += ["", (
            f"The search ended early at generation {', '.join(stalled)}: "
            f"{patience} checks in a row without a new best (dream.patience)."
        )]
    return lines + [""]
