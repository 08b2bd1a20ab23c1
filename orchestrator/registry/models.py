"""Log trained torch models to MLflow, version them, move aliases by policy, load them back.

One :meth:`ModelRegistry.log_training` call = one MLflow run (params, metrics, the model in
pickle format with explicit pip requirements: ~0.6 s) = one new version of the registered model.

**Exactly once, by task id**: a training logged with a ``task_id`` (or an ``orch.task_id``
tag) carries the tag ``orch.task_id`` on its run and version. Logging the same task id again
(a result replayed from the journal after ``--resume``) finds that run in the registry's
experiment and returns its version: no second run, no second version. A run left without a
version by a crash is marked deleted and logged afresh. :meth:`ModelRegistry.log_lineage`
skips rows whose ``task_id`` the version's lineage already holds.

**Alias policy** (:meth:`ModelRegistry.promote`): an alias (``champion`` by default) moves to a
version only when that version's metric is strictly better than the metric of the version that
holds the alias now (lower or higher is better, per call), or when no version holds it (or the
holder lacks the metric). Ties, NaN candidates and worse candidates leave it where it is. The
newest version needs no alias: ``load("latest")`` reads ``models:/<name>/latest`` (MLflow
reserves the alias name ``latest``). Promotions are serialized within this process; two
processes promoting the same model at once can race.

**Fail fast**: the constructor probes ``GET /health`` (3 s) and raises
:class:`RegistryUnavailableError` naming the URI and the fix. Every MLflow call orch makes runs
with ``MLFLOW_HTTP_REQUEST_MAX_RETRIES=0`` and ``MLFLOW_HTTP_REQUEST_TIMEOUT`` (20 s by default)
instead of MLflow's ~250 s of retries; a failed call whose server no longer answers /health is
raised as :class:`RegistryUnavailableError` too. Other MLflow failures are raised as
:class:`RegistryError` (both are ``OrchError``), naming the operation, the URI and the model.

**Process-wide state**: MLflow reads these settings, and the tracking/registry URI that
``mlflow.pytorch.log_model``/``load_model`` use, from environment variables and module
globals. Orch sets them only for the duration of its own calls, under one process-wide lock,
and restores the previous values afterwards (so orch's MLflow calls are serialized, and other
MLflow code running in another thread at that moment sees orch's values). Importing this
package sets ``MLFLOW_DISABLE_TELEMETRY=true`` for the process.

**Credentials of an embedded server** (see :mod:`orchestrator.registry.server`): a registry
made from a :class:`TrackingServer` (or given ``credentials=``) sends the run's user and
password as HTTP basic auth on every request MLflow makes for it, artifact uploads and model
downloads included. The password never enters ``os.environ``: the usual way,
``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD``, would be inherited by every process
orch starts while a call runs (site engines, workers, containers). Instead orch registers an
MLflow *request auth provider* (MLflow's documented plugin interface,
:class:`~mlflow.tracking.request_auth.abstract_request_auth_provider.RequestAuthProvider`,
registered in-process rather than by entry point) that hands out the credentials of the call
in progress, and only for requests to that server's URL (MLflow code of another thread that
talks to another server meanwhile gets no header from orch). During a call only
``MLFLOW_TRACKING_AUTH`` (the provider's name, no secret) is set, and the caller's own
``MLFLOW_TRACKING_USERNAME``/``_PASSWORD``/``_TOKEN`` are hidden so that they are not sent to
orch's server. Registries of other URIs send nothing of orch's: MLflow's own variables apply
to them as usual.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import math
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pytorch
import requests
import torch
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, ViewType
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.telemetry import set_telemetry_client
from mlflow.tracking._model_registry import utils as _registry_utils
from mlflow.tracking._tracking_service import utils as _tracking_utils
from mlflow.tracking.request_auth.abstract_request_auth_provider import RequestAuthProvider
from mlflow.tracking.request_auth.registry import _request_auth_provider_registry
from mlflow.utils.autologging_utils.logging_and_warnings import (
    MlflowEventsAndWarningsBehaviorGlobally,
)
from requests.auth import AuthBase

from orchestrator.registry.errors import RegistryError, RegistryUnavailableError
from orchestrator.registry.server import (
    Credentials,
    TrackingServer,
    auth_error,
    check_reachable,
    health_error,
)

set_telemetry_client()  # re-read MLFLOW_DISABLE_TELEMETRY if mlflow was imported before orch

_LOCK = threading.RLock()
_CALLER_AUTH_ENV = (
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_AWS_SIGV4",
)
"""The caller's own MLflow credentials: hidden while orch calls its own server."""
_SCOPED_ENV = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_REGISTRY_URI",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
    "MLFLOW_HTTP_REQUEST_TIMEOUT",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT",
    "MLFLOW_TRACKING_AUTH",
    *_CALLER_AUTH_ENV,
)
AUTH_PROVIDER = "orch-run-secret"
"""The name of orch's request auth provider (the value of ``MLFLOW_TRACKING_AUTH``)."""
TASK_ID_TAG = "orch.task_id"
"""The tag that makes :meth:`ModelRegistry.log_training` idempotent."""
_PYTORCH_LOGGER = logging.getLogger("mlflow.pytorch")
MODEL_ARTIFACT = "model"
LINEAGE_DIR = "lineage"


