# ruff: noqa: F811 - pytest fixtures imported from other modules are parameters here
"""End-to-end twins of ``tests/test_site_globus.py``: the same cases through a real endpoint.

``tests/test_site_globus.py`` stops at the HTTP boundary (its stand-in hands out a broker
where nothing listens). Here the cases go all the way: ``GlobusSite`` -> the real SDK ->
the loopback service (:mod:`loopback.service`) and RabbitMQ (:mod:`loopback.broker`) -> a real
``globus-compute-endpoint`` manager (:mod:`loopback.endpoint`) configured from the files
``orch deploy`` writes -> a user endpoint rendered from orch's template -> its workers.

One broker, one service and one endpoint serve the module. The endpoint is deployed for
:func:`deployed_site`, a ``mode: workers`` site whose image is the sandbox of
``containers/sim.def``: its template therefore carries the container wrapper, and every task
sent with the site's own ``user_endpoint_config`` runs its worker pool inside the image. The
twins of the HTTP tests send ``container: false`` (:data:`HOST`, what orch's deployment task
sends) so that their workers run on this machine and import ``loopback.twins_tasks``; the
``orch deploy`` test uses both paths, as ``deploy_site`` does. The image is built (or taken
from the runner's cache) only by that test; without bubblewrap/root it alone is skipped.

Every distinct ``user_endpoint_config`` is one user endpoint (one engine, one worker pool):
the module starts four (host, template values, refused values: which never starts, image).

Run with ``-s`` to see what each case showed.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import threading
import time
import uuid
from concurrent.futures import Future, wait
from pathlib import Path
from typing import Any

import pytest
from conftest import TESTS_DIR
from loopback.endpoint import VENV_BIN, LoopbackEndpoint
from loopback.tasks import ENDPOINT_MARK, square, where
from loopback.twins_tasks import blob, length, worker_env
from support.images import (  # noqa: F401 - fixtures (sim_image, for the deploy test)
    apptainer_path,
    runtime_bin_dir,
    runtime_skip_reason,
    sim_image,
    sim_image_build,
    sim_sources,
)
from test_loopback import SKIP, broker, orch_env, service  # noqa: F401 - fixtures

from orchestrator.apps.probe import own_versions
from orchestrator.config.sites import SiteConfig
from orchestrator.containers import deploy
from orchestrator.containers.endpoint import DEPLOY_USER_CONFIG, check_endpoint_files
from orchestrator.sites import make_site
from orchestrator.sites.globus import MAX_TASK_PAYLOAD, GlobusSite

pytestmark = [
    pytest.mark.loopback,
    pytest.mark.slow,
    pytest.mark.timeout(1800),
    pytest.mark.skipif(SKIP is not None, reason=f"loopback Globus Compute: {SKIP}"),
]

ENDPOINT_NAME = "orch-twins"
SITE = "twins"
ADDRESS = {"address": "127.0.0.1"}
HOST = {**ADDRESS, **DEPLOY_USER_CONFIG}
"""``user_endpoint_config`` of the host-side twins: the container wrapper off."""
INIT_VAR = "ORCH_TWINS_WORKER_INIT"
RESULT_TIMEOUT = 240.0


def deployed_site(endpoint_id: uuid.UUID, image: Path) -> SiteConfig:
    """The site the endpoint is deployed for: workers mode in the sim image, capacity 1."""
    return SiteConfig(
        name=SITE,
        kind="cpu",
        backend="globus",
        capacity=1,
        endpoint_id=endpoint_id,
        user_endpoint_config=ADDRESS,
        http_timeout=30,
        container={"image": str(image), "mode": "workers", "runtime": "apptainer"},
    )


def twin_site(endpoint_id: uuid.UUID, name: str = "host", **update: Any) -> SiteConfig:
    """A site on the same endpoint whose tasks run on the host (``container: false``)."""
    values: dict[str, Any] = {
        "name": name,
        "kind": "cpu",
        "backend": "globus",
        "capacity": 1,
        "endpoint_id": endpoint_id,
        "user_endpoint_config": HOST,
        "http_timeout": 30,
    }
    values.update(update)
    return SiteConfig(**values)


# -- the loopback stack, once per module ------------------------------------------------------


@pytest.fixture(scope="module")
def endpoint_id() -> uuid.UUID:
    return uuid.uuid4()


@pytest.fixture(scope="module")
def image_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the deployed site's image lies (put there by the ``orch deploy`` test)."""
    return tmp_path_factory.mktemp("twins-images") / "sim"


