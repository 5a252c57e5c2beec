"""Child processes and ports for local stacks (everything on 127.0.0.1)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Callable

__all__ = ["death_signal_preexec", "free_port", "stop_process"]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the caller binds it soon after)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def death_signal_preexec() -> Callable[[], None] | None:
    """Linux: a preexec function that makes the child get SIGTERM when we die
    without cleaning up (resolved here, so the child only calls into libc)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def preexec() -> None:  # pragma: no cover - runs in the child
        prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG

    return preexec


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it is still running after ``timeout`` seconds."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)
