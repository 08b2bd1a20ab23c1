"""Each worker of a GPU site sees only its own accelerator (HTEX accelerator pinning)."""

from __future__ import annotations

import pytest
from apps_for_tests import pinned_worker
from conftest import TESTS_DIR

from orchestrator.config.sites import SiteConfig
from orchestrator.dispatch import Method, MethodRegistry
from orchestrator.runner import open_session

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def test_each_gpu_worker_sees_only_its_own_device(tmp_path):
    site = SiteConfig(
        name="two-gpus", kind="gpu", backend="local", capacity=2, accelerators=["0", "1"]
    )
    methods = MethodRegistry([Method(pinned_worker, kind="gpu")])
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    with open_session([site], methods, {"p"}, tmp_path / "run", [str(TESTS_DIR)]) as session:
        for _ in range(2):
            session.queues.send_inputs(str(barrier), 2, method="pinned_worker", topic="p")
        results = [session.queues.get_result("p", timeout=120) for _ in range(2)]
    assert all(r.success for r in results), [r.failure_info for r in results]
    pids = {r.value[0] for r in results}
    devices = sorted(r.value[1] for r in results)
    assert len(pids) == 2  # two different workers ran at once
    assert devices == ["0", "1"]  # each pinned to one accelerator, none sees both
