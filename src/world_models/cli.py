"""What the top-level scripts share: bad input ends with one clear line, not a
traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable

from world_models.checkpoint import CheckpointError
from world_models.config import ConfigError
from world_models.data.episodes import EpisodeError
from world_models.envs import UnknownEnvError
from world_models.export import ExportError

USER_ERRORS = (
    ConfigError,
    CheckpointError,
    EpisodeError,
    UnknownEnvError,
    ExportError,
    FileNotFoundError,
)


def run_cli(main: Callable[[], int | None]) -> None:
    """Run a script's ``main``; a user error prints ``error: ...`` and exits with 2."""
    try:
        code = main()
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code or 0)
