"""Where the test services are, and what to do when one is missing."""

from __future__ import annotations

import os
import socket

import pytest

PG_ADMIN_URL = os.environ.get("AUTHSERVER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("AUTHSERVER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
IN_CI = bool(os.environ.get("CI"))
# /metrics is not public: test servers set this token and scrapes present it
METRICS_TOKEN = "test-metrics-token-not-secret"
METRICS_HEADERS = {"Authorization": f"Bearer {METRICS_TOKEN}"}


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def need_service(name: str, host: str, port: int) -> None:
    if _reachable(host, port):
        return
    msg = f"{name} is not reachable at {host}:{port}"
    if IN_CI:
        pytest.fail(f"{msg} (CI is set: tests that need it must run)")
    pytest.skip(f"{msg}; start it to run this test")
