"""V and M of a run (or an exported agent), loaded once per pair of checkpoints and
kept for the next agent the process makes."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

from world_models.config import Config
from world_models.export import is_exported, load_exported
from world_models.models.mdnrnn import MDNRNN
from world_models.models.vae import ConvVAE
from world_models.run_directory import load_run_config
from world_models.training.rnn import latest_rnn_step, load_rnn
from world_models.training.vae import checkpointer as vae_checkpointer
from world_models.training.vae import load_vae

_CACHED_RUNS = 2
CheckpointId = tuple[int, int, int] | None  # (step, inode, mtime) of its folder
# run_dir -> ((V id, M id), models): one entry per run, so a newer checkpoint replaces
# the models it supersedes instead of keeping them alive.
_model_cache: OrderedDict[
    str, tuple[tuple[CheckpointId, CheckpointId], tuple[Config, ConvVAE, MDNRNN]]
] = OrderedDict()


def _checkpoint_id(run_dir: str, model: str, step: int | None) -> CheckpointId:
    """A checkpoint by its folder, not only its step: an M trained afresh to the step
    of the one it replaced (``pipeline.retrain_rnn``) is another folder."""
    if step is None:
        return None
    stat = (Path(run_dir) / model / "ckpt" / str(step)).stat()
    return step, stat.st_ino, stat.st_mtime_ns


def _checkpoint_ids(run_dir: str) -> tuple[CheckpointId, CheckpointId]:
    """Identities of the latest V and M checkpoints of ``run_dir``."""
    vae_checkpoints = vae_checkpointer(run_dir, load_run_config(run_dir).vae)
    try:
        vae_step = vae_checkpoints.latest_step()
    finally:
        vae_checkpoints.close()
    return (_checkpoint_id(run_dir, "vae", vae_step),
            _checkpoint_id(run_dir, "rnn", latest_rnn_step(run_dir)))


def load_models(run_dir: str) -> tuple[Config, ConvVAE, MDNRNN]:
    """Config, V and M of ``run_dir`` (a run, or an exported agent), loaded once per
    pair of checkpoints.

    A later curriculum round that retrains M (or V) writes a new checkpoint; agents
    made afterwards in the same process must act with it, not with the first load.
    """
    if is_exported(run_dir):
        config, vae, rnn, _ = load_exported(run_dir)
        return config, vae, rnn
    ids = _checkpoint_ids(run_dir)
    cached = _model_cache.get(run_dir)
    if cached is not None and cached[0] == ids:
        _model_cache.move_to_end(run_dir)
        return cached[1]
    models = load_run_config(run_dir), load_vae(run_dir), load_rnn(run_dir)
    _model_cache[run_dir] = (ids, models)
    _model_cache.move_to_end(run_dir)
    while len(_model_cache) > _CACHED_RUNS:
        _model_cache.popitem(last=False)
    return models
