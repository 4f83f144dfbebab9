import os
import tempfile
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

# One XLA compilation cache for the test processes and the pipelines they start in
# subprocesses: a program compiled once is loaded, not recompiled, by every later
# process (the same executable, so the same results). A size limit turns on JAX's
# file lock, which the parallel workers (pytest -n) need.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR",
    str(Path(tempfile.gettempdir()) / "world_models_test_xla_cache"),
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(4 << 30))