@pytest.fixture(scope="module")
def endpoint(service, endpoint_id, image_path, tmp_path_factory):
    ep = LoopbackEndpoint(
        deployed_site(endpoint_id, image_path),
        service,
        tmp_path_factory.mktemp("twins-endpoint"),
        name=ENDPOINT_NAME,
        python_paths=[str(TESTS_DIR)],
        extra_env={
            ENDPOINT_MARK: ENDPOINT_NAME,
            # The container wrapper runs `apptainer`: the bubblewrap runner first on PATH.
            "PATH": os.pathsep.join(
                [str(runtime_bin_dir()), str(VENV_BIN), "/usr/local/bin", "/usr/bin", "/bin"]
            ),
        },
    )
    try:
        ep.start()
        yield ep
    finally:
        ep.stop()
    assert not ep.forced, f"processes left after `globus-compute-endpoint stop`: {ep.forced}"


@pytest.fixture
def site_for(endpoint, orch_env, tmp_path):
    """Build and start ``GlobusSite`` objects; every one is shut down after the test."""
    built: list[GlobusSite] = []

    def make(config: SiteConfig) -> GlobusSite:
        site = make_site(config, tmp_path / config.name)
        assert isinstance(site, GlobusSite)
        built.append(site)
        site.start()
        return site

    yield make
    for site in built:
        site.shutdown()


@pytest.fixture
def host_site(site_for, endpoint_id) -> GlobusSite:
    return site_for(twin_site(endpoint_id))


def _result(site: GlobusSite, future: Future[Any], timeout: float = RESULT_TIMEOUT) -> Any:
    done, _ = wait([future], timeout=timeout)
    assert done, f"no result within {timeout:g} s"
    return site.outcome(future)


def _still_works(site: GlobusSite) -> None:
    """The site is up and runs a task (on the endpoint's workers)."""
    assert not site.is_down, site.down_reason
    outcome = _result(site, site.submit(where, (3,), {}))
    assert outcome.ok, outcome.failure
    assert outcome.value["square"] == 9
    assert outcome.value["endpoint"] == ENDPOINT_NAME


def _show(case: str, text: object) -> None:
    print(f"\nloopback twin: {case}: {text}")


def _user_endpoint(service, endpoint_id: uuid.UUID, values: dict[str, Any]) -> str | None:
    """The user endpoint id the service assigned to ``values`` under the manager."""
    record = service.endpoints.get(str(endpoint_id))
    return record.user_endpoints.get(json.dumps(values, sort_keys=True)) if record else None


# -- 1. inputs and results that cannot travel --------------------------------------------------


def test_unserializable_argument_fails_only_that_task(host_site, service):
    before = len(service.tasks)
    sock = socket.socket()
    try:
        outcomes = {
            "generator": host_site.outcome(host_site.submit(square, ((i for i in range(3)),), {})),
            "socket": host_site.outcome(host_site.submit(square, (sock,), {})),
        }
    finally:
        sock.close()
    for kind, outcome in outcomes.items():
        _show(f"unserializable {kind}", outcome.failure)
        assert not outcome.ok
        assert outcome.failure is not None
        assert outcome.failure["where"] == "site"
        assert outcome.failure["exception_type"] == "SerializationError"
        assert "cannot be serialized" in outcome.failure["message"]
        assert f"cannot pickle '{kind}' object" in outcome.failure["message"]
    # Nothing reached the service; the site is up and its next task runs on the endpoint.
    assert len(service.tasks) == before
    _still_works(host_site)


