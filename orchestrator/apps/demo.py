"""Worker-side functions of the demo campaign: a cheap 'simulation' and a surrogate fit.

The objective is Himmelblau's function (four minima of value 0) plus a small smooth bump, so
the search has something to find; the surrogate is a quadratic least-squares fit.
"""

from __future__ import annotations

import math
import random

import numpy as np


def simulate(x: float, y: float, cost: int = 300_000) -> float:
    """Evaluate the demo objective at (x, y), spending a little CPU like a real code would.

    Args:
        x: First coordinate, in [-5, 5].
        y: Second coordinate, in [-5, 5].
        cost: Iterations of busy work (makes each task take a few milliseconds).

    Raises:
        ValueError: a coordinate is outside [-5, 5] or not finite.
    """
    for name, value in (("x", x), ("y", y)):
        if not math.isfinite(value) or abs(value) > 5:
            raise ValueError(f"{name}={value!r} is outside the domain [-5, 5]")
    acc = 0.0
    for i in range(cost):
        acc += math.sin(i * 1e-3) * 1e-9
    himmelblau = (x * x + y - 11) ** 2 + (x + y * y - 7) ** 2
    return himmelblau + 0.5 * math.exp(-((x - 1) ** 2 + (y - 1) ** 2)) + acc * 0.0


def _features(points: np.ndarray) -> np.ndarray:
    x, y = points[:, 0], points[:, 1]
    return np.stack(
        [np.ones_like(x), x, y, x * x, x * y, y * y, x**3, y**3, x * x * y, x * y * y]
    ).T


def fit_and_rank(
    points: list[list[float]],
    values: list[float],
    n_candidates: int = 2000,
    top: int = 8,
    seed: int = 0,
) -> dict:
    """Fit a cubic surrogate to (points, values) and return the most promising new points.

    Runs on a ``gpu`` site in the demo (numpy here; a real campaign would train a network).

    Returns:
        ``{'candidates': [[x, y], ...], 'rmse': float, 'n_train': int}``.
    """
    data = np.asarray(points, dtype=float)
    target = np.log1p(np.asarray(values, dtype=float))
    coef, *_ = np.linalg.lstsq(_features(data), target, rcond=None)
    rmse = float(np.sqrt(np.mean((_features(data) @ coef - target) ** 2)))
    rng = random.Random(seed)
    pool = np.array([[rng.uniform(-5, 5), rng.uniform(-5, 5)] for _ in range(n_candidates)])
    order = np.argsort(_features(pool) @ coef)
    best = pool[order[:top]]
    return {"candidates": best.tolist(), "rmse": rmse, "n_train": len(values)}
