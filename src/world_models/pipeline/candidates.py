"""Several M's and searches on one round's data, the one whose dream teaches best
chosen by reality.

Two M's trained on the same data with different seeds have given agents 450–490 points
apart on CarRacing (docs/transfer.md, rows 27/29 and 41/44), and two searches in one M's
dream from different CMA-ES seeds 67 points (rows 54/57). With
``pipeline.rnn_candidates`` = K and ``pipeline.search_candidates`` = S, round 0 trains K
M's (seeds ``rnn.seed + c``), runs S searches in each dream (CMA-ES seeds ``dream.seed
+ s``), and keeps the candidate whose kept controller scored best in its final check.
Every final check of the round plays the same block of selection seeds
(``seeds.final_check_seeds``), so the candidates are compared on the same tracks, none
of them a test track.

Candidate (c, s) is a run directory of its own, ``RUN/candidates/m{c}`` for s = 0 and
``RUN/candidates/m{c}_search{s}`` after it: its config is the run's with the
candidate's seeds, and its data, V and latents are links to the run's (and, for s > 0,
its M a link to ``m{c}``'s). The chosen candidate's M and search are copied to
``RUN/rnn`` and ``RUN/dream``, so every later stage (the test, a later round) reads the
run as if it had trained that M and run that search alone; ``RUN/candidates.json``
records each candidate's score and the choice.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from world_models.config import Config
from world_models.dream.selection import load_finalists
from world_models.files import copy_tree_atomic, write_atomic_text
from world_models.run_directory import init_run

CANDIDATES_FILENAME = "candidates.json"
SHARED_FOLDERS = ("data", "vae", "latents")  # the candidates' common inputs
CHOSEN_FOLDERS = ("rnn", "dream")  # what the chosen candidate brings to the run


def candidate_dir(run_dir: str | os.PathLike, index: int, search: int = 0) -> Path:
    name = f"m{index}" if search == 0 else f"m{index}_search{search}"
    return Path(run_dir) / "candidates" / name


def candidate_pairs(config: Config) -> list[tuple[int, int]]:
    """Every (M index, search index) of round 0, each M's searches after its M."""
    return [(index, search) for index in range(config.pipeline.rnn_candidates)
            for search in range(config.pipeline.search_candidates)]


def candidate_config(config: Config, index: int, search: int = 0) -> Config:
    """The run's config with candidate (``index``, ``search``)'s M and CMA-ES seeds,
    for one M, one search and one round."""
    return replace(
        config,
        rnn=replace(config.rnn, seed=config.rnn.seed + index),
        dream=replace(config.dream, seed=config.dream.seed + search),
        pipeline=replace(config.pipeline, rnn_candidates=1, search_candidates=1,
                         rounds=1),
    )


def prepare_candidate(
    run_dir: str | os.PathLike, config: Config, index: int, search: int = 0
) -> Path:
    """Candidate (``index``, ``search``)'s run directory: its config, and links to the
    run's data, V and latents and, for a later search, to its M's folder's M (relative,
    so the run directory can be moved)."""
    folder = candidate_dir(run_dir, index, search)
    init_run(folder, candidate_config(config, index, search))
    targets = {name: Path("..") / ".." / name for name in SHARED_FOLDERS}
    if search > 0:
        targets["rnn"] = Path("..") / candidate_dir(run_dir, index).name / "rnn"
    for name, target in targets.items():
        link = folder / name
        if not link.is_symlink():
            link.symlink_to(target, target_is_directory=True)
    return folder


def candidate_score(folder: str | os.PathLike) -> dict[str, Any]:
    """The kept controller of a candidate's search as its last final check scored it."""
    record = load_finalists(folder)
    if not record:
        raise FileNotFoundError(
            f"{Path(folder) / 'dream'} has no final check; a candidate's search must "
            "finish with dream.finalists > 0"
        )
    final = record[max(record, key=int)]
    kept = next(row for row in final["finalists"]
                if row["generation"] == final["kept_generation"])
    if "kept_noise" in final:  # the final check chose the noise: the score there
        kept = dict(kept, **next(row for row in final["noise_levels"]
                                 if row["noise"] == final["kept_noise"]))
    return dict(kept_generation=kept["generation"], final_score=kept["final_score"],
                final_std=kept["final_std"], seeds=final["seeds"])


def choose_candidate(run_dir: str | os.PathLike, config: Config) -> dict[str, Any]:
    """Copy the best candidate's M and search into the run; record the choice.

    The best is the highest final-check score (of equal scores, the first candidate).
    Resumable: a copy is made beside its destination and renamed into place.
    """
    run_dir = Path(run_dir)
    rows = []
    for index, search in candidate_pairs(config):
        folder = candidate_dir(run_dir, index, search)
        rows.append(dict(index=index, search=search, folder=folder.name,
                         rnn_seed=config.rnn.seed + index,
                         dream_seed=config.dream.seed + search,
                         **candidate_score(folder)))
    chosen = max(rows, key=lambda row: (row["final_score"], -row["index"],
                                        -row["search"]))
    for name in CHOSEN_FOLDERS:
        copy_tree_atomic(run_dir / "candidates" / chosen["folder"] / name,
                         run_dir / name)
    record = dict(chosen=chosen["index"], chosen_search=chosen["search"],
                  chosen_folder=chosen["folder"], candidates=rows)
    write_atomic_text(run_dir / CANDIDATES_FILENAME, json.dumps(record, indent=2))
    return record


def chosen_folder(record: dict[str, Any]) -> str:
    """The chosen candidate's folder name (records from before searches were
    candidates name only the M)."""
    return record.get("chosen_folder", f"m{record['chosen']}")


def load_candidates(run_dir: str | os.PathLike) -> dict[str, Any]:
    """``RUN/candidates.json`` ({} for a run that trained one M)."""
    path = Path(run_dir) / CANDIDATES_FILENAME
    return json.loads(path.read_text()) if path.exists() else {}
