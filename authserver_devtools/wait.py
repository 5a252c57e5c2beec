"""Bounded waits: poll a condition instead of sleeping a guessed time."""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import TypeVar

__all__ = ["wait_for_status", "wait_for_value", "wait_until", "wait_until_async"]

T = TypeVar("T")


def wait_until(pred: Callable[[], T], timeout: float, interval: float = 0.02, what: str = "condition",
               alive: Callable[[], bool] | None = None) -> T:
    """Poll ``pred`` until it returns something truthy and return that; an
    exception counts as "not yet". TimeoutError after ``timeout`` seconds;
    RuntimeError at once when ``alive()`` turns false (the process we wait for died)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            value = pred()
        except Exception as exc:  # not ready yet (connection refused, ...)
            last = exc
        else:
            if value:
                return value
            last = value
        if alive is not None and not alive():
            raise RuntimeError(f"{what}: the process died (last {last!r})")
        time.sleep(interval)
    raise TimeoutError(f"{what}: not met within {timeout}s (last {last!r})")


async def wait_until_async(pred: Callable[[], T], timeout: float, interval: float = 0.02,
                           what: str = "condition") -> T:
    """``wait_until`` for a coroutine: sleeps with ``asyncio.sleep`` so the
    event loop (an app under test) runs between polls."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            value = pred()
        except Exception as exc:  # not ready yet
            last = exc
        else:
            if value:
                return value
            last = value
        await asyncio.sleep(interval)
    raise TimeoutError(f"{what}: not met within {timeout}s (last {last!r})")


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: ignore http_proxy


def _status(url: str, headers: dict[str, str], timeout: float = 2.0) -> int:
    req = urllib.request.Request(url, headers=headers)
    try:
        with _NO_PROXY.open(req, timeout=timeout) as r:
            r.read()
            code: int = r.status
            return code
    except urllib.error.HTTPError as e:
        e.read()
        return e.code


def wait_for_value(get: Callable[[], object], expected: object, timeout: float, interval: float = 0.05,
                   what: str = "value", alive: Callable[[], bool] | None = None) -> float:
    """Poll ``get()`` until it returns ``expected``; returns the seconds it took.
    The TimeoutError names the last value seen."""
    t0 = time.monotonic()
    seen: list[object] = []  # the last value, for the error

    def arrived() -> bool:
        seen[:] = [get()]
        return seen[0] == expected

    try:
        wait_until(arrived, timeout, interval=interval, what=what, alive=alive)
    except TimeoutError:
        last = seen[0] if seen else "nothing"
        raise TimeoutError(f"{what}: no {expected!r} within {timeout:g} s (last: {last!r})") from None
    return time.monotonic() - t0


def wait_for_status(url: str, headers: dict[str, str], status: int, timeout: float,
                    alive: Callable[[], bool] | None = None) -> float:
    """Poll until a GET of ``url`` answers ``status``; returns the seconds it took."""
    return wait_for_value(lambda: _status(url, headers), status, timeout, interval=0.1, what=url, alive=alive)