class _ServerAuth(AuthBase):
    """Basic auth for requests to one server only (another URL gets no header from orch)."""

    def __init__(self, url: str, credentials: Credentials) -> None:
        self.url = url.rstrip("/")
        self.credentials = credentials

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        target = request.url or ""
        if target == self.url or target.startswith(self.url + "/"):
            request.headers["Authorization"] = self.credentials.header()
        return request


_active_auth: list[_ServerAuth | None] = [None]
"""The credentials of the orch call in progress (set under ``_LOCK``)."""


class _RunSecretAuth(RequestAuthProvider):
    """MLflow request auth provider: basic auth of the orch MLflow call in progress."""

    def get_name(self) -> str:
        return AUTH_PROVIDER

    def get_auth(self) -> _ServerAuth | None:
        return _active_auth[0]


if not any(p.get_name() == AUTH_PROVIDER for p in _request_auth_provider_registry):
    _request_auth_provider_registry.register(_RunSecretAuth)


def _drop_pickle_warning(record: logging.LogRecord) -> bool:
    """Orch picks the pickle format on purpose (fast to load); MLflow warns on every log."""
    return not record.getMessage().startswith("Saving pytorch model by Pickle")


@dataclass(frozen=True)
class ModelVersionInfo:
    """One registered version: where it came from, how good it is, which aliases it holds."""

    name: str
    version: int
    run_id: str
    metrics: dict[str, float]
    aliases: tuple[str, ...] = ()
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        """``models:/<name>/<version>``: loadable with :meth:`ModelRegistry.load` or MLflow."""
        return f"models:/{self.name}/{self.version}"


