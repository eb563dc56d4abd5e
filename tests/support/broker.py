"""A real mosquitto broker for tests: its own process on a free loopback port, restartable on that port."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Self

LOOPBACK = "127.0.0.1"
# The machine's own mosquitto (a system service) listens here; tests never share it.
SYSTEM_BROKER_PORT = 1883
_FALLBACK_BINARY = "/usr/sbin/mosquitto"


class MosquittoError(RuntimeError):
    """The test broker could not be started or stopped."""


def find_mosquitto() -> str | None:
    """Path of the mosquitto binary (PATH, then the Debian location), or None when it is not installed."""
    found = shutil.which("mosquitto")
    if found:
        return found
    if os.access(_FALLBACK_BINARY, os.X_OK):
        return _FALLBACK_BINARY
    return None


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port on ``host`` that nothing listens on right now (never the system broker's 1883)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port: int = sock.getsockname()[1]
        if port != SYSTEM_BROKER_PORT:
            return port


def port_accepts_connections(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class Mosquitto:
    """A mosquitto process on ``host:port`` (a free loopback port by default), anonymous, without persistence.

    ``start()`` blocks until the port accepts connections; ``stop()`` ends the process. Both can be called
    again: the broker comes back on the same port, so a test can take the broker away and bring it back.
    The broker's log (all types) goes to ``log_path``, which error messages quote.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        host: str = LOOPBACK,
        binary: str | None = None,
        workdir: Path | None = None,
        startup_timeout: float = 10.0,
        extra_config: list[str] | None = None,
    ) -> None:
        if port == SYSTEM_BROKER_PORT:
            raise ValueError(f"port {SYSTEM_BROKER_PORT} belongs to the machine's own mosquitto; use another")
        resolved = binary or find_mosquitto()
        if resolved is None:
            raise MosquittoError("mosquitto is not installed; `scripts/setup.sh --test` installs it (apt)")
        self.binary = resolved
        self.host = host
        self._port_chosen = port is not None
        self.port = port if port is not None else free_port(host)
        self.startup_timeout = startup_timeout
        self.extra_config = list(extra_config or [])  # more mosquitto.conf lines, e.g. a TLS listener
        self._owns_workdir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="naila-mosquitto-")) if workdir is None else workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> Self:
        """Start the broker (no-op when it runs) and wait until ``host:port`` accepts connections."""
        if self.is_running:
            return self
        attempts = 1 if self._port_chosen else 3
        for attempt in range(1, attempts + 1):
            try:
                self._launch()
                return self
            except MosquittoError:
                # A port picked by us may have been taken in between; the first start may pick another.
                if attempt == attempts or not port_accepts_connections(self.host, self.port):
                    raise
                self.port = free_port(self.host)
        return self  # unreachable: the loop returns or raises

    def stop(self, timeout: float = 5.0) -> None:
        """End the broker process (SIGTERM, then SIGKILL after ``timeout``); connected clients are dropped."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=timeout)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def close(self) -> None:
        """Stop the broker and remove its temporary directory (when this object created it)."""
        self.stop()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def log_text(self) -> str:
        """Everything the broker has logged so far (all starts)."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        return f"Mosquitto({self.host}:{self.port}, {state}, log={self.log_path})"

    def _write_config(self) -> None:
        lines = [
            f"listener {self.port} {self.host}",
            "allow_anonymous true",
            "persistence false",
            # Logs go to the process's stderr, which is redirected into log_path (opened by us, so the
            # broker needs no write access to the directory).
            "log_dest stderr",
            "log_type all",
            "log_timestamp true",
            "connection_messages true",
            # Run as the current user: as root, mosquitto would otherwise switch to the `mosquitto` user.
            f"user {pwd.getpwuid(os.getuid()).pw_name}",
            *self.extra_config,
        ]
        self.config_path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def _launch(self) -> None:
        self._write_config()
        self._log_file = self.log_path.open("ab")
        self._log_file.write(f"--- naila test: starting mosquitto on {self.host}:{self.port}\n".encode())
        self._log_file.flush()
        self._process = subprocess.Popen(
            [self.binary, "-c", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=self._log_file,
            cwd=self.workdir,
        )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                code = self._process.returncode
                self.stop()
                raise MosquittoError(
                    f"mosquitto exited with code {code} before accepting connections on {self.host}:{self.port}"
                    f"\n--- broker log ({self.log_path}):\n{self.log_text()}"
                )
            if port_accepts_connections(self.host, self.port):
                # Someone else may own the port; ours is up only if it did not exit on "address in use".
                time.sleep(0.01)
                if self._process.poll() is None:
                    return
                continue
            time.sleep(0.01)
        self.stop()
        raise MosquittoError(
            f"mosquitto did not accept connections on {self.host}:{self.port} within {self.startup_timeout:.0f} s"
            f"\n--- broker log ({self.log_path}):\n{self.log_text()}"
        )
