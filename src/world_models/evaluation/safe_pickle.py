"""Reading result pickles written by other tools, without running anything in them.

Only dicts, lists, tuples, numbers, strings and numpy arrays are rebuilt; any other
global a pickle asks for is refused before it can be called.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for something other than plain data or numpy arrays."""


class ResultFileError(ValueError):
    """A prediction-result file is missing, unreadable or lacks the expected data."""


# ------------------------------------------------------------ safe pickles


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    # Protocol-2 pickles store bytes as _codecs.encode(text, "latin1"); nothing else.
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise UnsafePickleError(f"_codecs.encode with encoding {encoding!r} refused")
    return text.encode("latin1")


def _empty_bytes(*args: Any) -> bytes:
    if args:
        raise UnsafePickleError("bytes() with arguments refused")
    return b""


def _numpy_globals() -> dict[tuple[str, str], Any]:
    from numpy._core import multiarray, numeric

    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }
    # Protocol-2 pickles name builtins "__builtin__"; complex has no opcode of its own,
    # bytes() is how protocol 2 writes b"".
    for builtins_name in ("builtins", "__builtin__"):
        allowed[(builtins_name, "complex")] = complex
        allowed[(builtins_name, "bytes")] = _empty_bytes
    # numpy < 2 writes numpy.core.*, numpy >= 2 writes numpy._core.*: same functions.
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{package}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """Rebuilds only dict/list/tuple/numbers/strings and numpy arrays, dtypes, scalars.

    Any other global (a class, ``os.system``, ``builtins.eval`` ...) is refused before
    it is imported, so nothing named in the file runs.
    """

    _allowed = _numpy_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to load global {module}.{name}: only dicts, lists, tuples, "
                "numbers, strings and numpy arrays are accepted"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("refusing a pickle with persistent ids")


def _check_plain(value: Any, where: str = "root") -> None:
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes)):
        return
    if isinstance(value, np.generic):
        if value.dtype.kind == "O":
            raise UnsafePickleError(f"object-dtype numpy scalar at {where}")
        return
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            for index, item in enumerate(value.flat):
                _check_plain(item, f"{where}[{index}]")
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_plain(item, f"{where}[{index}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            _check_plain(key, f"{where} key")
            _check_plain(item, f"{where}[{key!r}]")
        return
    raise UnsafePickleError(f"value of type {type(value).__name__} at {where} refused")


def safe_loads(data: bytes) -> Any:
    """Unpickle ``data`` with ``RestrictedUnpickler``; the result is plain data only."""
    value = RestrictedUnpickler(io.BytesIO(data)).load()
    _check_plain(value)
    return value


def safe_load_pickle(path: str | os.PathLike) -> Any:
    """Read a pickle file safely; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ResultFileError(f"{path}: no such file")
    try:
        return safe_loads(path.read_bytes())
    except UnsafePickleError as error:
        raise UnsafePickleError(f"{path}: {error}") from None
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        IndexError,
    ) as error:
        raise ResultFileError(
            f"{path}: unreadable or corrupt pickle ({error})"
        ) from None


def load_mse_curve(path: str | os.PathLike) -> np.ndarray:
    """The ``mse_per_horizon_pixels`` of a result pickle as a float64 vector."""
    data = safe_load_pickle(path)
    if not isinstance(data, dict) or "mse_per_horizon_pixels" not in data:
        raise ResultFileError(f"{path}: not a dict with 'mse_per_horizon_pixels'")
    try:
        curve = np.asarray(data["mse_per_horizon_pixels"], dtype=np.float64)
    except (TypeError, ValueError):
        raise ResultFileError(
            f"{path}: mse_per_horizon_pixels is not numeric"
        ) from None
    if curve.ndim != 1 or curve.size == 0:
        raise ResultFileError(
            f"{path}: mse_per_horizon_pixels must be a non-empty list, "
            f"got shape {curve.shape}"
        )
    return curve
