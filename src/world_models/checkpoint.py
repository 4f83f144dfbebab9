"""Orbax checkpoints of any training state, tied to the config that produced them.

A state is any pytree of Equinox modules, optax states, arrays and PRNG keys. Only its
array leaves are written; the rest is rebuilt from a template on restore. Orbax writes
each step into a temporary folder and renames it when complete, so a process killed
mid-save leaves the previous checkpoints intact and the half-written one is ignored.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import numpy as np
import orbax.checkpoint as ocp

from world_models.files import atomic_open, write_atomic_text, write_json

CONFIG_FILENAME = "checkpoint_config.json"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, or was written under another config."""


def _canonical(config: dict[str, Any]) -> Any:
    return json.loads(json.dumps(config, sort_keys=True, default=list))


def _is_array_like(leaf: Any) -> bool:
    """Arrays, and the shape-only leaves of a template made by
    ``eqx.filter_eval_shape``."""
    return eqx.is_array(leaf) or isinstance(leaf, jax.ShapeDtypeStruct)


def _is_key(leaf: Any) -> bool:
    return _is_array_like(leaf) and jax.dtypes.issubdtype(
        leaf.dtype, jax.dtypes.prng_key
    )


def _to_storable(tree: Any) -> Any:
    arrays, _ = eqx.partition(tree, _is_array_like)

    def storable(x: Any) -> Any:
        if not _is_key(x):
            return x
        if isinstance(x, jax.ShapeDtypeStruct):
            return jax.eval_shape(jax.random.key_data, x)
        return jax.random.key_data(x)

    return jax.tree.map(storable, arrays)


class Checkpointer:
    """Saves and restores training states under ``directory``, keeping the last
    ``keep``.

    ``defaults``: the config's default values. A key the saved config lacks (a setting
    added after those checkpoints were written) matches when ``config`` holds its
    default, the value that keeps the old behaviour, so old runs still load.
    ``ignore``: keys recorded but not compared (a seed that only chose the training
    stream: the state restored is valid under any).
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        config: dict[str, Any],
        keep: int = 3,
        defaults: dict[str, Any] | None = None,
        ignore: tuple[str, ...] = (),
    ):
        self.directory = Path(directory).absolute()
        self.config = _canonical(config)
        defaults = _canonical(defaults or {})
        self.keep = keep
        self._config_path = self.directory / CONFIG_FILENAME
        if self._config_path.exists():
            try:
                saved = json.loads(self._config_path.read_text())
            except json.JSONDecodeError:
                raise CheckpointError(
                    f"{self._config_path} is corrupt (not JSON)"
                ) from None
            changed = sorted(
                key
                for key in set(saved) | set(self.config)
                if key not in ignore
                and saved.get(key) != self.config.get(key)
                and not (
                    key not in saved
                    and key in defaults
                    and self.config.get(key) == defaults[key]
                )
            )
            if changed:
                raise CheckpointError(
                    f"checkpoints in {self.directory} were written under another "
                    f"config (differs in: {', '.join(changed) or 'structure'}); "
                    "start over with --fresh"
                )
        self._manager: ocp.CheckpointManager | None = None

    @property
    def manager(self) -> ocp.CheckpointManager:
        """Opened on first use, so reading an absent checkpoint creates no folder."""
        if self._manager is None:
            self._manager = ocp.CheckpointManager(
                self.directory,
                options=ocp.CheckpointManagerOptions(
                    max_to_keep=self.keep, create=True, enable_async_checkpointing=False
                ),
            )
        return self._manager

    def latest_step(self) -> int | None:
        if not self.directory.is_dir():
            return None
        self.manager.reload()
        return self.manager.latest_step()

    def save(self, step: int, state: Any) -> None:
        if not self._config_path.exists():
            self.directory.mkdir(parents=True, exist_ok=True)
            write_atomic_text(
                self._config_path, json.dumps(self.config, indent=2, sort_keys=True)
            )
        self.manager.save(
            step, args=ocp.args.StandardSave(_to_storable(state)), force=True
        )
        self.manager.wait_until_finished()

    def restore(self, template: Any, step: int | None = None) -> Any:
        """The state saved at ``step`` (default: latest), shaped like ``template``.

        The template may hold ``jax.ShapeDtypeStruct`` leaves (``eqx.filter_eval_shape``
        of the state's constructor): restoring then runs no initialiser at all.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        arrays, static = eqx.partition(template, _is_array_like)
        # Onto this process's default device, whatever devices saved it: a GPU run's
        # checkpoints are read by its CPU workers and on CPU-only machines.
        here = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=here),
            _to_storable(template),
        )
        try:
            restored = self.manager.restore(
                step, args=ocp.args.StandardRestore(abstract)
            )
        except Exception as error:  # orbax raises many types for damaged files
            raise CheckpointError(
                f"checkpoint step {step} in {self.directory} cannot be read "
                f"({type(error).__name__}: {error}); "
                "delete it or start over with --fresh"
            ) from error
        restored = jax.tree.map(
            lambda saved, like: (
                _wrap_key(saved, like)
                if _is_key(like)
                else _check_shape(saved, like, self.directory)
            ),
            restored,
            arrays,
        )
        return eqx.combine(restored, static)

    def close(self) -> None:
        if self._manager is not None:
            self._manager.close()
            self._manager = None


def _wrap_key(data: Any, like: Any) -> jax.Array:
    impl = jax.random.key_impl(like) if isinstance(like, jax.Array) else None
    return jax.random.wrap_key_data(data, impl=impl)


def _check_shape(saved: Any, like: Any, directory: Path) -> Any:
    if np.shape(saved) != np.shape(like):
        raise CheckpointError(
            f"checkpoint in {directory} holds shape {np.shape(saved)} where the model "
            f"expects {np.shape(like)}; it was written for another model"
        )
    return saved


# ------------------------------------------------ a trained network as a small folder


def save_module_folder(
    directory: str | os.PathLike,
    module: Any,
    info: dict[str, Any],
    leaves_filename: str,
    info_filename: str,
) -> Path:
    """``module``'s leaves and ``info`` (the json that rebuilds and checks it) in
    ``directory``, each written atomically, the json last: a folder with its json is
    complete."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_open(directory / leaves_filename, "wb") as handle:
        eqx.tree_serialise_leaves(handle, module)
    write_json(directory / info_filename, info)
    return directory


def read_module_info(
    directory: str | os.PathLike, info_filename: str, missing: str, parse: Any
) -> Any:
    """``parse(info)`` of the folder's json; CheckpointError with the ``missing``
    message when there is none, and when the json or a field ``parse`` reads is bad."""
    path = Path(directory) / info_filename
    if not path.is_file():
        raise CheckpointError(f"{missing} ({path} missing)")
    try:
        return parse(json.loads(path.read_text()))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise CheckpointError(
            f"{path} is corrupt ({type(error).__name__}: {error})") from None


def read_module_leaves(path: str | os.PathLike, template: Any) -> Any:
    """The leaves saved at ``path`` into ``template``; CheckpointError if unreadable."""
    try:
        return eqx.tree_deserialise_leaves(path, template)
    except Exception as error:  # numpy and equinox raise many types for bad files
        raise CheckpointError(
            f"{path} cannot be read ({type(error).__name__}: {error})") from error
