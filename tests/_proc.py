"""Real processes for integration tests: authserver replicas, a throwaway
Redis, a throwaway PostgreSQL cluster. Everything binds to 127.0.0.1 and is
killed by the caller's fixture."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
from _env import METRICS_TOKEN

from authserver_devtools import free_port, wait_until

__all__ = ["Server", "ThrowawayPostgres", "ThrowawayRedis", "cli", "event_loop", "free_port", "wait_until"]


def event_loop(pid: int) -> str:
    """The event loop a running process serves on: only uvloop loads uvloop's extension."""
    return "uvloop" if "/uvloop/loop." in Path(f"/proc/{pid}/maps").read_text() else "asyncio"


class Server:
    """One `authserver serve` process."""

    def __init__(self, env: dict[str, str], port: int | None = None, log_dir: Path | None = None,
                 nofile: int | None = None, args: tuple[str, ...] = ()) -> None:
        """``nofile``: the process's descriptor limit (RLIMIT_NOFILE), lowered for fault tests;
        ``args``: more `serve` options (e.g. --workers 2)."""
        self.port = port or free_port()
        self.args = args
        self.nofile = nofile
        self.env = {"AUTHSERVER_METRICS_TOKEN": METRICS_TOKEN, **os.environ, **env, "AUTHSERVER_HOST": "127.0.0.1",
                    "AUTHSERVER_PORT": str(self.port)}
        self.log_path = (log_dir or Path(tempfile.mkdtemp())) / f"server-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> Server:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "authserver", "serve", *self.args], env=self.env, stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=self._limit if self.nofile else None,
        )
        wait_until(lambda: httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200, timeout,
                   what=f"server on {self.port} ready (log {self.log_path})")
        return self

    def _limit(self) -> None:  # in the child, before exec
        import resource

        resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        self.kill(signal.SIGTERM)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class ThrowawayRedis:
    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="redis-")
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> ThrowawayRedis:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed")
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.dir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: socket.create_connection(("127.0.0.1", self.port), timeout=0.5), 10, what="redis up")
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def _pg_bin() -> Path | None:
    base = Path("/usr/lib/postgresql")
    if not base.exists():
        return None
    versions = sorted(base.iterdir(), key=lambda p: int(p.name) if p.name.isdigit() else 0)
    return versions[-1] / "bin" if versions else None


class ThrowawayPostgres:
    """initdb + pg_ctl in a temp dir, run as the postgres OS user when we are root."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="pg-"))
        self.data = self.dir / "data"
        self.bin = _pg_bin()

    @staticmethod
    def available() -> bool:
        return _pg_bin() is not None and (os.geteuid() != 0 or shutil.which("runuser") is not None)

    def _run(self, *args: str) -> None:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def init(self) -> ThrowawayPostgres:
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        return self

    def start(self) -> ThrowawayPostgres:
        opts = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.dir / "log"), "-w", "start")
        return self

    def stop(self, mode: str = "immediate") -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")
        except subprocess.CalledProcessError:
            pass

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def cli(env: dict[str, str], *args: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "authserver", *args], env={**os.environ, **env}, check=True,
        capture_output=True, text=True, timeout=120,
    )
    return json.loads(out.stdout)