class ModelRegistry:
    """One registered model on one MLflow tracking server.

    Args:
        tracking_uri: the server's URL (or a :class:`TrackingServer`), or any MLflow tracking
            URI (``sqlite:///...`` works without a server).
        model_name: the registered model's name.
        experiment: the experiment the training runs go to (default: ``model_name``).
        request_timeout: seconds before one HTTP request to the server is abandoned.
        max_retries: HTTP retries per request (0: fail at once when the server is down).
        credentials: the user and password to send (default: the server's own when
            ``tracking_uri`` is a :class:`TrackingServer`, else none).

    Raises:
        RegistryUnavailableError: the server does not answer ``/health``.
        RegistryError: it refuses ``credentials``.
    """

    def __init__(
        self,
        tracking_uri: str | TrackingServer,
        model_name: str,
        *,
        experiment: str | None = None,
        request_timeout: int = 20,
        max_retries: int = 0,
        credentials: Credentials | None = None,
    ) -> None:
        if isinstance(tracking_uri, TrackingServer):
            uri = tracking_uri.url
            credentials = credentials or tracking_uri.credentials
        else:
            uri = tracking_uri
        self.tracking_uri = uri.rstrip("/")
        self.model_name = model_name
        self.experiment = experiment or model_name
        self.request_timeout = request_timeout
        self.max_retries = max_retries
        self.credentials = credentials
        self._experiment_id: str | None = None
        check_reachable(self.tracking_uri)
        if credentials is not None:
            refused = auth_error(self.tracking_uri, credentials, timeout=request_timeout)
            if refused is not None:
                where = credentials.path or "the credentials given"
                raise RegistryError(
                    f"MLflow tracking server {self.tracking_uri} refuses the credentials of "
                    f"{where} ({refused}); pass the credentials of the run whose server it is"
                )
        self._client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    # --- logging -------------------------------------------------------------------------

    def log_training(
        self,
        model: torch.nn.Module,
        params: Mapping[str, Any],
        metrics: Mapping[str, float],
        *,
        tags: Mapping[str, Any] | None = None,
        pip_requirements: Sequence[str] | None = None,
        run_name: str | None = None,
        task_id: str | None = None,
    ) -> ModelVersionInfo:
        """Log one training result as a run and register the model as a new version.

        ``tags`` go on the run and on the new version. ``pip_requirements`` default to the
        running torch version (explicit requirements skip MLflow's slow inference).

        With a ``task_id`` (or an ``orch.task_id`` tag) the call is idempotent: when the
        registry's experiment already holds a run of that task with a version of this model,
        that version is returned and nothing new is logged (see the module docstring).
        """
        requirements = list(pip_requirements or [f"torch=={torch.__version__}"])
        tag_values = {str(k): str(v) for k, v in (tags or {}).items()}
        key = task_id or tag_values.get(TASK_ID_TAG)
        if key is not None:
            if "'" in key or "\\" in key:
                raise RegistryError(f"task id {key!r}: quotes and backslashes are not allowed")
            tag_values[TASK_ID_TAG] = key
        metric_values = {str(k): float(v) for k, v in metrics.items()}
        with self._calls("log a training run"):
            earlier = self._logged(key, tag_values) if key is not None else None
            if earlier is not None:
                return earlier
            run = self._client.create_run(
                self._experiment(), run_name=run_name, tags={**tag_values}
            )
            run_id = run.info.run_id
            try:
                now = int(time.time() * 1000)
                param_list = [Param(str(k), str(v)) for k, v in params.items()]
                metric_list = [Metric(k, v, now, 0) for k, v in metric_values.items()]
                for start in range(0, max(len(param_list), len(metric_list)), 100):
                    self._client.log_batch(
                        run_id,
                        metrics=metric_list[start : start + 100],
                        params=param_list[start : start + 100],
                    )
                # created here so that it lands in this registry's experiment (MLflow would
                # otherwise pick the process's current experiment)
                logged_model = self._client.create_logged_model(
                    experiment_id=run.info.experiment_id,
                    name=MODEL_ARTIFACT,
                    source_run_id=run_id,
                    tags=tag_values or None,
                    params={p.key: p.value for p in param_list} or None,
                )
                logged = mlflow.pytorch.log_model(
                    model,
                    name=MODEL_ARTIFACT,
                    registered_model_name=self.model_name,
                    pip_requirements=requirements,
                    serialization_format="pickle",
                    run_id=run_id,
                    model_id=logged_model.model_id,
                    await_registration_for=60,
                )
                version = int(logged.registered_model_version)
                for key, value in tag_values.items():
                    self._client.set_model_version_tag(self.model_name, str(version), key, value)
            except BaseException:
                with contextlib.suppress(Exception):
                    self._client.set_terminated(run_id, "FAILED")
                raise
            self._client.set_terminated(run_id, "FINISHED")
        return ModelVersionInfo(self.model_name, version, run_id, metric_values, tags=tag_values)

    def tag_version(self, version: int | str, key: str, value: Any) -> None:
        """Set a tag on a version (shown in the registry UI)."""
        with self._calls(f"tag version {version}"):
            self._client.set_model_version_tag(self.model_name, str(version), key, str(value))

    def log_lineage(self, version: int | str, rows: Sequence[Mapping[str, Any]]) -> str | None:
        """Record what a version steered (task ids, inputs...) on the version's run.

        Each call adds one JSON artifact ``lineage/<time>-<id>.json`` (``{"model", "version",
        "rows"}``; values that are not JSON become strings) and updates the version's
        ``orch.lineage_rows`` tag (the count so far). Rows whose ``task_id`` the lineage
        already holds are left out (a replayed result logs nothing twice). Returns the
        artifact path, or None when no row was new; :meth:`lineage` reads all rows back.
        """
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
        path = f"{LINEAGE_DIR}/{stamp}-{uuid.uuid4().hex[:8]}.json"
        with self._calls(f"log lineage of version {version}"):
            mv = self._client.get_model_version(self.model_name, str(version))
            run_id = self._run_id(mv)
            earlier = self._lineage_rows(run_id)
            seen = {str(row["task_id"]) for row in earlier if row.get("task_id") is not None}
            new = []
            for row in map(dict, rows):
                if row.get("task_id") is not None:
                    if str(row["task_id"]) in seen:
                        continue
                    seen.add(str(row["task_id"]))
                new.append(row)
            if not new:
                return None
            payload = {"model": self.model_name, "version": int(version), "rows": new}
            self._client.log_text(run_id, json.dumps(payload, default=str, indent=1), path)
            self._client.set_model_version_tag(
                self.model_name, str(version), "orch.lineage_rows", str(len(earlier) + len(new))
            )
        return path

    def lineage(self, version: int | str) -> list[dict[str, Any]]:
        """Every row :meth:`log_lineage` recorded for a version, oldest first."""
        with self._calls(f"read lineage of version {version}"):
            run_id = self._run_id(self._client.get_model_version(self.model_name, str(version)))
            return self._lineage_rows(run_id)

    # --- aliases -------------------------------------------------------------------------

    def promote(
        self,
        version: int | str,
        metric: str = "val_rmse",
        lower_is_better: bool = True,
        alias: str = "champion",
    ) -> bool:
        """Move ``alias`` to ``version`` if its ``metric`` beats the holder's; True if moved.

        See the module docstring for the policy. Raises :class:`RegistryError` when the
        version has no such metric.
        """
        with self._calls(f"promote version {version} to @{alias}"):
            candidate = self._metric(version, metric)
            if candidate is None:
                raise RegistryError(
                    f"version {version} of model {self.model_name!r} has no metric {metric!r}; "
                    f"log it with log_training(metrics={{{metric!r}: ...}})"
                )
            holder = self.alias_version(alias)
            if holder == int(version) or math.isnan(candidate):
                return False
            if holder is not None:
                current = self._metric(holder, metric)
                if current is not None and not math.isnan(current):
                    better = candidate < current if lower_is_better else candidate > current
                    if not better:
                        return False
            self._client.set_registered_model_alias(self.model_name, alias, str(version))
        return True

    def set_alias(self, alias: str, version: int | str) -> None:
        """Point ``alias`` at ``version`` unconditionally (no policy)."""
        with self._calls(f"set alias @{alias}"):
            self._client.set_registered_model_alias(self.model_name, alias, str(version))

    def aliases(self) -> dict[str, int]:
        """Every alias of the model and the version it points at."""
        with self._calls("read aliases"):
            try:
                model = self._client.get_registered_model(self.model_name)
            except MlflowException as exc:
                if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                    return {}
                raise
        return {alias: int(v) for alias, v in model.aliases.items()}

    def alias_version(self, alias: str = "champion") -> int | None:
        """The version ``alias`` points at, or None."""
        return self.aliases().get(alias)

    # --- reading -------------------------------------------------------------------------

    def versions(self) -> list[ModelVersionInfo]:
        """All versions, oldest first, with their run's metrics, their aliases and tags.

        (``search_model_versions`` leaves aliases empty; they come from the registered model.)
        """
        aliases = self.aliases()
        if not aliases and not self._exists():
            return []
        by_version: dict[int, list[str]] = {}
        for alias, v in sorted(aliases.items()):
            by_version.setdefault(v, []).append(alias)
        with self._calls("list versions"):
            found = self._client.search_model_versions(f"name = {self._quoted()}")
            infos = []
            for mv in sorted(found, key=lambda m: int(m.version)):
                metrics = self._client.get_run(mv.run_id).data.metrics if mv.run_id else {}
                infos.append(
                    ModelVersionInfo(
                        self.model_name,
                        int(mv.version),
                        mv.run_id or "",
                        dict(metrics),
                        tuple(by_version.get(int(mv.version), ())),
                        dict(mv.tags),
                    )
                )
        return infos

    def model_uri(self, ref: int | str = "champion") -> str:
        """``models:/`` URI of a version number, ``latest`` or an alias."""
        if isinstance(ref, int) or ref.isdigit():
            return f"models:/{self.model_name}/{int(ref)}"
        if ref.lower() == "latest":
            return f"models:/{self.model_name}/latest"
        return f"models:/{self.model_name}@{ref}"

    def resolve(self, ref: int | str = "champion") -> int:
        """The version number a version, ``latest`` or an alias stands for now."""
        if isinstance(ref, int) or ref.isdigit():
            return int(ref)
        if ref.lower() == "latest":
            with self._calls("find the latest version"):
                found = self._client.search_model_versions(
                    f"name = {self._quoted()}", max_results=1, order_by=["version_number DESC"]
                )
            if not found:
                raise RegistryError(f"model {self.model_name!r} has no version yet")
            return int(found[0].version)
        aliases = self.aliases()
        if ref not in aliases:
            raise RegistryError(self._unknown(ref, aliases))
        return aliases[ref]

    def load(self, ref: int | str = "champion", **torch_load_kwargs: Any) -> torch.nn.Module:
        """Load a version, ``latest`` or an alias (``models:/<name>@champion``) as a torch module.

        To record which version was loaded, :meth:`resolve` the alias first and load the number.
        """
        uri = self.model_uri(ref)
        with self._calls(f"load {uri}"):
            try:
                model = mlflow.pytorch.load_model(uri, **torch_load_kwargs)
            except MlflowException as exc:
                if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                    raise RegistryError(f"cannot load {uri}: {self._unknown(ref)}") from exc
                raise
        if not isinstance(model, torch.nn.Module):
            raise RegistryError(f"{uri} did not load as a torch.nn.Module ({type(model).__name__})")
        return model

    # --- internals -----------------------------------------------------------------------

    def _logged(self, task_id: str, tags: Mapping[str, str]) -> ModelVersionInfo | None:
        """The version an earlier :meth:`log_training` of ``task_id`` made (inside ``_calls``).

        Finishes what a crash may have left undone (the version's tags, the run's status);
        a run of the task without a version of this model is marked deleted.
        """
        runs = self._client.search_runs(
            [self._experiment()],
            filter_string=f"tags.`{TASK_ID_TAG}` = '{task_id}'",
            run_view_type=ViewType.ACTIVE_ONLY,
            order_by=["attributes.start_time ASC"],
        )
        for run in runs:
            run_id = run.info.run_id
            versions = [
                mv
                for mv in self._client.search_model_versions(f"run_id = '{run_id}'")
                if mv.name == self.model_name
            ]
            if not versions:
                self._client.delete_run(run_id)
                continue
            mv = min(versions, key=lambda m: int(m.version))
            for key, value in tags.items():
                if mv.tags.get(key) != value:
                    self._client.set_model_version_tag(self.model_name, str(mv.version), key, value)
            if run.info.status != "FINISHED":
                self._client.set_terminated(run_id, "FINISHED")
            metrics = {k: float(v) for k, v in run.data.metrics.items()}
            version = int(mv.version)
            return ModelVersionInfo(self.model_name, version, run_id, metrics, tags=dict(tags))
        return None

    def _lineage_rows(self, run_id: str) -> list[dict[str, Any]]:
        if not self._client.list_artifacts(run_id, LINEAGE_DIR):
            return []
        with tempfile.TemporaryDirectory(prefix="orch-lineage-") as tmp:
            local = Path(self._client.download_artifacts(run_id, LINEAGE_DIR, tmp))
            rows: list[dict[str, Any]] = []
            for part in sorted(local.glob("*.json")):
                rows.extend(json.loads(part.read_text())["rows"])
        return rows

    def _unknown(self, ref: int | str, aliases: dict[str, int] | None = None) -> str:
        with contextlib.suppress(Exception):
            aliases = self.aliases() if aliases is None else aliases
        known = ", ".join(f"@{a} -> {v}" for a, v in sorted((aliases or {}).items())) or "none"
        return f"model {self.model_name!r} has no version or alias {ref!r} (aliases: {known})"

    def _run_id(self, mv: ModelVersion) -> str:
        if not mv.run_id:
            raise RegistryError(
                f"version {mv.version} of model {self.model_name!r} has no run (it was not "
                "logged by log_training); lineage needs the version's run"
            )
        return str(mv.run_id)

    def _quoted(self) -> str:
        escaped = self.model_name.replace("'", "\\'")
        return f"'{escaped}'"

    def _exists(self) -> bool:
        with self._calls("find the registered model"):
            try:
                self._client.get_registered_model(self.model_name)
            except MlflowException as exc:
                if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                    return False
                raise
        return True

    def _metric(self, version: int | str, metric: str) -> float | None:
        mv = self._client.get_model_version(self.model_name, str(version))
        value = self._client.get_run(mv.run_id).data.metrics.get(metric) if mv.run_id else None
        return None if value is None else float(value)

    def _experiment(self) -> str:
        if self._experiment_id is None:
            found = self._client.get_experiment_by_name(self.experiment)
            self._experiment_id = (
                found.experiment_id
                if found is not None
                else self._client.create_experiment(self.experiment)
            )
        return self._experiment_id

    @contextlib.contextmanager
    def _calls(self, what: str) -> Iterator[None]:
        """Run MLflow calls against this registry's server, failing fast; see the module doc."""
        with _LOCK:
            saved_env = {key: os.environ.get(key) for key in _SCOPED_ENV}
            saved_tracking = _tracking_utils._tracking_uri
            saved_registry = _registry_utils._registry_uri
            saved_auth = _active_auth[0]
            if self.credentials is not None:
                for key in _CALLER_AUTH_ENV:
                    os.environ.pop(key, None)
                os.environ["MLFLOW_TRACKING_AUTH"] = AUTH_PROVIDER
                _active_auth[0] = _ServerAuth(self.tracking_uri, self.credentials)
            else:  # another server: the caller's own MLflow settings, nothing of orch's
                if os.environ.get("MLFLOW_TRACKING_AUTH") == AUTH_PROVIDER:
                    os.environ.pop("MLFLOW_TRACKING_AUTH")
                _active_auth[0] = None
            os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(self.max_retries)
            os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(self.request_timeout)
            os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"  # stdout is the CLI's
            # MLflow's event prints ("Successfully registered model ...", "Created version ...")
            # would break into the CLI's live table on every version; orch reports versions
            # itself. MLflow's own counted switch: its inner uses cannot turn them back on.
            quiet = MlflowEventsAndWarningsBehaviorGlobally(
                disable_event_logs=True, disable_warnings=False, reroute_warnings=False
            )
            quiet.__enter__()
            mlflow.set_tracking_uri(self.tracking_uri)
            mlflow.set_registry_uri(self.tracking_uri)
            _PYTORCH_LOGGER.addFilter(_drop_pickle_warning)
            try:
                yield
            except (MlflowException, requests.RequestException, OSError) as exc:
                if self.tracking_uri.startswith(("http://", "https://")):
                    problem = health_error(self.tracking_uri)
                    if problem is not None:
                        raise RegistryUnavailableError(
                            f"cannot {what}: MLflow tracking server {self.tracking_uri} is "
                            f"unreachable ({problem}); start it (`orch ui --run-dir DIR` serves "
                            f"a run's store) or fix the tracking URI in the configuration"
                        ) from exc
                if isinstance(exc, OSError):
                    raise
                detail = exc.message if isinstance(exc, MlflowException) else str(exc)
                raise RegistryError(
                    f"cannot {what} ({self.tracking_uri}, model {self.model_name!r}): {detail}"
                ) from exc
            finally:
                quiet.__exit__(None, None, None)
                _active_auth[0] = saved_auth
                _PYTORCH_LOGGER.removeFilter(_drop_pickle_warning)
                mlflow.set_tracking_uri(saved_tracking)  # type: ignore[arg-type]
                _registry_utils._registry_uri = saved_registry
                for key, value in saved_env.items():
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value
