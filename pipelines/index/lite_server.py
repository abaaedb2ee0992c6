"""Milvus Lite as a server: one child process owns the data folder, every other process talks gRPC to it.

Milvus Lite lets one process open a data folder (a second gets a lock error), so serving and a refresh
cannot both open ``data/milvus.db``. ``milvus-lite server`` fixes that: it holds the folder and answers
on a loopback port. While it runs, an *endpoint file* beside the folder names its address, and
:func:`resolve_uri` sends every client configured with the folder's path to the server instead, so
``musicrec catalogue refresh`` works unchanged while ``musicrec serve`` is up.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from pipelines.errors import UserError

log = logging.getLogger(__name__)

_REMOTE_PREFIXES = ("http://", "https://", "tcp://", "grpc://", "unix:")


class MilvusServerError(UserError):
    """The Milvus Lite server could not be started (folder held by another process, port taken...)."""


def is_remote(uri: str) -> bool:
    """True for a server address, False for a Milvus Lite data folder path."""
    return uri.startswith(_REMOTE_PREFIXES)


def endpoint_file(data_dir: Path) -> Path:
    """Where a running server publishes its address: ``<data folder>.endpoint``, beside the folder."""
    return data_dir.with_name(data_dir.name + ".endpoint")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _listening(host: str, port: int, timeout_s: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def folder_locked(data_dir: Path) -> bool:
    """True when another open Milvus Lite holds the folder's lock (checked without taking it for long)."""
    lock = Path(data_dir) / "LOCK"
    if not lock.exists():
        return False
    import fcntl

    with lock.open("a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
    return False


def resolve_uri(uri: str) -> str:
    """The address to connect to for ``uri``: a running server's, if one owns that data folder.

    A stale endpoint file (its server died) is ignored, so a crash of the server never blocks opening
    the folder directly afterwards.
    """
    if is_remote(uri):
        return uri
    path = endpoint_file(Path(uri).expanduser().resolve())
    try:
        address, pid = path.read_text().split()
    except (OSError, ValueError):
        return uri
    host, _, port = address.removeprefix("http://").rpartition(":")
    if _pid_alive(int(pid)) and _listening(host, int(port)):
        log.info("Milvus Lite folder %s is served at %s; connecting there", uri, address)
        return address
    return uri


class LiteServer:
    """``milvus-lite server`` on ``data_dir`` as a child process on a loopback port; a context manager."""

    def __init__(self, data_dir: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.host = host
        self.port = port or free_port(host)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir.with_name(self.data_dir.name + ".server.log")

    def start(self, timeout_s: float = 60.0) -> str:
        """Start the server, wait until it accepts connections, publish its address; returns the URI."""
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(self.data_dir)]
        cmd += ["--host", self.host, "--port", str(self.port)]
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while not _listening(self.host, self.port):
            if self.process.poll() is not None:
                tail = self.log_path.read_text(errors="replace").strip().splitlines()[-1:]
                raise MilvusServerError(
                    f"milvus-lite server on {self.data_dir} exited at start: {' '.join(tail) or 'no output'}"
                    " (is another process using this folder? stop it or point MUSICREC_MILVUS_URI at it)"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise MilvusServerError(f"milvus-lite server did not answer on {self.uri} in {timeout_s:.0f}s")
            time.sleep(0.05)
        tmp = endpoint_file(self.data_dir).with_suffix(".tmp")
        tmp.write_text(f"{self.uri} {self.process.pid}\n")
        tmp.replace(endpoint_file(self.data_dir))
        log.info("milvus-lite server for %s listening on %s (pid %d)", self.data_dir, self.uri, self.process.pid)
        return self.uri

    def stop(self, timeout_s: float = 15.0) -> None:
        """Stop gracefully (SIGINT lets Milvus Lite flush and release its lock), then kill if it hangs."""
        with contextlib.suppress(FileNotFoundError):
            path = endpoint_file(self.data_dir)
            if self.process is not None and path.read_text().split()[-1] == str(self.process.pid):
                path.unlink()
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> LiteServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
