"""What a CarRacing frame shows: the road under and ahead of the car, and its speed.

The heuristic drivers (``data/drivers.py``) steer by these readings.
"""

from __future__ import annotations

import numpy as np

# Geometry of CarRacing's 96x96 observation (the camera follows the car, nose up).
VIEW_ROWS = 84  # rows above the dashboard
CAR_ROW = 66  # top of the car sprite
CAR_COL = 47.5  # car centre column
SPEED_BAR_COLS = slice(12, 15)  # dashboard "true speed" bar
SPEED_PER_PIXEL = 1 / (2.4 * 0.02)  # bar height = (H/40) * 0.02 * speed
GAS = 1  # index in the action (steer, gas, brake)


def road_mask(raw_obs: np.ndarray) -> np.ndarray:
    """True where the view (above the dashboard) is not grass: road, kerbs, car."""
    view = raw_obs[:VIEW_ROWS].astype(np.int16)
    return view[..., 1] - view[..., 0] < 40


def dashboard_speed(raw_obs: np.ndarray) -> float:
    """Speed read from the height of the white bar on the dashboard."""
    bar = raw_obs[VIEW_ROWS:, SPEED_BAR_COLS].astype(np.float32).mean(axis=(1, 2))
    return float((bar / 255.0).sum() * SPEED_PER_PIXEL)


def road_center(row: np.ndarray, near: float) -> float | None:
    """Centre column of the road run in ``row`` closest to column ``near``."""
    columns = np.flatnonzero(row)
    if columns.size == 0:
        return None
    breaks = np.flatnonzero(np.diff(columns) > 1)
    starts = columns[np.r_[0, breaks + 1]]
    ends = columns[np.r_[breaks, columns.size - 1]]
    distance = np.maximum(0, np.maximum(starts - near, near - ends))
    best = int(np.argmin(distance))
    return (starts[best] + ends[best]) / 2


def clear_distance(road: np.ndarray) -> int:
    """Rows of road straight ahead of the car before the first grass pixel."""
    ahead = road[:CAR_ROW, int(CAR_COL) - 2 : int(CAR_COL) + 3].all(axis=1)[::-1]
    blocked = np.flatnonzero(~ahead)
    return int(blocked[0]) if blocked.size else CAR_ROW
