"""Surrogate model: a deep ensemble of small MLPs on Morgan count fingerprints.

Why this model
--------------
Campaigns start with tens to a few hundred labelled molecules and retrain every few rounds, on
whatever device the site has. An ensemble of small multilayer perceptrons on RDKit Morgan
fingerprints (radius 2, ``log1p`` of substructure counts, folded to ``fingerprint_bits``) is the
standard strong baseline in that regime: featurisation is milliseconds per molecule and needs no
3-D structure, a member trains in seconds on a CPU, and the members' spread is a usable
*epistemic* uncertainty for acquisition (upper confidence bound, expected improvement) without
Bayesian machinery (Lakshminarayanan et al., 2017). Members differ by their seeded
initialisation and minibatch order and (by default, ``bootstrap=True``) by a bootstrap resample
of the training split, which on small data both lowers the error and widens the otherwise
over-confident spread. The spread is then rescaled once on the validation split
(``calibrate=True``) so that its mean variance matches the mean squared error there. Graph
networks win on large data sets, not on a couple of hundred molecules.

On ``tests/data/xtb_ip.csv`` (228 xTB vertical IPs, 20 % held out) the defaults reach a
validation RMSE of about 0.7-0.9 eV against 1.3-1.4 eV for predicting the training mean, and the
spread is positively rank-correlated with the error (Spearman about 0.3), in about 2 s on one CPU
core.

Public API
----------
- :func:`train` ``(weights, training_set, options) -> (weights, metrics)``: fresh (``weights``
  is ``None``) or warm-started training.
- :func:`infer` ``(weights, smiles) -> (means, stds)``.
- :func:`to_module` ``(weights) -> SurrogateEnsemble``: the model as a picklable
  :class:`torch.nn.Module` for a model registry. :func:`infer` is
  ``to_module(weights, device).predict_smiles(smiles)``, so both give identical numbers on the
  same device.

Weights (a plain, picklable dict; tensors on the CPU)::

    {
        "format": "orch.surrogate/mlp-ensemble/1",
        "config": {"fingerprint_radius": 2, "fingerprint_bits": 1024, "counts": True,
                   "hidden_sizes": [128, 64], "n_members": 5},
        "target": {"mean": float, "std": float},   # normalisation of the training values
        "calibration": {"std_scale": float},       # factor on the members' spread
        "members": [state_dict, ...],              # one nn.Sequential state_dict per member
        "trained": {"rounds": int, "epochs": int, "n_train": int},  # cumulative history
    }

With the defaults that is about 2.8 MB. A warm start keeps the architecture and the target
normalisation of the weights it starts from; only the optimiser (AdamW, not stored) starts anew.

Metrics (numbers are floats; ``device`` is a string): ``train_loss`` (last epoch's mean squared
error on normalised targets, averaged over members), ``train_rmse``, ``val_rmse``, ``val_mae``,
``val_baseline_rmse`` (predicting the training mean), ``val_mean_std`` (mean calibrated std),
``std_scale`` (the spread's calibration factor), ``n_train``, ``n_val``, ``epochs`` (this
call), ``epochs_total``, ``n_members``, ``seconds`` (wall time of the call) and ``device``
(``cpu`` or ``cuda:0``): log it as a tag or parameter, not a metric. Validation metrics are in
the target's units and are NaN when there is no validation split.

Determinism: on the CPU, the same weights, data, options and seed give bit-identical weights
(training runs on ``threads`` torch threads, default 1, whatever the machine) and predictions
(for the same torch thread setting). The global torch RNG is neither used nor advanced. CUDA
kernels are not guaranteed bit-reproducible.

Model registries: ``mlflow.pytorch.log_model(to_module(weights),
serialization_format="pickle")`` keeps the class, so the loaded model has
:meth:`SurrogateEnsemble.predict_smiles`; the ``pt2`` format keeps ``forward`` only (export it
with ``input_example=module.featurize([...]).numpy()``).

Devices: ``"auto"`` is ``cuda:0`` (the first *visible* GPU, so ``CUDA_VISIBLE_DEVICES`` decides)
when CUDA is available, else the CPU.
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from torch import nn

from orchestrator.apps.ml.features import (
    InvalidSmilesError,
    mol_features,
    morgan_features,
    parse_smiles,
)

FORMAT = "orch.surrogate/mlp-ensemble/1"
"""``weights["format"]``: bumped when the layout changes incompatibly."""

DEFAULT_CONFIG: dict[str, Any] = {
    "fingerprint_radius": 2,
    "fingerprint_bits": 1024,
    "counts": True,
    "hidden_sizes": [128, 64],
    "n_members": 5,
}
"""Architecture used when neither the options nor the starting weights fix it."""

MIN_CALIBRATION = 5
"""Fewest validation molecules from which the spread's scale is recalibrated."""

