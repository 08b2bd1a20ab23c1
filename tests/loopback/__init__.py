"""Loopback Globus Compute for tests: a real RabbitMQ, a stand-in for the cloud service, and a
real ``globus-compute-endpoint`` on this machine (see ``tests/test_loopback.py``)."""


def skip_reason() -> str | None:
    """Why the loopback stack cannot run here (``None`` when it can)."""
    from loopback.broker import missing_reason

    reason = missing_reason()
    if reason:
        return reason
    try:
        from globus_compute_endpoint.endpoint.utils import has_pyprctl
    except ImportError:
        return "globus-compute-endpoint is not installed"
    if not has_pyprctl:
        return "pyprctl is missing: globus-compute-endpoint cannot run a manager endpoint"
    return None
