"""The surrogate's train and infer tasks as campaign methods of kind ``gpu``."""

from __future__ import annotations

from orchestrator.apps.ml import infer, train
from orchestrator.dispatch import Method


def ml_methods(*, max_retries: int = 1) -> list[Method]:
    """``train_surrogate`` and ``infer_surrogate`` on GPU sites (retried as ``Method`` defaults).

    ``train_surrogate(weights, training_set, options) -> (weights, metrics)`` and
    ``infer_surrogate(weights, smiles) -> (means, stds)``: see :mod:`orchestrator.apps.ml`.
    """
    return [
        Method(train, name="train_surrogate", kind="gpu", max_retries=max_retries),
        Method(infer, name="infer_surrogate", kind="gpu", max_retries=max_retries),
    ]