def test_a_lock_travels_as_a_fresh_lock_and_fails_in_the_task(host_site, service):
    # dill pickles locks (the worker gets a new, unlocked one): not a serialization failure
    # but the task's own, raised on the endpoint's worker.
    future = host_site.submit(square, (threading.Lock(),), {})
    outcome = _result(host_site, future)
    _show("lock argument", outcome.failure)
    assert not outcome.ok
    assert outcome.failure is not None
    assert outcome.failure["where"] == "task"
    assert outcome.failure["exception_type"].endswith("TypeError")
    assert "lock" in outcome.failure["message"]
    assert future.task_id in service.relayed
    _still_works(host_site)


def test_oversized_argument_fails_only_that_task(host_site, service):
    before = len(service.tasks)
    data = b"x" * (MAX_TASK_PAYLOAD + 1000)
    outcome = host_site.outcome(host_site.submit(length, (data,), {}))
    _show("oversized argument", f"input_size={outcome.input_size}: {outcome.failure}")
    assert not outcome.ok
    assert outcome.failure is not None
    assert outcome.failure["where"] == "site"
    assert outcome.failure["exception_type"] == "PayloadTooLarge"
    assert f"limit of {MAX_TASK_PAYLOAD}" in outcome.failure["message"]
    assert "by proxy" in outcome.failure["message"]
    assert outcome.input_size is not None and outcome.input_size > len(data)
    assert len(service.tasks) == before
    _still_works(host_site)
    # Just under the limit travels and runs.
    fits = _result(host_site, host_site.submit(length, (b"y" * 7_000_000,), {}))
    assert fits.ok, fits.failure
    assert fits.value == 7_000_000


def test_result_over_the_limit_is_the_endpoints_failure(host_site, service):
    future = host_site.submit(blob, (MAX_TASK_PAYLOAD + 1000,), {})
    outcome = _result(host_site, future)
    _show("oversized result", outcome.failure and outcome.failure["message"])
    assert not outcome.ok
    assert outcome.failure is not None
    # The worker refuses to send it (globus_compute_endpoint.engines.helper): the error result
    # reaches the SDK as TaskExecutionFailed, which orch reports as the endpoint's failure.
    # Its limit is 10 MiB (globus_compute_endpoint.engines.helper._RESULT_SIZE_LIMIT), orch's
    # input limit 10 MB; the last traceback line is ``MaxResultSizeExceeded(size, limit)``,
    # which orch's parse (no ``Type: message`` form) files as TaskExecutionFailed.
    assert outcome.failure["where"] == "site"
    assert outcome.failure["exception_type"] == "TaskExecutionFailed"
    message = outcome.failure["message"]
    assert message.startswith("site 'host': the endpoint could not run the task: ")
    assert re.search(r"MaxResultSizeExceeded\((\d+), 10485760\)$", message), message
    assert int(re.search(r"\((\d+),", message).group(1)) > MAX_TASK_PAYLOAD
    assert "MaxResultSizeExceeded" in outcome.failure["traceback"]
    assert future.task_id in service.relayed
    _still_works(host_site)


# -- 2. user_endpoint_config choosing template values -------------------------------------------


