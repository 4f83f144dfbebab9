"""Atomic file writes: a reader, or a run resumed after a kill, finds the old file or
the new one, never half of one. The temporary file sits beside the target (same
filesystem, so ``os.replace`` is atomic) under a name that folder listings skip."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

TMP_MARKER = ".tmp-"  # in every temporary file's name: listings skip such files


def temporary_path(path: Path) -> Path:
    return path.with_name(f".{path.name}{TMP_MARKER}{os.getpid()}")


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file for writing; on a clean exit it replaces ``path``
    (flushed and fsynced first), on an exception it is removed."""
    path = Path(path)
    tmp = temporary_path(path)
    try:
        with open(tmp, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_open(path) as handle:
        handle.write(text)


def write_json(path: str | os.PathLike, data: object) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically, creating its folder."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_atomic_text(path, json.dumps(data, indent=2))


def copy_tree_atomic(source: Path, destination: Path) -> None:
    """Copy the folder ``source`` to ``destination`` unless it is there: the copy is
    made beside it and renamed into place, so a kill leaves no half a folder."""
    if destination.exists():
        return
    partial = destination.with_name(destination.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(source, partial)
    partial.rename(destination)
