"""The whole job as resumable stages: collect → VAE → encode → RNN → dream → test, in
rounds.

Each stage is itself resumable (collection skips finished episodes, training resumes
from its checkpoints), and a finished stage leaves a marker
``pipeline/roundK_STAGE.json`` with its wall time and summary, so a re-run skips it.
Round K > 0 collects the current agent's own episodes (failures kept) plus the
configured heuristic drivers, then trains M and C on the union of all rounds: M
continues from the previous round's checkpoint to (K + 1) × the configured steps, or
with ``pipeline.retrain_rnn`` starts over (the previous M is kept aside as
``rnn_roundK-1``). With ``pipeline.rnn_candidates`` or ``search_candidates`` > 1,
round 0 trains several M's or runs several searches in each, and keeps the M and
search whose controller plays best (``pipeline/candidates.py``). A later round with a
fresh M and search keeps its agent only if it plays better than the previous round's
(``pipeline/round_choice.py``).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from world_models.config import Config
from world_models.files import write_atomic_text
from world_models.pipeline.markers import marker_path, read_marker
from world_models.pipeline.report import write_report
from world_models.pipeline.round_choice import choose_round, previous_agent_available
from world_models.run_directory import init_run
from world_models.seeds import collection_seeds

BASELINES = ("brownian", "zero")


def _run_stage(
    run_dir: Path, round_index: int, stage: str, work: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    done = read_marker(run_dir, round_index, stage)
    if done is not None:
        print(f"[round {round_index}] {stage}: done earlier, skipped")
        return done
    print(f"[round {round_index}] {stage} ...", flush=True)
    start = time.perf_counter()
    summary = work() or {}
    record = {
        "stage": stage,
        "round": round_index,
        "seconds": round(time.perf_counter() - start, 2),
        "summary": summary,
    }
    path = marker_path(run_dir, round_index, stage)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic_text(path, json.dumps(record, indent=2, default=_jsonable))
    print(f"[round {round_index}] {stage}: {record['seconds']:.1f} s", flush=True)
    return record


def _jsonable(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def run_pipeline(
    run_dir: str | Path, config: Config, fresh: bool = False, progress: bool = True
) -> Path:
    """Run (or resume) every stage of every round; returns the path of report.md."""
    run_dir = Path(run_dir)
    if fresh and run_dir.exists():
        shutil.rmtree(run_dir)
    config = init_run(run_dir, config)
    for round_index in range(config.pipeline.rounds):
        _run_round(run_dir, config, round_index, progress)
        write_report(run_dir)
    return write_report(run_dir)


def _run_round(run_dir: Path, config: Config, k: int, progress: bool) -> None:
    from world_models.data import collection
    from world_models.training.vae import encode_run, train_vae

    settings = config.pipeline

    def collect() -> dict[str, Any]:
        if k == 0:
            manifests = collection.collect_round(run_dir, config, 0, progress=progress)
        else:
            manifests = (
                collection.collect_round(
                    run_dir,
                    config,
                    k,
                    policies=settings.heuristic_policies_later_rounds,
                    progress=progress,
                )
                if settings.heuristic_policies_later_rounds
                else {}
            )
            if settings.on_policy_episodes:
                manifests["on_policy"] = collection.collect(
                    collection.round_dir(run_dir, k, "on_policy"),
                    config.env_id,
                    "on_policy",
                    settings.on_policy_episodes,
                    collection_seeds(config, k, "on_policy").start,
                    config.collect.workers,
                    config.collect.max_steps,
                    dict(run_dir=str(run_dir), noise=settings.on_policy_noise),
                    progress=progress,
                    backend=config.collect.backend,
                    ray_address=config.collect.ray_address,
                )
        return {name: _manifest_summary(m) for name, m in manifests.items()}

    _run_stage(run_dir, k, "collect", collect)
    if k == 0 or settings.retrain_vae:
        _run_stage(
            run_dir,
            k,
            "vae",
            lambda: train_vae(
                run_dir, total_steps=(k + 1) * config.vae.steps, progress=progress
            ),
        )
    # Encoding is idempotent per V checkpoint: a retrained V re-encodes every episode.
    _run_stage(
        run_dir,
        k,
        "encode",
        lambda: {"files_written": encode_run(run_dir, progress=progress)},
    )
    if k == 0 and settings.candidates > 1:
        _train_candidates(run_dir, config, progress)
    else:
        _train_m_and_search(run_dir, config, k, progress)
    _run_stage(run_dir, k, "test", lambda: _test(run_dir, config, k, progress))


def _train_m_and_search(run_dir: Path, config: Config, k: int, progress: bool) -> None:
    from world_models.dream.evolve import evolve
    from world_models.training.rnn import train_rnn

    settings = config.pipeline
    rnn_steps = (k + 1) * config.rnn.steps
    if k > 0 and settings.retrain_rnn:
        _run_stage(run_dir, k, "rnn_reset", lambda: _set_aside(run_dir, "rnn", k))
        rnn_steps = config.rnn.steps
    frozen_after = config.rnn.steps if settings.freeze_lstm else None
    _run_stage(
        run_dir,
        k,
        "rnn",
        lambda: train_rnn(
            run_dir,
            total_steps=rnn_steps,
            progress=progress,
            lstm_frozen_after=frozen_after,
        ),
    )
    start_from = None
    if settings.warm_start_es:  # the search goes on: (k + 1) x the generations in all
        generations = (k + 1) * config.dream.generations
    else:  # a new search each round from the last kept controller; old ones kept aside
        generations = config.dream.generations
        if k > 0:
            _run_stage(
                run_dir, k, "dream_reset", lambda: _set_aside(run_dir, "dream", k)
            )
            start_from = run_dir / f"dream_round{k - 1}"
    _run_stage(
        run_dir,
        k,
        "dream",
        lambda: evolve(
            run_dir,
            total_generations=generations,
            progress=progress,
            round_index=k,
            start_from=start_from,
        ),
    )
    if settings.round_choice_episodes and previous_agent_available(run_dir, config, k):
        _run_stage(run_dir, k, "round_choice",
                   lambda: _summary(choose_round(run_dir, config, k)))


def _summary(choice: dict[str, Any]) -> dict[str, Any]:
    agents = [{key: agent[key] for key in ("round", "noise", "mean", "std")}
              for agent in choice["agents"]]
    return dict(kept_round=choice["kept_round"], seeds=choice["seeds"], agents=agents)


def _train_candidates(run_dir: Path, config: Config, progress: bool) -> None:
    """Round 0's M candidates, each with its dream searches, and the choice among them:
    the chosen M and search become the run's, and their markers the round's own."""
    from world_models.dream.evolve import evolve
    from world_models.pipeline import candidates
    from world_models.training.rnn import train_rnn

    for index, search in candidates.candidate_pairs(config):
        folder = candidates.prepare_candidate(run_dir, config, index, search)
        if search == 0:
            _run_stage(
                run_dir,
                0,
                f"rnn_m{index}",
                lambda f=folder: train_rnn(
                    f, total_steps=config.rnn.steps, progress=progress
                ),
            )
        _run_stage(
            run_dir,
            0,
            f"dream_{folder.name}",
            lambda f=folder: evolve(
                f, total_generations=config.dream.generations, progress=progress
            ),
        )
    chosen = _run_stage(
        run_dir, 0, "choose_m", lambda: candidates.choose_candidate(run_dir, config)
    )["summary"]
    # the round's own markers: the chosen candidate's
    for stage, source in (("rnn", f"rnn_m{chosen['chosen']}"),
                          ("dream", f"dream_{candidates.chosen_folder(chosen)}")):
        _run_stage(
            run_dir,
            0,
            stage,
            lambda s=source: read_marker(run_dir, 0, s)["summary"],
        )


def _manifest_summary(manifest: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    returns = np.array([e["return"] for e in manifest["episodes"]], np.float64)
    lengths = np.array([e["length"] for e in manifest["episodes"]])
    return {
        "episodes": len(returns),
        "frames": int(lengths.sum() + len(lengths)),
        "return_mean": float(returns.mean()),
        "return_std": float(returns.std()),
    }


def _set_aside(run_dir: Path, folder: str, k: int) -> dict[str, Any]:
    """Rename round k - 1's ``folder`` (M or the search) so that round k starts anew."""
    aside = run_dir / f"{folder}_round{k - 1}"
    if (run_dir / folder).exists() and not aside.exists():
        (run_dir / folder).rename(aside)  # atomic: a killed run finds one or the other
    return {"kept_aside": str(aside)}


def _test(run_dir: Path, config: Config, k: int, progress: bool) -> dict[str, Any]:
    from world_models.evaluation.real import evaluate_run, record_video

    results = {
        "agent": evaluate_run(run_dir, name=f"round{k}_agent", progress=progress)
    }
    if config.eval.video:
        seed = config.eval.seed
        record_video(
            run_dir, seed, out_path=run_dir / "eval" / f"round{k}_agent_seed{seed}.mp4"
        )
    if k == 0:  # baselines do not change between rounds: score them once, same seeds
        for baseline in BASELINES:
            results[baseline] = evaluate_run(
                run_dir,
                name=baseline,
                policy=baseline,
                episodes=config.eval.baseline_episodes or None,
                progress=progress,
            )
    return {
        name: {key: r[key] for key in ("mean", "std", "episodes")}
        for name, r in results.items()
    }