def test_user_endpoint_config_values_reach_the_rendered_engine(
    site_for,
    endpoint_id,
    service,
    endpoint,
):
    if (os.cpu_count() or 1) < 2:
        pytest.skip("two workers per node need two cores (parsl caps workers at the cores)")
    marker = f"init-{uuid.uuid4().hex[:8]}"
    values = {**HOST, "max_workers_per_node": 2, "worker_init": f"export {INIT_VAR}={marker}"}
    names = ["PARSL_WORKER_COUNT", INIT_VAR, ENDPOINT_MARK]

    default = site_for(twin_site(endpoint_id, name="default"))
    chosen = site_for(twin_site(endpoint_id, name="chosen", user_endpoint_config=values))
    plain = _result(default, default.submit(worker_env, (names,), {}))
    picked = _result(chosen, chosen.submit(worker_env, (names,), {}))
    _show("template defaults", plain.value)
    _show("user_endpoint_config values", picked.value)
    assert plain.ok and picked.ok, (plain.failure, picked.failure)
    # The defaults: the site's capacity (1) workers, an empty worker_init.
    assert plain.value["env"]["PARSL_WORKER_COUNT"] == "1"
    assert plain.value["env"][INIT_VAR] is None
    # The values the task was sent with: the manager rendered them into a user endpoint of
    # their own whose pool has two workers and ran worker_init before starting.
    assert picked.value["env"]["PARSL_WORKER_COUNT"] == "2"
    assert picked.value["env"][INIT_VAR] == marker
    assert picked.value["env"][ENDPOINT_MARK] == ENDPOINT_NAME
    assert _user_endpoint(service, endpoint_id, values) is not None
    assert _user_endpoint(service, endpoint_id, values) != _user_endpoint(
        service, endpoint_id, HOST
    )
    # The rendered config of that user endpoint says so too.
    rendered = check_endpoint_files(endpoint.files_dir, values)
    assert "max_workers_per_node: 2" in rendered
    assert marker in rendered


# -- 3. resource_specification reaching the engine -----------------------------------------------


def test_resource_specification_reaches_the_engine(site_for, endpoint_id, service):
    before = set(service.user_endpoints(str(endpoint_id)))
    host_uep = _user_endpoint(service, endpoint_id, HOST)
    accepted = site_for(
        twin_site(endpoint_id, name="priority", resource_specification={"priority": 1})
    )
    outcome = _result(accepted, accepted.submit(where, (5,), {}))
    _show("resource_specification {priority: 1}", outcome.value)
    assert outcome.ok, outcome.failure
    assert outcome.value["square"] == 25

    refused = site_for(
        twin_site(endpoint_id, name="nodes", resource_specification={"num_nodes": 2})
    )
    future = refused.submit(where, (6,), {})
    outcome = _result(refused, future)
    _show("resource_specification {num_nodes: 2}", outcome.failure)
    assert not outcome.ok
    assert outcome.failure is not None
    assert outcome.failure["where"] == "site"
    # The engine refused it before the task reached a worker (GlobusComputeEngine._submit ->
    # parsl's HTEX validate_resource_spec); its message is in the remote traceback.
    assert "the endpoint could not run the task" in outcome.failure["message"]
    assert (
        "parsl.executors.errors.InvalidResourceSpecification: Invalid Resource Specification "
        "Supplied: {'num_nodes'}. Task resource specification only accepts these types of "
        "resources: priority"
    ) in outcome.failure["traceback"]
    assert future.task_id in service.relayed
    assert not refused.is_down, refused.down_reason
    # Both ran in the user endpoint of the host values: resources are per task, they start
    # no user endpoint of their own.
    assert set(service.user_endpoints(str(endpoint_id))) - before == (
        set() if host_uep else {_user_endpoint(service, endpoint_id, HOST)}
    )
    _still_works(accepted)


# -- 4. orch deploy against the real endpoint ------------------------------------------------------