STD_SCALE_RANGE = (0.1, 100.0)
"""Bounds of the calibration factor: a lucky validation split cannot switch uncertainty off."""

PREDICT_CHUNK = 4096
"""Molecules per forward pass in :meth:`SurrogateEnsemble.predict_smiles`."""

Weights = dict[str, Any]
Metrics = dict[str, float | str]


# -- options ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainOptions:
    """Settings of one :func:`train` call.

    Architecture fields (``hidden_sizes``, ``n_members``, ``fingerprint_*``, ``counts``) default
    to ``None``: :data:`DEFAULT_CONFIG` for a fresh model, the starting weights' own for a warm
    start (where a value that differs from them is an error).

    Attributes:
        epochs: Passes over the training split, per member.
        learning_rate: AdamW learning rate.
        batch_size: Minibatch size.
        weight_decay: AdamW weight decay.
        hidden_sizes: Widths of the hidden layers (ReLU).
        n_members: Ensemble size (at least 2: the spread is the uncertainty).
        fingerprint_radius: Morgan radius.
        fingerprint_bits: Fingerprint length.
        counts: ``log1p`` substructure counts (``True``) or 0/1 bits.
        bootstrap: Train each member on its own bootstrap resample of the training split
            (better accuracy and less over-confidence than seeds alone on small data).
        calibrate: Rescale the ensemble spread so that, on the validation split, the mean
            predicted variance equals the mean squared error (needs at least
            :data:`MIN_CALIBRATION` validation molecules; otherwise the scale is kept).
        validation_fraction: Share of the data held out for validation (0 to < 1); at least
            two molecules are always kept for training.
        seed: Seed for the split, the initialisation and the minibatch order (>= 0).
        device: ``auto``, ``cpu`` or ``cuda``.
        threads: Torch CPU threads while training on the CPU (restored afterwards); ``None``
            leaves torch's setting. The default, 1, is deliberate: these networks are too small
            to gain from more (about 20 % on two idle cores) and multi-threaded small matrix
            products slow down many-fold on a busy node; it also makes the weights independent
            of the machine's core count.
    """

    epochs: int = 60
    learning_rate: float = 3e-3
    batch_size: int = 32
    weight_decay: float = 1e-4
    hidden_sizes: tuple[int, ...] | None = None
    n_members: int | None = None
    fingerprint_radius: int | None = None
    fingerprint_bits: int | None = None
    counts: bool | None = None
    bootstrap: bool = True
    calibrate: bool = True
    validation_fraction: float = 0.2
    seed: int = 0
    device: str = "auto"
    threads: int | None = 1

    def __post_init__(self) -> None:
        """Check every value; normalise ``hidden_sizes`` to a tuple."""
        if self.hidden_sizes is not None:
            sizes = self.hidden_sizes
            if isinstance(sizes, int | str) or not all(_positive_int(h) for h in sizes):
                raise ValueError(f"hidden_sizes must be positive integers (got {sizes!r})")
            object.__setattr__(self, "hidden_sizes", tuple(int(h) for h in sizes))
        for name in ("epochs", "batch_size"):
            if not _positive_int(getattr(self, name)):
                raise ValueError(f"{name} must be a positive integer (got {getattr(self, name)!r})")
        for name in ("fingerprint_radius", "fingerprint_bits"):
            value = getattr(self, name)
            if value is not None and not _positive_int(value):
                raise ValueError(f"{name} must be a positive integer (got {value!r})")
        if self.n_members is not None and not (
            _positive_int(self.n_members) and self.n_members > 1
        ):
            raise ValueError(f"n_members must be an integer >= 2 (got {self.n_members!r})")
        if not (_real(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"learning_rate must be > 0 (got {self.learning_rate!r})")
        if not (_real(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be >= 0 (got {self.weight_decay!r})")
        if not (_real(self.validation_fraction) and 0 <= self.validation_fraction < 1):
            raise ValueError(
                f"validation_fraction must be in [0, 1) (got {self.validation_fraction!r})"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0 (got {self.seed!r})")
        for name in ("bootstrap", "calibrate", "counts"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, bool):
                raise ValueError(f"{name} must be true or false (got {value!r})")
        if self.threads is not None and not _positive_int(self.threads):
            raise ValueError(f"threads must be a positive integer or None (got {self.threads!r})")
        resolve_device(self.device, check_available=False)

    @classmethod
    def from_any(cls, options: TrainOptions | Mapping[str, Any] | None) -> TrainOptions:
        """Options from ``None`` (defaults), an instance, or a mapping of field names.

        Raises:
            ValueError: For unknown names or bad values.
        """
        if options is None:
            return cls()
        if isinstance(options, cls):
            return options
        if isinstance(options, Mapping):
            known = {f.name for f in fields(cls)}
            unknown = sorted(str(k) for k in options if k not in known)
            if unknown:
                raise ValueError(
                    f"unknown training option(s) {', '.join(unknown)}; "
                    f"known: {', '.join(sorted(known))}"
                )
            return cls(**dict(options))
        raise ValueError(
            f"options must be None, a dict or TrainOptions (got {type(options).__name__})"
        )


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _real(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def resolve_device(device: str = "auto", *, check_available: bool = True) -> torch.device:
    """The torch device for ``device``.

    Args:
        device: ``auto`` (``cuda:0`` if CUDA is available, else ``cpu``), ``cpu``, or ``cuda``
            / ``cuda:0``: the first GPU that ``CUDA_VISIBLE_DEVICES`` leaves visible. Other
            indices are refused: a worker's GPU is chosen by its visible devices.
        check_available: Refuse ``cuda`` when CUDA is not available.

    Raises:
        ValueError: For another name, or ``cuda`` without CUDA.
    """
    name = device.strip().lower() if isinstance(device, str) else device
    if name == "auto":
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name in ("cuda", "cuda:0"):
        if check_available and not torch.cuda.is_available():
            raise ValueError("device 'cuda' was asked for but CUDA is not available here")
        return torch.device("cuda", 0)
    raise ValueError(
        f"device must be 'auto', 'cpu' or 'cuda' (got {device!r}); "
        "choose the GPU with CUDA_VISIBLE_DEVICES"
    )


# -- the model --------------------------------------------------------------------------------


@contextmanager
def _cpu_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` torch intra-op threads (``None``: unchanged)."""
    before = torch.get_num_threads()
    if threads is None or threads == before:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _derive_seed(*keys: int) -> int:
    """A 63-bit seed derived from ``keys`` (independent streams for distinct keys)."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1, dtype=np.uint64)[0] >> 1)


def _mlp(n_inputs: int, hidden_sizes: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = n_inputs
    for size in hidden_sizes:
        layers += [nn.Linear(width, size), nn.ReLU()]
        width = size
    layers.append(nn.Linear(width, 1))
    return nn.Sequential(*layers)


class SurrogateEnsemble(nn.Module):
    """An ensemble of MLPs on Morgan fingerprints predicting one property with uncertainty.

    ``forward(features)`` takes a ``[n, fingerprint_bits]`` float tensor (from
    :meth:`featurize`) and returns a ``[n, 2]`` tensor: column 0 is the ensemble mean, column 1
    the ensemble standard deviation (Bessel-corrected over members) times ``std_scale``, both
    in the target's units. :meth:`predict_smiles` featurises and calls ``forward``.

    Instances pickle by reference to this class (``torch.save``, ``mlflow.pytorch``); loading
    needs ``orchestrator.apps.ml`` importable, RDKit for :meth:`featurize`, and nothing else.

    Attributes:
        fingerprint_radius: Morgan radius of the features.
        fingerprint_bits: Feature length.
        counts: Count (``log1p``) features rather than bits.
        hidden_sizes: Hidden layer widths of every member.
        members: The member networks.
        target_mean: Buffer: the training values' mean (outputs are de-normalised with it).
        target_std: Buffer: the training values' standard deviation.
        std_scale: Buffer: calibration factor applied to the members' spread.
    """

    target_mean: torch.Tensor
    target_std: torch.Tensor
    std_scale: torch.Tensor

    def __init__(
        self,
        *,
        fingerprint_radius: int,
        fingerprint_bits: int,
        counts: bool,
        hidden_sizes: Sequence[int],
        n_members: int,
        target_mean: float = 0.0,
        target_std: float = 1.0,
        std_scale: float = 1.0,
        seed: int = 0,
    ):
        super().__init__()
        self.fingerprint_radius = int(fingerprint_radius)
        self.fingerprint_bits = int(fingerprint_bits)
        self.counts = bool(counts)
        self.hidden_sizes = tuple(int(h) for h in hidden_sizes)
        members = []
        for index in range(int(n_members)):
            # each member's initialisation has its own seed; the global RNG is left untouched
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(_derive_seed(seed, index, 0))
                members.append(_mlp(self.fingerprint_bits, self.hidden_sizes))
        self.members = nn.ModuleList(members)
        self.register_buffer("target_mean", torch.tensor(float(target_mean), dtype=torch.float32))
        self.register_buffer("target_std", torch.tensor(float(target_std), dtype=torch.float32))
        self.register_buffer("std_scale", torch.tensor(float(std_scale), dtype=torch.float32))

    @property
    def n_members(self) -> int:
        """Number of ensemble members."""
        return len(self.members)

    @property
    def device(self) -> torch.device:
        """Where the parameters are."""
        return self.target_mean.device

    def config(self) -> dict[str, Any]:
        """The architecture, as stored in ``weights["config"]``."""
        return {
            "fingerprint_radius": self.fingerprint_radius,
            "fingerprint_bits": self.fingerprint_bits,
            "counts": self.counts,
            "hidden_sizes": list(self.hidden_sizes),
            "n_members": self.n_members,
        }

    def featurize(self, smiles: Sequence[str]) -> torch.Tensor:
        """This model's features for ``smiles``: a float32 CPU tensor ``[n, fingerprint_bits]``.

        Raises:
            InvalidSmilesError: A ``ValueError`` naming every invalid SMILES.
        """
        return morgan_features(
            smiles,
            radius=self.fingerprint_radius,
            n_bits=self.fingerprint_bits,
            counts=self.counts,
        )

    def member_predictions(self, features: torch.Tensor) -> torch.Tensor:
        """Each member's predictions, in the target's units: shape ``[n_members, n]``.

        Raises:
            ValueError: If ``features`` is not ``[n, fingerprint_bits]``.
        """
        if features.dim() != 2 or features.shape[1] != self.fingerprint_bits:
            raise ValueError(
                f"features must have shape [n, {self.fingerprint_bits}] "
                f"(got {list(features.shape)})"
            )
        outputs = torch.stack([member(features).squeeze(-1) for member in self.members])
        return outputs * self.target_std + self.target_mean

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Ensemble mean and calibrated spread: ``[n, 2]`` (column 0 mean, column 1 std)."""
        predictions = self.member_predictions(features)
        if predictions.shape[1] == 0:
            return predictions.new_zeros((0, 2))
        mean = predictions.mean(dim=0)
        std = predictions.std(dim=0, correction=1) * self.std_scale
        return torch.stack((mean, std), dim=1)

    def predict_smiles(self, smiles: Sequence[str]) -> tuple[list[float], list[float]]:
        """Mean and standard deviation of the property for each SMILES.

        Every SMILES is checked first; then chunks of :data:`PREDICT_CHUNK` molecules are
        featurised (as :meth:`featurize` does) and passed through ``forward`` on the device the
        module is on.

        Returns:
            ``(means, stds)``, one float each per SMILES, in input order.

        Raises:
            InvalidSmilesError: A ``ValueError`` naming every invalid SMILES.
        """
        mols = parse_smiles(smiles)
        if not mols:
            return [], []
        chunks = []
        with torch.no_grad():
            for start in range(0, len(mols), PREDICT_CHUNK):
                features = mol_features(
                    mols[start : start + PREDICT_CHUNK],
                    radius=self.fingerprint_radius,
                    n_bits=self.fingerprint_bits,
                    counts=self.counts,
                )
                chunks.append(self(features.to(self.device)).cpu())
        out = torch.cat(chunks).double()
        return out[:, 0].tolist(), out[:, 1].tolist()

    def to_weights(self, trained: Mapping[str, int] | None = None) -> Weights:
        """This model as a weights dict (CPU tensors, copies).

        Args:
            trained: The ``trained`` history to store (default: none yet).
        """
        return {
            "format": FORMAT,
            "config": self.config(),
            "target": {"mean": float(self.target_mean), "std": float(self.target_std)},
            "calibration": {"std_scale": float(self.std_scale)},
            "members": [
                {k: v.detach().cpu().clone() for k, v in member.state_dict().items()}
                for member in self.members
            ],
            "trained": dict(trained or {"rounds": 0, "epochs": 0, "n_train": 0}),
        }

    @classmethod
    def from_weights(cls, weights: Mapping[str, Any]) -> SurrogateEnsemble:
        """The model stored in ``weights`` (on the CPU).

        Raises:
            ValueError: If ``weights`` is not a weights dict of this format.
        """
        if not isinstance(weights, Mapping) or weights.get("format") != FORMAT:
            found = weights.get("format") if isinstance(weights, Mapping) else type(weights)
            raise ValueError(f"not surrogate weights of format {FORMAT!r} (format: {found!r})")
        try:
            config = dict(weights["config"])
            target = weights["target"]
            scale = weights["calibration"]["std_scale"]
            model = cls(
                **config, target_mean=target["mean"], target_std=target["std"], std_scale=scale
            )
            states = list(weights["members"])
            if len(states) != model.n_members:
                raise ValueError(f"{len(states)} member states for {model.n_members} members")
            for member, state in zip(model.members, states, strict=True):
                member.load_state_dict(state)
        except (KeyError, TypeError, RuntimeError, ValueError) as exc:
            raise ValueError(f"malformed surrogate weights: {exc}") from exc
        return model


def to_module(weights: Mapping[str, Any], device: str = "cpu") -> SurrogateEnsemble:
    """The model in ``weights`` as an :class:`SurrogateEnsemble` in eval mode.

    Args:
        weights: Weights from :func:`train`.
        device: ``cpu`` (default: what a model registry should store), ``cuda`` or ``auto``.

    Raises:
        ValueError: For malformed weights or an unknown/unavailable device.
    """
    return SurrogateEnsemble.from_weights(weights).to(resolve_device(device)).eval()


def infer(
    weights: Mapping[str, Any], smiles_batch: Sequence[str], *, device: str = "auto"
) -> tuple[list[float], list[float]]:
    """Predicted mean and standard deviation per molecule.

    The same code path as ``to_module(weights, device).predict_smiles(smiles_batch)``.

    Args:
        weights: Weights from :func:`train`.
        smiles_batch: SMILES strings.
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.

    Returns:
        ``(means, stds)``: lists of floats, one per SMILES, in the target's units.

    Raises:
        InvalidSmilesError: A ``ValueError`` naming every invalid SMILES (checked before any
            prediction).
        ValueError: For malformed weights or an unknown/unavailable device.
    """
    return to_module(weights, device).predict_smiles(smiles_batch)


# -- training ---------------------------------------------------------------------------------


def _pairs(training_set: Any) -> tuple[list[str], list[float]]:
    """SMILES and values from a list of pairs or a ``{"smiles", "values"}`` mapping."""
    if isinstance(training_set, Mapping):
        missing = [k for k in ("smiles", "values") if k not in training_set]
        if missing:
            raise ValueError(
                f"a training-set mapping needs 'smiles' and 'values' (missing {missing})"
            )
        smiles, raw = list(training_set["smiles"]), list(training_set["values"])
        if len(smiles) != len(raw):
            raise ValueError(f"{len(smiles)} SMILES but {len(raw)} values in the training set")
    elif isinstance(training_set, Iterable) and not isinstance(training_set, str | bytes):
        items = list(training_set)
        if not all(
            isinstance(p, Sequence) and not isinstance(p, str) and len(p) == 2 for p in items
        ):
            raise ValueError("the training set must be (smiles, value) pairs")
        smiles, raw = [p[0] for p in items], [p[1] for p in items]
    else:
        raise ValueError(
            "the training set must be a list of (smiles, value) pairs or "
            f"{{'smiles': [...], 'values': [...]}} (got {type(training_set).__name__})"
        )
    values: list[float] = []
    bad: list[str] = []
    for i, value in enumerate(raw):
        real = isinstance(value, numbers.Real) and not isinstance(value, bool)
        number = float(value) if real else math.nan
        if not math.isfinite(number):
            bad.append(f"{value!r} (#{i})")
        values.append(number)
    if bad:
        raise ValueError(
            f"{len(bad)} training value(s) are not finite numbers: {', '.join(bad[:10])}"
        )
    if len(smiles) < 2:
        raise ValueError(f"training needs at least 2 molecules (got {len(smiles)})")
    return smiles, values


def _architecture(weights: Mapping[str, Any] | None, opts: TrainOptions) -> dict[str, Any]:
    """The architecture to train: the options' choices over the weights' (or the defaults)."""
    asked = {
        "fingerprint_radius": opts.fingerprint_radius,
        "fingerprint_bits": opts.fingerprint_bits,
        "counts": opts.counts,
        "hidden_sizes": list(opts.hidden_sizes) if opts.hidden_sizes is not None else None,
        "n_members": opts.n_members,
    }
    if weights is None:
        return {k: DEFAULT_CONFIG[k] if v is None else v for k, v in asked.items()}
    config = SurrogateEnsemble.from_weights(weights).config()
    clashes = [
        f"{k}={v!r} (weights have {config[k]!r})"
        for k, v in asked.items()
        if v is not None and v != config[k]
    ]
    if clashes:
        raise ValueError(
            "a warm start keeps the architecture of its weights; options differ: "
            + ", ".join(clashes)
        )
    return config


def _split(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Training and validation indices (sorted), keeping at least two for training."""
    n_val = min(int(fraction * n), n - 2)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(_derive_seed(seed, 1)))
    return order[n_val:].sort().values, order[:n_val].sort().values


def _fit_member(
    member: nn.Module,
    features: torch.Tensor,
    targets: torch.Tensor,
    opts: TrainOptions,
    seed: int,
) -> float:
    """Train one member in place; return its last epoch's mean training loss."""
    generator = torch.Generator().manual_seed(seed)
    device = features.device
    if opts.bootstrap:
        sample = torch.randint(len(features), (len(features),), generator=generator).to(device)
        features, targets = features[sample], targets[sample]
    n = len(features)
    optimizer = torch.optim.AdamW(
        member.parameters(), lr=opts.learning_rate, weight_decay=opts.weight_decay
    )
    loss_fn = nn.MSELoss()
    member.train()
    epoch_loss = torch.zeros((), device=device)
    for _ in range(opts.epochs):
        order = torch.randperm(n, generator=generator).to(device)
        epoch_loss = torch.zeros((), device=device)
        for start in range(0, n, opts.batch_size):
            batch = order[start : start + opts.batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(member(features[batch]).squeeze(-1), targets[batch])
            loss.backward()
            optimizer.step()
            epoch_loss = epoch_loss + loss.detach() * len(batch)
    member.eval()
    return float(epoch_loss) / n


def _std_scale(predictions: torch.Tensor, actual: torch.Tensor) -> float:
    """Factor that makes the mean predicted variance equal the mean squared error."""
    predictions = predictions.double()
    squared_error = (predictions.mean(dim=0) - actual.double()).pow(2).mean()
    variance = predictions.var(dim=0, correction=1).mean()
    if not float(variance) > 0:
        return 1.0
    low, high = STD_SCALE_RANGE
    return min(max(float((squared_error / variance).sqrt()), low), high)


def _errors(predicted: torch.Tensor, actual: torch.Tensor) -> tuple[float, float]:
    """RMSE and MAE (NaN for no data)."""
    if len(actual) == 0:
        return math.nan, math.nan
    diff = predicted.double().cpu() - actual.double().cpu()
    return float(diff.pow(2).mean().sqrt()), float(diff.abs().mean())


def train(
    weights: Mapping[str, Any] | None,
    training_set: Sequence[tuple[str, float]] | Mapping[str, Sequence[Any]],
    options: TrainOptions | Mapping[str, Any] | None = None,
) -> tuple[Weights, Metrics]:
    """Train the surrogate, from scratch or starting from earlier weights.

    Everything is checked (options, values, every SMILES) before training starts. A held-out
    split (``validation_fraction``, chosen by ``seed``) is used for the validation metrics only;
    the members train on the rest.

    Args:
        weights: ``None`` for a fresh model, or weights returned by an earlier :func:`train`
            (warm start: architecture and target normalisation are kept).
        training_set: ``[(smiles, value), ...]`` or ``{"smiles": [...], "values": [...]}``.
        options: :class:`TrainOptions`, a dict of its fields, or ``None`` for the defaults.

    Returns:
        ``(weights, metrics)``: the new weights (a plain dict, see the module docstring) and
        the training metrics.

    Raises:
        InvalidSmilesError: A ``ValueError`` naming every invalid SMILES.
        ValueError: For bad options, values, weights, or a warm start whose options ask for
            another architecture.
    """
    started = time.perf_counter()
    opts = TrainOptions.from_any(options)
    smiles, values = _pairs(training_set)
    config = _architecture(weights, opts)
    device = resolve_device(opts.device)
    features = morgan_features(
        smiles,
        radius=config["fingerprint_radius"],
        n_bits=config["fingerprint_bits"],
        counts=config["counts"],
    )
    y = torch.tensor(values, dtype=torch.float64)
    train_idx, val_idx = _split(len(y), opts.validation_fraction, opts.seed)

    if weights is None:
        y_train = y[train_idx]
        std = float(y_train.std(correction=0))
        model = SurrogateEnsemble(
            **config,
            target_mean=float(y_train.mean()),
            target_std=std if std > 1e-12 else 1.0,
            seed=opts.seed,
        )
        history = {"rounds": 0, "epochs": 0, "n_train": 0}
    else:
        model = SurrogateEnsemble.from_weights(weights)
        previous = weights.get("trained") or {}
        history = {k: int(previous.get(k, 0)) for k in ("rounds", "epochs", "n_train")}
    model.to(device)

    mean, scale = float(model.target_mean), float(model.target_std)
    targets = ((y - mean) / scale).float()
    x_train, z_train = features[train_idx].to(device), targets[train_idx].to(device)
    with _cpu_threads(opts.threads if device.type == "cpu" else None):
        losses = [
            _fit_member(member, x_train, z_train, opts, _derive_seed(opts.seed, index, 2))
            for index, member in enumerate(model.members)
        ]

    model.eval()
    with torch.no_grad():
        x_val = features[val_idx].to(device)
        if opts.calibrate and len(val_idx) >= MIN_CALIBRATION:
            model.std_scale.fill_(_std_scale(model.member_predictions(x_val).cpu(), y[val_idx]))
        train_out = model(x_train).cpu()
        val_out = model(x_val).cpu()
    train_rmse, _ = _errors(train_out[:, 0], y[train_idx])
    val_rmse, val_mae = _errors(val_out[:, 0], y[val_idx])
    baseline = torch.full((len(val_idx),), float(y[train_idx].mean()), dtype=torch.float64)
    val_baseline_rmse, _ = _errors(baseline, y[val_idx])

    history = {
        "rounds": history["rounds"] + 1,
        "epochs": history["epochs"] + opts.epochs,
        "n_train": len(train_idx),
    }
    new_weights = model.to_weights(history)
    metrics: Metrics = {
        "train_loss": float(np.mean(losses)),
        "train_rmse": train_rmse,
        "val_rmse": val_rmse,
        "val_mae": val_mae,
        "val_baseline_rmse": val_baseline_rmse,
        "val_mean_std": float(val_out[:, 1].double().mean()) if len(val_idx) else math.nan,
        "std_scale": float(model.std_scale),
        "n_train": float(len(train_idx)),
        "n_val": float(len(val_idx)),
        "epochs": float(opts.epochs),
        "epochs_total": float(history["epochs"]),
        "n_members": float(model.n_members),
        "seconds": time.perf_counter() - started,
        "device": str(device),
    }
    return new_weights, metrics


__all__ = [
    "DEFAULT_CONFIG",
    "FORMAT",
    "InvalidSmilesError",
    "Metrics",
    "SurrogateEnsemble",
    "TrainOptions",
    "Weights",
    "infer",
    "resolve_device",
    "to_module",
    "train",
]
