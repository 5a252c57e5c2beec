"""Development tooling shared by the tests, the benchmarks (``python -m bench``)
and ``authserver quickstart --with-envoy``: a real Envoy process, an echo
upstream, bounded waits.

Installed with the ``authserver`` distribution but not part of the service:
``authserver serve`` and ``create_app`` never import it, and it imports
nothing from ``authserver`` at import time.
"""

from __future__ import annotations

from .envoy import EnvoyProcess, find_envoy
from .procs import death_signal_preexec, free_port, stop_process
from .upstream import EchoUpstream
from .wait import wait_for_status, wait_for_value, wait_until, wait_until_async

__all__ = [
    "EchoUpstream",
    "EnvoyProcess",
    "death_signal_preexec",
    "find_envoy",
    "free_port",
    "stop_process",
    "wait_for_status",
    "wait_for_value",
    "wait_until",
    "wait_until_async",
]
