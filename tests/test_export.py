import json
from pathlib import Path

import jax
import numpy as np
import pytest
from tiny_run import make_tiny_run

from world_models.agent import export_agent, load_controller, make_agent
from world_models.data.play import play_episode
from world_models.dream.evolve import evolve
from world_models.evaluation.real import record_video
from world_models.export import (
    MANIFEST_FILENAME,
    PARAMETERS_FILENAME,
    ExportError,
    load_exported,
)
from world_models.run_directory import CONFIG_FILENAME, load_run_config
from world_models.training.rnn import load_rnn
from world_models.training.vae import load_vae


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    run = make_tiny_run(tmp_path_factory.mktemp("run"))
    evolve(run, progress=False)
    return run, export_agent(run, tmp_path_factory.mktemp("out") / "agent")


def _leaves(model):
    return jax.tree.leaves(model)


def test_exported_models_load_back_as_the_runs(exported):
    run, out = exported
    config, vae, rnn, controller = load_exported(out)
    assert config.env_id == "CarRacing-v3" and config == load_run_config(run)
    pairs = [
        (load_rnn(run), rnn),
        (load_controller(run, "best"), controller),
        (load_vae(run).encoder, vae.encoder),
        ((load_vae(run).to_mu, load_vae(run).to_logvar), (vae.to_mu, vae.to_logvar)),
    ]
    for source, loaded in pairs:  # what the agent acts with: bit for bit
        for a, b in zip(_leaves(source), _leaves(loaded), strict=True):
            assert b.dtype == np.float32
            np.testing.assert_array_equal(a, b)
    decoder = (load_vae(run).from_z, load_vae(run).decoder)
    for a, b in zip(_leaves(decoder), _leaves((vae.from_z, vae.decoder)), strict=True):
        assert b.dtype == np.float32  # stored as float16, loaded back to float32
        rounded = np.asarray(a).astype(np.float16).astype(np.float32)
        np.testing.assert_array_equal(b, rounded)


def test_an_exported_agent_replays_the_runs_episode(exported):
    run, out = exported
    episodes = [
        play_episode(
            "CarRacing-v3", make_agent("CarRacing-v3", str(path)), 7, 12,
            record_frames=False,
        )
        for path in (run, out)
    ]
    np.testing.assert_array_equal(episodes[0]["actions"], episodes[1]["actions"])
    np.testing.assert_array_equal(episodes[0]["rewards"], episodes[1]["rewards"])
    with pytest.raises(ValueError, match="keeps no CMA mean"):
        load_controller(out, "mean")
    video = record_video(out, seed=7, max_steps=5, video_format="gif")
    assert video.parent == out / "eval" and video.stat().st_size > 0


def test_broken_exports_are_refused(exported, tmp_path):
    _, out = exported
    with pytest.raises(ExportError, match="holds no exported agent"):
        load_exported(tmp_path)
    manifest = json.loads((out / MANIFEST_FILENAME).read_text())

    def copy(name: str) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        for file in (CONFIG_FILENAME, PARAMETERS_FILENAME, MANIFEST_FILENAME):
            (folder / file).write_bytes((out / file).read_bytes())
        return folder

    future = copy("future")
    future_manifest = dict(manifest, format_version=99)
    (future / MANIFEST_FILENAME).write_text(json.dumps(future_manifest))
    with pytest.raises(ExportError, match="export format 99"):
        load_exported(future)

    other = copy("other_config")
    config = json.loads((other / CONFIG_FILENAME).read_text())
    config["rnn"]["hidden_size"] += 1
    (other / CONFIG_FILENAME).write_text(json.dumps(config))
    with pytest.raises(ExportError, match="has shape"):
        load_exported(other)

    partial = copy("partial")
    with np.load(out / PARAMETERS_FILENAME) as stored:
        kept = {name: stored[name] for name in stored.files[1:]}
    np.savez(partial / PARAMETERS_FILENAME, **kept)
    with pytest.raises(ExportError, match="do not match its config"):
        load_exported(partial)
