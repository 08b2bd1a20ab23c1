"""Loopback Globus Compute for tests: a real RabbitMQ, a stand-in for the cloud service, and a
real ``globus-compute-endpoint`` on this machine (see ``tests/test_loopback.py``)."""
