"""Machine-learning tasks that run on workers: a molecular property surrogate with uncertainty.

- :func:`train` ``(weights, training_set, options) -> (weights, metrics)``
- :func:`infer` ``(weights, smiles) -> (means, stds)``
- :func:`to_module` ``(weights) -> SurrogateEnsemble`` (a picklable ``torch.nn.Module``)

See :mod:`orchestrator.apps.ml.surrogate` for the model, the weights layout and the metrics.
Imports only the standard library, numpy, torch and RDKit.
"""

from orchestrator.apps.ml.features import InvalidSmilesError, morgan_features, parse_smiles
from orchestrator.apps.ml.surrogate import (
    DEFAULT_CONFIG,
    FORMAT,
    Metrics,
    SurrogateEnsemble,
    TrainOptions,
    Weights,
    infer,
    resolve_device,
    to_module,
    train,
)

__all__ = [
    "DEFAULT_CONFIG",
    "FORMAT",
    "InvalidSmilesError",
    "Metrics",
    "SurrogateEnsemble",
    "TrainOptions",
    "Weights",
    "infer",
    "morgan_features",
    "parse_smiles",
    "resolve_device",
    "to_module",
    "train",
]
