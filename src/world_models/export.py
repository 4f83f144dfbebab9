"""A trained agent as a small, versioned folder that plays on any machine.

``agent.export_agent(run_dir, out_dir)`` writes:

  config.json    the run's config (``load_run_config`` reads it as from a run)
  agent.npz      every parameter of V, M and the kept controller, by its path in the
                 tree; what the agent acts with (V's encoder, M, C) in float32, V's
                 decoder (only drawn, never acted on) in float16: about 11 MB at paper
                 size instead of 24
  exported.json  format version, env id, source run, parameter count, the action
                 noise the controller acts at, and the test score the run measured,
                 if it has one

``evaluate_agent.py --run OUT_DIR`` plays it like a run (``agent.make_agent`` loads an
exported folder with ``load_exported``); the float32 parts are stored bit for bit, so
an episode replays exactly as it did in the run.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import numpy as np

from world_models.config import Config
from world_models.files import write_json
from world_models.models.controller import Controller, make_controller
from world_models.models.mdnrnn import MDNRNN, rnn_from_config
from world_models.models.vae import ConvVAE
from world_models.run_directory import CONFIG_FILENAME, load_run_config

EXPORT_VERSION = 1
PARAMETERS_FILENAME = "agent.npz"
MANIFEST_FILENAME = "exported.json"
# Leaves stored in float16: V's decoder side, which the agent never runs.
HALF_PRECISION_PREFIXES = ("['vae'].from_z", "['vae'].decoder")


class ExportError(ValueError):
    """An exported agent that is missing, from another format, or not this config's."""


def is_exported(path: str | os.PathLike) -> bool:
    return (Path(path) / PARAMETERS_FILENAME).is_file()


def _models_template(config: Config) -> dict[str, eqx.Module]:
    key = jax.random.key(0)
    return dict(
        vae=ConvVAE(config.vae.z_dim, key=key, encoder_norm=config.vae.encoder_norm),
        rnn=rnn_from_config(config, key=key),
        controller=make_controller(config, key=key),
    )


def _named_leaves(models: dict[str, eqx.Module]) -> dict[str, jax.Array]:
    leaves = jax.tree_util.tree_leaves_with_path(eqx.filter(models, eqx.is_array))
    return {jax.tree_util.keystr(path): leaf for path, leaf in leaves}


def _stored_dtype(name: str) -> type:
    return np.float16 if name.startswith(HALF_PRECISION_PREFIXES) else np.float32


def write_exported(
    run_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    models: dict[str, eqx.Module],
    controller: str,
    action_noise: float,
) -> Path:
    """Write ``models`` (vae, rnn, controller) with ``run_dir``'s config to ``out_dir``
    (replaced), the controller acting at ``action_noise``; ``agent.export_agent``
    loads them from a run."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    config = load_run_config(run_dir)
    arrays = {
        name: np.asarray(leaf).astype(_stored_dtype(name))
        for name, leaf in _named_leaves(models).items()
    }
    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    shutil.copyfile(run_dir / CONFIG_FILENAME, partial / CONFIG_FILENAME)
    np.savez(partial / PARAMETERS_FILENAME, **arrays)
    write_json(
        partial / MANIFEST_FILENAME,
        dict(
            format_version=EXPORT_VERSION,
            env_id=config.env_id,
            source_run=str(run_dir),
            controller=controller,
            action_noise=float(action_noise),
            parameters=int(sum(a.size for a in arrays.values())),
            test=_test_score(run_dir),
        ),
    )
    shutil.rmtree(out_dir, ignore_errors=True)
    partial.rename(out_dir)
    return out_dir


def _test_score(run_dir: Path) -> dict[str, Any] | None:
    """The run's last test of the agent (pipeline's eval/round<k>_agent.json)."""
    tests = sorted((run_dir / "eval").glob("round*_agent.json"))
    if not tests:
        return None
    report = json.loads(tests[-1].read_text())
    seeds = [result["seed"] for result in report["results"]]
    return dict(
        name=report["name"],
        episodes=report["episodes"],
        mean=report["mean"],
        std=report["std"],
        seeds=[min(seeds), max(seeds)],
    )


def exported_action_noise(path: str | os.PathLike) -> float:
    """The action noise an exported controller acts at (exports from before it was
    recorded: their config's ``dream.action_noise``)."""
    manifest = json.loads((Path(path) / MANIFEST_FILENAME).read_text())
    if "action_noise" in manifest:
        return float(manifest["action_noise"])
    return load_run_config(path).dream.action_noise


def load_exported(
    path: str | os.PathLike,
) -> tuple[Config, ConvVAE, MDNRNN, Controller]:
    """Config, V, M and C of an exported agent, every parameter as float32."""
    path = Path(path)
    manifest_path = path / MANIFEST_FILENAME
    if not is_exported(path) or not manifest_path.is_file():
        raise ExportError(f"{path} holds no exported agent ({PARAMETERS_FILENAME})")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format_version") != EXPORT_VERSION:
        raise ExportError(
            f"{path}: export format {manifest.get('format_version')!r}, "
            f"this library reads {EXPORT_VERSION}"
        )
    config = load_run_config(path)
    template = _models_template(config)
    expected = _named_leaves(template)
    names = list(expected)
    with np.load(path / PARAMETERS_FILENAME) as stored:
        if sorted(stored.files) != sorted(names):
            missing = sorted(set(names) - set(stored.files))
            extra = sorted(set(stored.files) - set(names))
            raise ExportError(
                f"{path}: parameters do not match its config "
                f"(missing {missing[:3]}, unexpected {extra[:3]})"
            )
        leaves = []
        for name, like in expected.items():
            array = stored[name]
            if array.shape != like.shape:
                raise ExportError(
                    f"{path}: {name} has shape {array.shape}, its config makes "
                    f"{like.shape}"
                )
            leaves.append(jax.numpy.asarray(array, np.float32))
    params, static = eqx.partition(template, eqx.is_array)
    params = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(params), leaves)
    models = eqx.combine(params, static)
    return config, models["vae"], models["rnn"], models["controller"]