def _place_image(image: Path, dest: Path) -> None:
    """The built sandbox at ``dest`` (a hard-link copy, as the runner's cache hands it out)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-al", str(image), str(dest)], check=True, timeout=300)


def test_orch_deploy_through_the_endpoint(
    request,
    endpoint,
    endpoint_id,
    image_path,
    orch_env,
    service,
    tmp_path,
    monkeypatch,
):
    reason = runtime_skip_reason()
    if reason:
        pytest.skip(f"container runner: {reason}")
    built = request.getfixturevalue("sim_image")
    if not image_path.exists():
        _place_image(built, image_path)
    # Bounded waits (deploy's own are hours for a cold image build on a batch queue).
    monkeypatch.setattr(deploy, "PROBE_TIMEOUT_S", RESULT_TIMEOUT)
    monkeypatch.setattr(deploy, "IMAGE_TIMEOUT_S", RESULT_TIMEOUT)
    config = deployed_site(endpoint_id, image_path)
    sites_dir = tmp_path / "sites"
    steps: list[str] = []
    before = set(service.task_ids())

    started = time.monotonic()
    result = deploy.deploy_site(config, sites_dir, on_step=steps.append)
    _show(
        "orch deploy",
        f"{time.monotonic() - started:.1f} s, steps {steps}, action {result.action}, "
        f"digest {result.digest}, problems {result.problems}",
    )
    _show("probe report", json.dumps(result.report, sort_keys=True)[:1500])
    assert result.ok, result.problems
    assert result.action == "found"

    # Two tasks went through the endpoint: the deployment task (container off) and the
    # probe (the site's own values, so inside the image).
    new = [tid for tid in service.task_ids() if tid not in before]
    assert len(new) == 2, new
    assert set(new) <= set(service.relayed)
    deploy_uep = _user_endpoint(service, endpoint_id, HOST)
    probe_uep = _user_endpoint(service, endpoint_id, ADDRESS)
    assert deploy_uep and probe_uep and deploy_uep != probe_uep

    report = result.report
    assert report["image"]["container"], report["image"]
    assert report["image"]["marker"] == "sim"
    here = own_versions()
    assert report["orch"] == here["orch"]
    assert (
        report["packages"]["globus-compute-endpoint"] == here["packages"]["globus-compute-endpoint"]
    )

    record = json.loads((sites_dir / "deploy" / SITE / "record.json").read_text())
    assert record["site"] == SITE and record["backend"] == "globus"
    assert record["digest"] == result.digest and record["digest"].startswith("sha256:")
    assert record["image_path"] == str(image_path)
    assert record["report"] == json.loads(json.dumps(report))
    assert record["report"]["packages"] == report["packages"]
    # The endpoint files deploy wrote are the ones the endpoint was configured from.
    for name in ("config.yaml", "user_config_template.yaml.j2", "user_config_schema.json"):
        written = (sites_dir / "deploy" / SITE / "endpoint" / name).read_text()
        assert written == (endpoint.files_dir / name).read_text()


# Last in the module: after a user endpoint is refused, the manager endpoint's forked child
# exits through the manager's shutdown path and sends a final heartbeat (period 0) with the
# manager's id, so the service reports the manager offline and orch's endpoint watch would mark
# a site of this endpoint down: later tests here would see it.
def test_value_the_schema_refuses(site_for, endpoint_id, service, endpoint):
    values = {**HOST, "max_workers_per_node": 0}
    site = site_for(twin_site(endpoint_id, name="refused", user_endpoint_config=values))
    future = site.submit(where, (1,), {})
    # The manager validates the values against orch's schema before starting a user
    # endpoint, and reports the failure on that user endpoint's heartbeat queue.
    deadline = time.monotonic() + RESULT_TIMEOUT
    report = None
    while report is None and time.monotonic() < deadline:
        uep = _user_endpoint(service, endpoint_id, values)
        beat = service.heartbeats.get(uep) if uep else None
        if beat is not None and beat[1].get("error"):
            report = str(beat[1]["error"])
        else:
            wait([future], timeout=0.5)
    assert report is not None, f"no start-failure report: {endpoint.log_tail()}"
    _show("schema refusal (endpoint's report)", report)
    assert "0 is less than the minimum of 1" in report
    # The site itself is fine: tasks sent with valid values still run.
    _still_works(site_for(twin_site(endpoint_id, name="after-refusal")))
    # What orch sees of it: the real service finishes the user endpoint's outstanding futures
    # with that message (globus_compute_endpoint core_endpoint.send_failure_notice); the
    # loopback service only records the report.
    done, _ = wait([future], timeout=10)
    if not done:
        pytest.xfail(
            "loopback service does not fail the tasks of a user endpoint whose start failed; "
            f"the report was: {report}"
        )
    outcome = site.outcome(future)
    _show("schema refusal (orch's outcome)", outcome.failure)
    assert not outcome.ok
    assert outcome.failure is not None
    assert "0 is less than the minimum of 1" in outcome.failure["message"]
    assert not site.is_down
