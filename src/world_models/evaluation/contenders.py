"""What each controller trained on a run cost in real env steps, and which ones a run
holds: the contenders that ``compare_controllers.py`` plays on the same test seeds.

A controller's real steps are every real step that went into it: the world model's
collection, every real check that selected it, and a learner's own real episodes. Each
dream learner is charged the collection of the data its M learnt from; a run that
chose its M among candidates by their searches' checks (``pipeline.rnn_candidates``,
``search_candidates``) charges those checks, every search's, to every controller in
that M's dream too, since none of them would exist without the choice. Checks
recorded before their steps were logged count as their episodes times the step limit,
marked as an upper bound.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from world_models.config import Config
from world_models.dream.ppo import PPO_DIR
from world_models.dream.search import load_search
from world_models.dream.selection import FINALISTS_FILENAME
from world_models.envs import get_spec, step_limit
from world_models.logs import read_metrics
from world_models.rl import SUMMARY_FILENAME
from world_models.rl.dqn_features import REAL_Q_DIR
from world_models.rl.frame_training import POLICY_DIRNAME
from world_models.rl.q_agent import DREAM_Q_DIR


@dataclass(frozen=True)
class RealSteps:
    steps: int
    exact: bool = True  # False: an upper bound (checks made before steps were logged)

    def __add__(self, other: RealSteps) -> RealSteps:
        return RealSteps(self.steps + other.steps, self.exact and other.exact)

    def __str__(self) -> str:
        return f"{self.steps:,}" if self.exact else f"≤ {self.steps:,}"


@dataclass(frozen=True)
class Contender:
    name: str
    policy: str  # a registered policy (data/policies.py)
    kwargs: dict[str, Any] = field(default_factory=dict)
    real_steps: RealSteps | None = None  # None: a baseline, trained on nothing
    dream_steps: int | None = None
    sources: tuple[str, ...] = ()  # files whose bytes identify the trained policy

    def fingerprint(self, seeds: range, max_steps: int) -> str:
        """What a cached score must match: the policy, its arguments, the seeds and
        the bytes of the files it was loaded from."""
        digest = hashlib.sha256(json.dumps(
            [self.policy, self.kwargs, [seeds.start, seeds.stop], max_steps],
            sort_keys=True, default=str).encode())
        for source in self.sources:
            digest.update(Path(source).read_bytes())
        return digest.hexdigest()


def collection_steps(run_dir: str | os.PathLike) -> RealSteps:
    """Real steps of every collected episode of the run (every round, every policy)."""
    manifests = sorted(Path(run_dir).glob("data/round*/*/manifest.json"))
    return RealSteps(sum(json.loads(p.read_text())["total_steps"] for p in manifests))


def _search_folders(run_dir: Path) -> list[Path]:
    """The dream searches whose checks chose the run's controller and M."""
    candidates = sorted(run_dir.glob("candidates/m*/dream"))
    return candidates if candidates else [run_dir / "dream"]


def search_steps(run_dir: str | os.PathLike, config: Config) -> RealSteps:
    """Real steps of every check, re-score and final check of the run's searches."""
    limit = step_limit(get_spec(config.env_id), config.eval.max_steps)
    total = RealSteps(0)
    for folder in _search_folders(Path(run_dir)):
        for row in read_metrics(folder / "metrics.jsonl"):
            if "real_score" in row or "best_rescored" in row:
                total += (RealSteps(int(row["real_steps"])) if "real_steps" in row
                          else RealSteps(config.dream.real_eval_episodes * limit,
                                         False))
        finalists_path = folder / FINALISTS_FILENAME
        finals = (json.loads(finalists_path.read_text())
                  if finalists_path.exists() else {})
        for final in finals.values():
            for row in final["finalists"]:
                total += (RealSteps(int(row["real_steps"])) if "real_steps" in row
                          else RealSteps(config.dream.final_check_episodes * limit,
                                         False))
            for level in (*final.get("noise_levels", ()),
                          *final.get("other_levels", ())):
                total += RealSteps(int(level["real_steps"]))
    return total


def search_dream_steps(run_dir: str | os.PathLike, config: Config) -> int:
    """Dream agent-steps the searches played: per generation, population x rollouts
    x the mean dream length."""
    per_generation = config.dream.population * config.dream.rollouts
    return int(sum(
        row["dream_length"] * per_generation
        for folder in _search_folders(Path(run_dir))
        for row in read_metrics(folder / "metrics.jsonl") if "dream_length" in row))


def _files(folder: Path) -> tuple[str, ...]:
    return tuple(str(p) for p in sorted(folder.iterdir()) if p.is_file())


def _read_summary(folder: Path) -> dict[str, Any]:
    path = folder / SUMMARY_FILENAME
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: was {folder} trained to the end?")
    return json.loads(path.read_text())


def run_contenders(run_dir: str | os.PathLike, config: Config) -> list[Contender]:
    """The trained controllers ``run_dir`` holds, the CMA-ES agent first."""
    run_dir = Path(run_dir)
    world_model = collection_steps(run_dir)
    if (run_dir / "candidates").is_dir():  # the M was chosen by the searches' checks
        world_model += search_steps(run_dir, config)
    found = []
    if (run_dir / "dream" / "ckpt").is_dir():
        kept = np.asarray(load_search(run_dir, config)["best_params"])
        cma_steps = (world_model if (run_dir / "candidates").is_dir()
                     else world_model + search_steps(run_dir, config))
        found.append(Contender(
            "CMA-ES in the dream", "agent",
            dict(run_dir=str(run_dir), params=tuple(kept.tolist())),
            cma_steps, search_dream_steps(run_dir, config)))
    ppo = run_dir / PPO_DIR
    if (ppo / "ckpt").is_dir():
        kept = np.asarray(load_search(run_dir, config, folder=ppo)["best_params"])
        settings = json.loads((ppo / "ppo_metrics.json").read_text())["settings"]
        dream_steps = (settings["updates"] * settings["num_envs"]
                       * settings["num_steps"])
        found.append(Contender(
            "PPO in the dream", "agent",
            dict(run_dir=str(run_dir), params=tuple(kept.tolist())),
            world_model, dream_steps))
    dqn = run_dir / DREAM_Q_DIR
    if dqn.is_dir():
        found.append(Contender(
            "DQN in the dream", "q_agent", dict(run_dir=str(run_dir), q_dir=str(dqn)),
            world_model, _read_summary(dqn).get("dream_steps"), _files(dqn)))
    real_dqn = run_dir / REAL_Q_DIR
    if real_dqn.is_dir():
        found.append(Contender(
            "DQN in reality on V+M features", "q_agent",
            dict(run_dir=str(run_dir), q_dir=str(real_dqn)),
            world_model + RealSteps(int(_read_summary(real_dqn)["real_steps"])),
            None, _files(real_dqn)))
    return found


def model_free_contender(folder: str | os.PathLike) -> Contender:
    """A model-free PPO trained from frames (``scripts/train_model_free.py``)."""
    folder = Path(folder)
    summary = _read_summary(folder)
    policy = folder / POLICY_DIRNAME
    return Contender(
        f"PPO from frames in reality ({folder.name})", "ppo_frames",
        dict(path=str(policy)), RealSteps(int(summary["real_steps"])), None,
        _files(policy))


def baseline_contenders(run_dir: str | os.PathLike) -> list[Contender]:
    """The zero controller (V and M with C all zero) and the env's random collection
    policy (``brownian``: Brownian actions; sticky random ones in a discrete env)."""
    return [
        Contender("zero controller", "agent",
                  dict(run_dir=str(run_dir), controller="zero")),
        Contender("random (brownian)", "brownian"),
    ]
